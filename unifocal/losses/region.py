"""Region-based losses built on the soft confusion sums TP, FP, FN per class.

They share one shape: TP/FP/FN over the selected classes (per sample, or over the batch with
``batch_dice=True``), turned into a per-class loss and averaged over classes. With ``multilabel=True`` the
classes are the input's channels (regions), each against its own complement.

Smoothing: ``smooth`` (> 0) is added to numerator and denominator. It fixes the loss of a class that is
absent from both target and prediction at 0 rather than at 0/0, and it sets how fast a false-positive mass
on an absent class is punished: a soft mass of ``m`` voxels costs about ``m / (m + smooth)``. The default 1
("one voxel") keeps that gradient alive; the 1e-7 clip of the public Keras ports saturates it instead.

Tversky convention: here ``alpha`` weights false positives and ``beta`` false negatives, as in Salehi et
al.'s index (``alpha |P \\ G| + beta |G \\ P|``) and MONAI's TverskyLoss. The focal Tversky paper and code
(Abraham & Khan) name them the other way round: their ``alpha = 0.7`` weights false negatives and
``beta = 1 - alpha = 0.3`` false positives. Their setting is ``alpha=0.3, beta=0.7`` here.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._autograd import weighted_sums
from ._base import SegmentationLoss, check_bool, check_number, check_unit_interval, functional
from ._inputs import Prepared
from ._stats import (
    BatchLoss,
    ClassStatistics,
    batch_total,
    ConfusionSums,
    class_mean,
    class_statistics,
    confusion_sums,
    region_classes,
    safe_pow,
    selected_values,
    tversky_distance,
)

__all__ = ["DiceLoss", "JaccardLoss", "TverskyLoss", "FocalTverskyLoss", "GeneralizedDiceLoss",
           "SensitivitySpecificityLoss", "LogCoshDiceLoss", "dice_loss", "jaccard_loss", "tversky_loss",
           "focal_tversky_loss", "generalized_dice_loss", "sensitivity_specificity_loss", "log_cosh_dice_loss"]


def check_smooth(smooth) -> float:
    """A smoothing constant: a finite number > 0."""
    return check_number("smooth", smooth, 0.0, low_open=True,
                        why=" (it defines the loss of a class absent from target and prediction)")


class RegionLoss(SegmentationLoss):
    """Base of the losses of the soft confusion sums of the selected classes (:meth:`classes`):
    ``per_class(sums)`` averaged over classes, unless ``compute`` says otherwise.

    Args:
        smooth: added to numerator and denominator (> 0, default 1); see :mod:`unifocal.losses.region`.
        include_background: keep input channel 0 (default True); False leaves it out, with exclusive classes
            and with ``multilabel=True`` alike.
        batch_dice: sum TP/FP/FN over the batch too (nnU-Net's batch_dice); over all ranks with ``ddp=True``.
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, smooth: float = 1.0, include_background: bool = True, batch_dice: bool = False,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.smooth = check_smooth(smooth)
        self.include_background = check_bool("include_background", include_background)
        self.batch_dice = check_bool("batch_dice", batch_dice)

    def classes(self, prep: Prepared) -> slice:
        """The classes the loss scores, as a slice (or indices) of ``prep``'s K classes: the input's channels,
        less channel 0 with ``include_background=False`` (:func:`region_classes`)."""
        return region_classes(prep, self.include_background)

    def confusion(self, prep: Prepared, stats: Optional[ClassStatistics] = None) -> ConfusionSums:
        """TP/FP/FN of the selected classes, (B, K') or (1, K') with ``batch_dice``, from ``stats`` (by
        default the statistics of a pass that computes no cross entropy)."""
        stats = class_statistics(prep) if stats is None else stats
        return confusion_sums(stats, prep, self.batch_dice, self.classes(prep))

    def batch_sums(self, values: Tensor, prep: Prepared) -> Tensor:
        """Per-sample sums (B, ...) pooled as the loss pools TP/FP/FN: as given, or (1, ...) over the batch
        with ``batch_dice`` (the global batch, all-reduced, under ``ddp``)."""
        return batch_total(values, prep) if self.batch_dice else values

    def dice_distance(self, sums: ConfusionSums) -> Tensor:
        """``1 - DSC_c = 1 - (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)`` per class."""
        return tversky_distance(sums, 0.5, 0.5, self.smooth / 2)

    def per_class(self, sums: ConfusionSums) -> Tensor:
        """The loss of each selected class, (B, K') or (1, K'), from its TP/FP/FN; ``compute`` averages it."""
        raise NotImplementedError

    def compute(self, prep: Prepared) -> BatchLoss:
        return class_mean(self.per_class(self.confusion(prep)), prep.batch_size)


class DiceLoss(RegionLoss):
    r"""Soft Dice loss (Milletari, Navab, Ahmadi, "V-Net", 3DV 2016), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big]

    With ``squared=True`` the denominator is :math:`\sum_i p_{ic}^2 + \sum_i y_{ic}^2 + s`.
    Equal to MONAI's ``DiceLoss(smooth_nr=s, smooth_dr=s, squared_pred=squared)`` and, with
    ``include_background=False``, to nnU-Net's ``SoftDiceLoss`` up to its sign and smoothing.

    Args:
        squared: squared-denominator form (default False).
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, squared: bool = False, smooth: float = 1.0, include_background: bool = True,
                 batch_dice: bool = False, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.squared = check_bool("squared", squared)

    def per_class(self, sums: ConfusionSums) -> Tensor:
        return self.dice_distance(sums)

    def compute(self, prep: Prepared) -> BatchLoss:
        if not self.squared:
            return super().compute(prep)
        prob, onehot = (values.flatten(2) for values in selected_values(prep, self.include_background))
        counted = None if prep.mask is None else prep.mask.flatten(2)
        denominator = self.batch_sums(weighted_sums(prob.square(), counted) + onehot.square().sum(2), prep)
        tp = self.confusion(prep).tp
        return class_mean(1 - (2 * tp + self.smooth) / (denominator + self.smooth), prep.batch_size)


class JaccardLoss(RegionLoss):
    r"""Soft Jaccard / IoU loss (Rahman & Wang 2016), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{TP_c + s}{TP_c + FP_c + FN_c + s}\Big]

    Args:
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def per_class(self, sums: ConfusionSums) -> Tensor:
        return tversky_distance(sums, 1.0, 1.0, self.smooth)


