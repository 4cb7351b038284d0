"""Distribution-based losses: cross entropy and its weighted, balanced and focal forms.

All of them are one formula, a class-weighted, modulated cross entropy averaged over voxels:

    L = (1/N) sum_i v_i sum_c w_c (1 - p_ic)^gamma_c  (-y_ic log p_ic) / P

with class weights ``w_c``, focal exponents ``gamma_c``, optional voxel weights ``v_i`` and ``P`` the
number of binary problems (1 for exclusive classes; C for multilabel input, where the sum over the
channel and its complement is the binary cross entropy of that channel, so L is its channel mean).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from ._base import SegmentationLoss, check_number, check_numbers, check_unit_interval, functional
from ._inputs import Prepared
from ._stats import BatchLoss, ClassStatistics, class_roles, class_statistics, counted_mean, per_class, role_weights

__all__ = ["CrossEntropyLoss", "WeightedCrossEntropyLoss", "BalancedCrossEntropyLoss", "FocalLoss",
           "cross_entropy_loss", "weighted_cross_entropy_loss", "balanced_cross_entropy_loss", "focal_loss"]

Gamma = Union[float, Sequence[float]]

def modulated_cross_entropy(stats: ClassStatistics, prep: Prepared, class_weight: Optional[Sequence[float]] = None,
                            weighted_mean: bool = False) -> BatchLoss:
    """The shared formula above from the cross-entropy sums of ``stats`` (the class weights apply to the
    per-class sums, so no per-voxel weight map is formed).

    ``class_weight``: w_c, one per class of ``prep`` (:func:`per_class`), or None for 1. ``weighted_mean``
    (exclusive classes): divide by the summed weights of the targets' classes instead of the voxel count,
    torch's weighted mean.
    """
    sums = stats.cross_entropy
    totals = None
    if class_weight is not None:
        weights = sums.new_tensor(class_weight)
        sums = sums * weights
        if weighted_mean and not prep.multilabel:
            totals = (stats.actual * weights).sum(1)
    return counted_mean(sums.sum(1) / prep.num_problems, prep, totals)


def check_focal_gamma(gamma: Gamma, tversky_exponent: bool = False) -> Gamma:
    """One gamma or one per class, each finite and >= 0; where it also sets a Tversky exponent 1 - gamma, < 1."""
    if tversky_exponent:
        return check_numbers("gamma", gamma, 0.0, 1.0, high_open=True, why=" (it sets the Tversky exponent 1 - gamma)")
    return check_numbers("gamma", gamma, 0.0)


def check_class_weight(class_weight) -> Optional[tuple[float, ...]]:
    return None if class_weight is None else check_numbers("class_weight", class_weight, 0.0, scalar=False)


class _ForegroundWeightedCrossEntropy(SegmentationLoss):
    """Cross entropy with the weights :meth:`role_weights` on the foreground classes (every class but the
    background; every channel with ``multilabel=True``) and on the background, focal exponent ``gamma``."""

    gamma: Gamma = 0.0

    def role_weights(self) -> tuple[float, float]:
        """(foreground weight, background weight)."""
        return 1.0, 1.0

    def compute(self, prep: Prepared) -> BatchLoss:
        stats = class_statistics(prep, cross_entropy=True, gamma=per_class(self.gamma, prep, "gamma"), overlap=False)
        weights = role_weights(class_roles(prep), *self.role_weights())
        return modulated_cross_entropy(stats, prep, None if set(weights) == {1.0} else weights)


class CrossEntropyLoss(SegmentationLoss):
    r"""Cross entropy for segmentation, from logits, computed in float32.

    .. math:: L = -\frac{\sum_i \sum_c w_c\, y_{ic} \log p_{ic}}{\sum_i \sum_c w_c\, y_{ic}}

    The class-weighted mean divides by the summed weights of the voxels' target classes, as torch's
    ``cross_entropy(weight=...)``, nnU-Net and MONAI do (without weights: by the number of voxels), so
    weights ported from those libraries give the same loss. With ``multilabel=True`` each channel is a
    sigmoid binary problem and L is the binary cross entropy averaged over channels and voxels (nnU-Net's
    region-mode BCE; a channel's weight multiplies its BCE, as torch's ``binary_cross_entropy(weight=...)``).
    Voxels carrying ``ignore_index`` or outside ``mask`` count nowhere; the mean is over the voxels that remain.

    Args:
        class_weight: optional per-class weights w_c >= 0 (length C).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`);
            "mean" is over all counted voxels of the batch.
    """

    def __init__(self, *, class_weight: Optional[Sequence[float]] = None, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.class_weight = check_class_weight(class_weight)

    def compute(self, prep: Prepared) -> BatchLoss:
        weight = None if self.class_weight is None else per_class(self.class_weight, prep, "class_weight")
        stats = class_statistics(prep, cross_entropy=True, overlap=False)
        return modulated_cross_entropy(stats, prep, weight, weighted_mean=True)


class WeightedCrossEntropyLoss(_ForegroundWeightedCrossEntropy):
    r"""Weighted cross entropy (Ronneberger 2015; Jadon 2020's survey form): the foreground (every class
    but the background; each channel in multilabel mode) weighted by ``beta``, the background by 1.

    .. math:: L = -\frac{1}{N} \sum_i \Big[\beta \sum_{c \ge 1} y_{ic} \log p_{ic} + y_{i0} \log p_{i0}\Big]

    Args:
        beta: foreground weight, >= 0 (default 2); beta > 1 gives fewer false negatives.
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`);
            "mean" is over all counted voxels of the batch.
    """

    def __init__(self, *, beta: float = 2.0, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.beta = check_number("beta", beta, 0.0)

    def role_weights(self) -> tuple[float, float]:
        return self.beta, 1.0


class BalancedCrossEntropyLoss(_ForegroundWeightedCrossEntropy):
    r"""Balanced cross entropy (Xie & Tu 2015): ``beta`` on the foreground, ``1 - beta`` on the background.

    .. math:: L = -\frac{1}{N} \sum_i \Big[\beta \sum_{c \ge 1} y_{ic} \log p_{ic} + (1-\beta) y_{i0} \log p_{i0}\Big]

    Args:
        beta: foreground weight in [0, 1] (default 0.7).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`);
            "mean" is over all counted voxels of the batch.
    """

    def __init__(self, *, beta: float = 0.7, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.beta = check_unit_interval("beta", beta)

    def role_weights(self) -> tuple[float, float]:
        return self.beta, 1.0 - self.beta


class FocalLoss(_ForegroundWeightedCrossEntropy):
    r"""Focal loss (Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017).

    .. math:: L = -\frac{1}{N} \sum_i \sum_c a_c (1 - p_{ic})^{\gamma_c}\, y_{ic} \log p_{ic}

    ``a_c = alpha`` on the foreground classes and ``1 - alpha`` on the background (alpha-balanced form),
    or 1 everywhere with ``alpha=None``. The sum runs over classes and the mean over voxels; MONAI's
    FocalLoss also averages over the class axis (a factor C smaller).

    Args:
        gamma: focusing parameter >= 0 (default 2), or one per class (per channel in multilabel mode).
        alpha: foreground weight in [0, 1], or None (default).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`);
            "mean" is over all counted voxels of the batch.
    """

    def __init__(self, *, gamma: Gamma = 2.0, alpha: Optional[float] = None, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.gamma = check_focal_gamma(gamma)
        self.alpha = None if alpha is None else check_unit_interval("alpha", alpha)

    def role_weights(self) -> tuple[float, float]:
        return (1.0, 1.0) if self.alpha is None else (self.alpha, 1.0 - self.alpha)


cross_entropy_loss = functional(CrossEntropyLoss)
weighted_cross_entropy_loss = functional(WeightedCrossEntropyLoss)
balanced_cross_entropy_loss = functional(BalancedCrossEntropyLoss)
focal_loss = functional(FocalLoss)
