"""Matthews correlation coefficient loss (Abhishek & Hamarneh, "Matthews Correlation Coefficient Loss for Deep
Convolutional Networks: Application to Skin Lesion Segmentation", ISBI 2021)."""

from .extend import BatchLoss, Prepared, RegionLoss, class_mean, counted_voxels, functional, safe_pow

__all__ = ["MatthewsCorrelationLoss", "matthews_correlation_loss"]


class MatthewsCorrelationLoss(RegionLoss):
    r"""Matthews correlation coefficient (MCC) loss, mean over classes:

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{TP_c TN_c - FP_c FN_c + s}
              {\sqrt{(TP_c + FP_c)(TP_c + FN_c)(TN_c + FP_c)(TN_c + FN_c)} + s}\Big]

    with the soft confusion sums of the counted voxels (``TN = N - TP - FP - FN``). Unlike Dice, MCC counts
    true negatives, so it also rewards getting the background right. In [0, 2]; 0 for a perfect prediction,
    and (with ``smooth``) for a class absent from both target and prediction. The gradient of the square
    root is stopped where its argument, in units of ``N^4``, falls below 1e-6.

    Args:
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def compute(self, prep: Prepared) -> BatchLoss:
        total = self.batch_sums(counted_voxels(prep)[:, None], prep).clamp_min(1)  # N, (B, 1) or (1, 1)
        tp, fp, fn = (sums / total for sums in self.confusion(prep))  # fractions of N: MCC is scale-free
        tn = 1 - tp - fp - fn
        spread = safe_pow(((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).clamp_min(0), 0.5)  # no round-off below 0
        smooth = self.smooth / total.square()
        return class_mean(1 - (tp * tn - fp * fn + smooth) / (spread + smooth), prep.batch_size)


matthews_correlation_loss = functional(MatthewsCorrelationLoss)