class TverskyLoss(RegionLoss):
    r"""Tversky loss (Salehi, Erdogmus, Gholipour, MLMI 2017), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}\Big]

    ``alpha`` weights false positives and ``beta`` false negatives, as in Salehi et al. and MONAI's
    TverskyLoss (other code puts ``beta`` on false positives; see the module docstring). The Unified Focal
    loss's ``delta`` is ``beta`` (with ``alpha = 1 - delta``). alpha = beta = 0.5 is Dice.

    Args:
        alpha: false-positive weight >= 0 (default 0.3).
        beta: false-negative weight >= 0 (default 0.7).
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, include_background: bool = True,
                 batch_dice: bool = False, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.alpha, self.beta = check_number("alpha (FP weight)", alpha), check_number("beta (FN weight)", beta)
        if min(self.alpha, self.beta) < 0 or self.alpha + self.beta == 0:
            raise ValueError(f"alpha (FP weight) and beta (FN weight) must be >= 0 and not both 0; got {self.alpha}, "
                             f"{self.beta}")

    def per_class(self, sums: ConfusionSums) -> Tensor:
        return tversky_distance(sums, self.alpha, self.beta, self.smooth)


class FocalTverskyLoss(TverskyLoss):
    r"""Focal Tversky loss (Abraham & Khan, ISBI 2019), mean over classes.

    .. math:: L = \operatorname{mean}_c (1 - TI_c)^{1/\gamma}, \quad
              TI_c = \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}

    ``gamma`` follows Abraham & Khan (default 4/3). With gamma > 1 the exponent 1/gamma is below 1: the
    loss of every imperfect class rises, most for well-segmented (easy, high-TI) classes, and the gradient
    grows as TI -> 1: at gamma = 4/3 it is 1.6x larger for a class at TI 0.9 than for one at TI 0.3
    (``|dL/dTI| = (1 - TI)^(1/gamma - 1) / gamma``). So gamma > 1 does not focus the gradient on hard,
    low-TI classes: it keeps training on classes that are almost right. The Unified Focal family writes the
    same exponent as ``1 - gamma`` (:class:`SymmetricFocalTverskyLoss`).

    Aggregation: the power is taken per class and then averaged (as the Unified Focal loss does);
    SegLossOdyssey's and segmentation_models_pytorch's focal Tversky losses raise the class mean of
    ``1 - TI`` to the power instead. The two agree for a single class.

    Args:
        alpha: false-positive weight (default 0.3).
        beta: false-negative weight (default 0.7).
        gamma: focal parameter > 0 (default 4/3); the exponent is 1/gamma.
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, gamma: float = 4.0 / 3.0, smooth: float = 1.0,
                 include_background: bool = True, batch_dice: bool = False, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False) -> None:
        super().__init__(alpha=alpha, beta=beta, smooth=smooth, include_background=include_background,
                         batch_dice=batch_dice, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction, ddp=ddp)
        self.gamma = check_number("gamma", gamma, 0.0, low_open=True, why=" (the exponent is 1/gamma)")

    def per_class(self, sums: ConfusionSums) -> Tensor:
        return safe_pow(super().per_class(sums), 1.0 / self.gamma)


def generalized_dice_weights(volumes: Tensor) -> Tensor:
    """Sudre's class weights ``w_c = 1 / V_c^2`` from target volumes ``V`` (B, K) or (1, K), normalised to
    sum to 1 over classes (no gradient; normalised, ``smooth`` keeps meaning "about one voxel"). A class
    absent from the target gets the weight of the rarest present class (MONAI's guard); when no class is
    present all weights are equal.
    """
    volumes = volumes.detach()
    present = volumes > 0
    smallest = torch.where(present, volumes, float("inf")).amin(1, keepdim=True)
    # (V_min / V_c)^2 = w_c V_min^2: the same ratios as 1 / V_c^2, without underflow for large volumes.
    weights = torch.where(present, smallest / volumes.clamp_min(torch.finfo(volumes.dtype).tiny), 1.0).square()
    return weights / weights.sum(1, keepdim=True)


class GeneralizedDiceLoss(RegionLoss):
    r"""Generalized Dice loss (Sudre, Li, Vercauteren, Ourselin, Cardoso, "Generalised Dice overlap as
    a deep learning loss function for highly unbalanced segmentations", DLMIA 2017).

    .. math:: L = 1 - \frac{2 \sum_c w_c TP_c + s}{\sum_c w_c (2 TP_c + FP_c + FN_c) + s}, \qquad
              w_c \propto \frac{1}{V_c^2},\ V_c = \sum_i y_{ic}

    One value per sample (per batch with ``batch_dice``): the classes are pooled, each weighted by the
    inverse square of its target volume (:func:`generalized_dice_weights`: normalised to sum 1, so ``s``
    stays "about one voxel", no gradient, MONAI's guard for absent classes). Equal to MONAI's
    ``GeneralizedDiceLoss(w_type="square", smooth_nr=s W, smooth_dr=s W)``, ``W = sum_c 1 / V_c^2``.

    Args:
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def compute(self, prep: Prepared) -> BatchLoss:
        sums = self.confusion(prep)
        weights = generalized_dice_weights(sums.tp + sums.fn)
        errors = (weights * (sums.fp + sums.fn)).sum(1, keepdim=True)
        overlap = (weights * sums.tp).sum(1, keepdim=True)
        # 1 - (2a + s) / (2a + e + s) written as e / (2a + e + s): exact as the loss -> 0.
        return class_mean(errors / (2 * overlap + errors + self.smooth), prep.batch_size)


class SensitivitySpecificityLoss(SegmentationLoss):
    r"""Sensitivity-specificity loss (Brosch, Yoo, Tang, Li, Traboulsee, Tam, "Deep convolutional encoder
    networks for multiple sclerosis lesion segmentation", MICCAI 2015), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[ r\, \frac{\sum_i (y_{ic} - p_{ic})^2\, y_{ic}}{\sum_i y_{ic} + s}
              + (1 - r)\, \frac{\sum_i (y_{ic} - p_{ic})^2 (1 - y_{ic})}{\sum_i (1 - y_{ic}) + s} \Big]

    The squared error over the class's voxels (sensitivity) and over all others (specificity), traded off by
    Brosch's "sensitivity ratio" ``r`` (0.01-0.10 behave alike; 0.05). Ignored voxels count in neither term.

    Args:
        sensitivity_weight: r in [0, 1] (default 0.05).
        smooth: added to both denominators (> 0, default 1e-5); a class absent from the target then has a
            sensitivity term of 0.
        include_background: keep input channel 0 (default True), as :class:`RegionLoss`.
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, sensitivity_weight: float = 0.05, smooth: float = 1e-5, include_background: bool = True,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.sensitivity_weight = check_unit_interval("sensitivity_weight", sensitivity_weight)
        self.smooth = check_smooth(smooth)
        self.include_background = check_bool("include_background", include_background)

    def compute(self, prep: Prepared) -> BatchLoss:
        prob, onehot = (values.flatten(2) for values in selected_values(prep, self.include_background))
        negative = 1 - onehot if prep.mask is None else prep.mask.flatten(2) - onehot
        error = (onehot - prob).square_()
        sensitivity = weighted_sums(error, onehot) / (onehot.sum(2) + self.smooth)
        specificity = weighted_sums(error, negative) / (negative.sum(2) + self.smooth)
        r = self.sensitivity_weight
        return class_mean(r * sensitivity + (1 - r) * specificity, prep.batch_size)


class LogCoshDiceLoss(DiceLoss):
    r"""Log-cosh Dice loss (Jadon, "A survey of loss functions for semantic segmentation", CIBCB 2020):
    :math:`L = \log\cosh(L_{Dice})` of each sample's soft Dice loss (:class:`DiceLoss`, same options), then
    reduced over samples; ``x^2/2`` near 0 with derivative ``tanh x``, a smooth damping of the Dice loss.

    Args:
        squared: squared-denominator Dice (Milletari 2016).
        smooth, include_background, batch_dice: as :class:`RegionLoss` (defaults 1, True, False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def compute(self, prep: Prepared) -> BatchLoss:
        per_sample = torch.log(torch.cosh(super().compute(prep).per_sample()))
        return BatchLoss(lambda: per_sample.mean(), lambda: per_sample)


dice_loss = functional(DiceLoss)
jaccard_loss = functional(JaccardLoss)
tversky_loss = functional(TverskyLoss)
focal_tversky_loss = functional(FocalTverskyLoss)
generalized_dice_loss = functional(GeneralizedDiceLoss)
sensitivity_specificity_loss = functional(SensitivitySpecificityLoss)
log_cosh_dice_loss = functional(LogCoshDiceLoss)
