"""Region-based losses built on the soft confusion sums TP, FP, FN per class.

They share one shape: prepare the batch, take TP/FP/FN over the selected classes (per sample, or over the
batch with ``batch_dice=True``), turn them into a per-class loss and average over classes. With
``multilabel=True`` the classes are the input's channels (regions), each against its own complement.

Smoothing: ``smooth`` (> 0) is added to numerator and denominator. It fixes the loss of a class that is
absent from both target and prediction at 0 rather than at 0/0, and it sets how fast a false-positive mass
on an absent class is punished: a soft mass of ``m`` voxels costs about ``m / (m + smooth)``. The default 1
("one voxel") keeps that gradient alive; the public ports' 1e-7 clip instead saturate it (spec, known defects).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ._inputs import Prepared, check_choice, prepare
from ._stats import REDUCTIONS, BatchLoss, ConfusionSums, class_mean, confusion_sums, safe_pow, tversky_distance
from .distribution import _LossModule

__all__ = [
    "region_sums",
    "region_classes",
    "check_smooth",
    "dice_loss",
    "jaccard_loss",
    "tversky_loss",
    "focal_tversky_loss",
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
]


def check_smooth(smooth: float) -> float:
    smooth = float(smooth)
    if not smooth > 0:
        raise ValueError(f"smooth must be > 0 (it defines the loss of a class absent from target and prediction); got {smooth}")
    return smooth


def region_sums(
    input: Tensor,
    target: Tensor,
    *,
    include_background: bool = True,
    batch_dice: bool = False,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
) -> tuple[Prepared, ConfusionSums]:
    """Prepare the batch and return it with TP/FP/FN over the input's channels.

    ``include_background=False`` drops channel 0 (the background with exclusive classes, as MONAI does
    in both modes).
    """
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    return prep, confusion_sums(prep, batch_dice, region_classes(prep, include_background))


def region_classes(prep: Prepared, include_background: bool = True) -> slice:
    """The classes of ``prep`` that stand for the input's channels, less channel 0 if so asked."""
    start = prep.num_classes - prep.num_problems if prep.multilabel else 0
    if include_background:
        return slice(start, None)
    if prep.num_classes - start < 2:
        raise ValueError("include_background=False leaves no channel: the input has a single channel")
    return slice(start + 1, None)


def _reduced(per_class_loss: Tensor, prep: Prepared, reduction: str) -> Tensor:
    return class_mean(per_class_loss, prep.prob.shape[0]).reduce(reduction)


def tversky_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    smooth: float = 1.0,
    reduction: str = "mean",
    **options,
) -> Tensor:
    """Tversky loss ``mean_c [1 - (TP + s) / (TP + alpha FP + beta FN + s)]``. See :class:`TverskyLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    prep, sums = region_sums(input, target, **options)
    return _reduced(tversky_distance(sums, alpha, beta, smooth), prep, reduction)


def dice_loss(
    input: Tensor,
    target: Tensor,
    *,
    squared: bool = False,
    smooth: float = 1.0,
    reduction: str = "mean",
    **options,
) -> Tensor:
    """Soft Dice loss ``mean_c [1 - (2 TP + s) / (2 TP + FP + FN + s)]``, or with ``squared=True`` the
    squared denominator ``sum p^2 + sum y^2`` (Milletari 2016). See :class:`DiceLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    prep, sums = region_sums(input, target, **options)
    if not squared:
        return _reduced(tversky_distance(sums, 0.5, 0.5, smooth / 2), prep, reduction)
    classes = region_classes(prep, options.get("include_background", True))
    prob, onehot = prep.prob[:, classes], prep.target[:, classes]
    if prep.mask is not None:
        prob = prob * prep.mask
    dims = tuple(range(2, prob.ndim))
    denominator = prob.square().sum(dims) + onehot.square().sum(dims)
    if options.get("batch_dice", False):
        denominator = denominator.sum(0, keepdim=True)
    return _reduced(1 - (2 * sums.tp + smooth) / (denominator + smooth), prep, reduction)


def jaccard_loss(input: Tensor, target: Tensor, *, smooth: float = 1.0, reduction: str = "mean", **options) -> Tensor:
    """Soft Jaccard (IoU) loss ``mean_c [1 - (TP + s) / (TP + FP + FN + s)]``. See :class:`JaccardLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    prep, sums = region_sums(input, target, **options)
    return _reduced(tversky_distance(sums, 1.0, 1.0, smooth), prep, reduction)


def focal_tversky_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 4.0 / 3.0,
    smooth: float = 1.0,
    reduction: str = "mean",
    **options,
) -> Tensor:
    """Focal Tversky loss ``mean_c (1 - TI_c)^(1/gamma)`` (Abraham & Khan 2019). See :class:`FocalTverskyLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    prep, sums = region_sums(input, target, **options)
    return _reduced(safe_pow(tversky_distance(sums, alpha, beta, smooth), 1.0 / gamma), prep, reduction)


class _RegionLoss(_LossModule):
    def __init__(self, *, smooth: float, include_background: bool, batch_dice: bool, from_logits: bool,
                 multilabel: bool, ignore_index: Optional[int], reduction: str, **params) -> None:
        super().__init__(smooth=check_smooth(smooth), include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, **params)


_COMMON_ARGS = """
        smooth: added to numerator and denominator (> 0); see the module docstring.
        include_background: keep channel 0 (default True).
        batch_dice: sum TP/FP/FN over the batch too (nnU-Net's batch_dice), all-gathered under DDP.
        from_logits: input holds logits (default) rather than probabilities.
        multilabel: independent sigmoid channels (regions) instead of softmax classes.
        ignore_index: label value to ignore (label-map targets); ``forward(..., mask=)`` for others.
        reduction: "mean", "sum" or "none" (per-sample values, (B,)).
"""


class DiceLoss(_RegionLoss):
    __doc__ = r"""Soft Dice loss (Milletari, Navab, Ahmadi, "V-Net", 3DV 2016), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big]

    With ``squared=True`` the denominator is :math:`\sum_i p_{ic}^2 + \sum_i y_{ic}^2 + s`.
    Equal to MONAI's ``DiceLoss(smooth_nr=s, smooth_dr=s, squared_pred=squared)`` and, with
    ``include_background=False``, to nnU-Net's ``SoftDiceLoss`` up to its sign and smoothing.

    Args:
        squared: squared-denominator form.""" + _COMMON_ARGS

    def __init__(self, squared: bool = False, smooth: float = 1.0, include_background: bool = True,
                 batch_dice: bool = False, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__(squared=squared, smooth=smooth, include_background=include_background,
                         batch_dice=batch_dice, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return dice_loss(input, target, mask=mask, **self.options)


class JaccardLoss(_RegionLoss):
    __doc__ = r"""Soft Jaccard / IoU loss (Rahman & Wang 2016), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{TP_c + s}{TP_c + FP_c + FN_c + s}\Big]

    Args:""" + _COMMON_ARGS

    def __init__(self, smooth: float = 1.0, include_background: bool = True, batch_dice: bool = False,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean") -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return jaccard_loss(input, target, mask=mask, **self.options)


def _check_fp_fn(alpha: float, beta: float) -> dict:
    if not (float(alpha) >= 0 and float(beta) >= 0 and float(alpha) + float(beta) > 0):
        raise ValueError(f"alpha (FP weight) and beta (FN weight) must be >= 0 and not both 0; got {alpha}, {beta}")
    return {"alpha": float(alpha), "beta": float(beta)}


class TverskyLoss(_RegionLoss):
    __doc__ = r"""Tversky loss (Salehi, Erdogmus, Gholipour, MLMI 2017), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[1 - \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}\Big]

    ``alpha`` weights false positives and ``beta`` false negatives, as in MONAI's TverskyLoss; the
    Unified Focal loss's ``delta`` is ``beta`` (with ``alpha = 1 - delta``). alpha = beta = 0.5 is Dice.

    Args:
        alpha: false-positive weight (default 0.3).
        beta: false-negative weight (default 0.7).""" + _COMMON_ARGS

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, include_background: bool = True,
                 batch_dice: bool = False, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__(**_check_fp_fn(alpha, beta), smooth=smooth, include_background=include_background,
                         batch_dice=batch_dice, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return tversky_loss(input, target, mask=mask, **self.options)


class FocalTverskyLoss(_RegionLoss):
    __doc__ = r"""Focal Tversky loss (Abraham & Khan, ISBI 2019), mean over classes.

    .. math:: L = \operatorname{mean}_c (1 - TI_c)^{1/\gamma}, \quad
              TI_c = \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}

    ``gamma`` follows Abraham & Khan (default 4/3; gamma > 1 focuses on hard, low-TI classes). The
    Unified Focal family writes the same exponent as ``1 - gamma`` (see SymmetricFocalTverskyLoss).

    Args:
        alpha: false-positive weight (default 0.3).
        beta: false-negative weight (default 0.7).
        gamma: focal parameter > 0; the exponent is 1/gamma.""" + _COMMON_ARGS

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 4.0 / 3.0, smooth: float = 1.0,
                 include_background: bool = True, batch_dice: bool = False, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be > 0 (the exponent is 1/gamma); got {gamma}")
        super().__init__(**_check_fp_fn(alpha, beta), gamma=float(gamma), smooth=smooth,
                         include_background=include_background, batch_dice=batch_dice, from_logits=from_logits,
                         multilabel=multilabel, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return focal_tversky_loss(input, target, mask=mask, **self.options)


# --- Generalized Dice, sensitivity-specificity and log-cosh Dice -------------------------------------------------

import torch  # noqa: E402  (this section is appended to the module; its imports stay with it)

from ._inputs import check_unit_interval  # noqa: E402

__all__ += [
    "generalized_dice_weights",
    "generalized_dice_loss",
    "sensitivity_specificity_loss",
    "log_cosh_dice_loss",
    "GeneralizedDiceLoss",
    "SensitivitySpecificityLoss",
    "LogCoshDiceLoss",
]


def generalized_dice_weights(volumes: Tensor) -> Tensor:
    """Sudre's class weights ``w_c = 1 / V_c^2`` from target volumes ``V`` (B, K) or (1, K), normalised to
    sum to 1 over classes (no gradient).

    The loss only depends on the ratios of the weights, except through the smoothing: normalised, ``smooth``
    keeps the meaning "about one voxel" of the other region losses, where raw ``1 / V^2`` weights make any
    fixed smoothing dominate large volumes. Absent-class guard (as MONAI): a class absent from the target
    (``V_c = 0``, where ``1 / V_c^2`` is infinite) gets the weight of the rarest present class, so false
    positives on it cost as much as on the rarest structure; when no class is present (everything ignored,
    or ``include_background=False`` on a background-only sample) all weights are equal.
    """
    volumes = volumes.detach()
    present = volumes > 0
    smallest = torch.where(present, volumes, torch.full_like(volumes, float("inf"))).amin(1, keepdim=True)
    # (V_min / V_c)^2 = w_c V_min^2: the same ratios as 1 / V_c^2, without underflow for large volumes.
    ratio = torch.where(present, smallest / volumes.clamp_min(torch.finfo(volumes.dtype).tiny), torch.ones_like(volumes))
    weights = ratio.square()
    return weights / weights.sum(1, keepdim=True)


def generalized_dice_loss(input: Tensor, target: Tensor, *, smooth: float = 1.0, reduction: str = "mean", **options) -> Tensor:
    """Generalized Dice loss ``1 - (2 sum_c w_c TP_c + s) / (sum_c w_c (2 TP_c + FP_c + FN_c) + s)`` with
    ``w_c`` from :func:`generalized_dice_weights`. See :class:`GeneralizedDiceLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    smooth = check_smooth(smooth)
    prep, sums = region_sums(input, target, **options)
    weights = generalized_dice_weights(sums.tp + sums.fn)
    errors = (weights * (sums.fp + sums.fn)).sum(1, keepdim=True)
    overlap = (weights * sums.tp).sum(1, keepdim=True)
    # 1 - (2a + s) / (2a + e + s) written as e / (2a + e + s): exact as the loss -> 0.
    return _reduced(errors / (2 * overlap + errors + smooth), prep, reduction)


def sensitivity_specificity_loss(
    input: Tensor,
    target: Tensor,
    *,
    sensitivity_weight: float = 0.05,
    smooth: float = 1e-5,
    include_background: bool = True,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Sensitivity-specificity loss (Brosch et al. 2015), mean over classes. See :class:`SensitivitySpecificityLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    r = check_unit_interval("sensitivity_weight", sensitivity_weight)
    smooth = check_smooth(smooth)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    classes = region_classes(prep, include_background)
    prob, onehot = prep.prob[:, classes], prep.target[:, classes]
    negative = 1 - onehot if prep.mask is None else prep.mask - onehot
    error = (onehot - prob).square()
    dims = tuple(range(2, prob.ndim))
    sensitivity = (error * onehot).sum(dims) / (onehot.sum(dims) + smooth)
    specificity = (error * negative).sum(dims) / (negative.sum(dims) + smooth)
    return _reduced(r * sensitivity + (1 - r) * specificity, prep, reduction)


def log_cosh_dice_loss(input: Tensor, target: Tensor, *, reduction: str = "mean", **dice_options) -> Tensor:
    """Log-cosh Dice loss ``log(cosh(L_Dice))`` of each sample's soft Dice loss (Jadon 2020).
    See :class:`LogCoshDiceLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    per_sample = torch.log(torch.cosh(dice_loss(input, target, reduction="none", **dice_options)))
    return BatchLoss(per_sample.mean, lambda: per_sample).reduce(reduction)


class GeneralizedDiceLoss(_RegionLoss):
    __doc__ = r"""Generalized Dice loss (Sudre, Li, Vercauteren, Ourselin, Cardoso, "Generalised Dice overlap as
    a deep learning loss function for highly unbalanced segmentations", DLMIA 2017).

    .. math:: L = 1 - \frac{2 \sum_c w_c TP_c + s}{\sum_c w_c (2 TP_c + FP_c + FN_c) + s}, \qquad
              w_c \propto \frac{1}{V_c^2},\ V_c = \sum_i y_{ic}

    One value per sample (or per batch with ``batch_dice=True``): the classes are pooled before the ratio,
    each weighted by the inverse square of its target volume, so small structures count as much as large ones.
    The weights are normalised to sum to 1 and carry no gradient; a class absent from the target gets the
    weight of the rarest present class (MONAI's guard), all classes equal weights when none is present
    (:func:`generalized_dice_weights`).

    Relation to MONAI: equal to ``monai.losses.GeneralizedDiceLoss(w_type="square", smooth_nr=s W,
    smooth_dr=s W)`` with ``W = sum_c 1 / V_c^2`` (after the guard), i.e. the same loss with the smoothing
    measured in voxels instead of in units of the raw weights; MONAI's default ``1e-5`` on raw weights
    outweighs the overlap terms once volumes exceed ~1e5 voxels. On a sample where no selected class is
    present MONAI returns 0 (no gradient) and this loss still penalises false positives.

    Args:""" + _COMMON_ARGS

    def __init__(self, smooth: float = 1.0, include_background: bool = True, batch_dice: bool = False,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean") -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return generalized_dice_loss(input, target, mask=mask, **self.options)


class SensitivitySpecificityLoss(_LossModule):
    r"""Sensitivity-specificity loss (Brosch, Yoo, Tang, Li, Traboulsee, Tam, "Deep convolutional encoder
    networks for multiple sclerosis lesion segmentation", MICCAI 2015), mean over classes.

    .. math:: L = \operatorname{mean}_c \Big[ r\, \frac{\sum_i (y_{ic} - p_{ic})^2\, y_{ic}}{\sum_i y_{ic} + s}
              + (1 - r)\, \frac{\sum_i (y_{ic} - p_{ic})^2 (1 - y_{ic})}{\sum_i (1 - y_{ic}) + s} \Big]

    The first term is the mean squared error over the class's voxels (sensitivity), the second over all
    other voxels (specificity); ``r`` (Brosch's "sensitivity ratio", lambda in the spec) trades them off.
    Brosch et al. found values of 0.01-0.10 to behave alike and use 0.05: since the specificity term is a
    mean over the (many) background voxels, it needs the larger weight. NiftyNet sums over classes; this
    loss averages them (the Dice-family convention). Ignored voxels count in neither term.

    Args:
        sensitivity_weight: r in [0, 1] (default 0.05).
        smooth: added to both denominators (> 0, default 1e-5); a class absent from the target then has a
            sensitivity term of 0.
        include_background: keep channel 0 (default True).
        from_logits: input holds logits (default) rather than probabilities.
        multilabel: independent sigmoid channels (regions) instead of softmax classes.
        ignore_index: label value to ignore (label-map targets); ``forward(..., mask=)`` for others.
        reduction: "mean", "sum" or "none" (per-sample values, (B,)).
    """

    def __init__(self, sensitivity_weight: float = 0.05, smooth: float = 1e-5, include_background: bool = True,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean") -> None:
        super().__init__(sensitivity_weight=check_unit_interval("sensitivity_weight", sensitivity_weight),
                         smooth=check_smooth(smooth), include_background=include_background,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return sensitivity_specificity_loss(input, target, mask=mask, **self.options)


class LogCoshDiceLoss(_RegionLoss):
    __doc__ = r"""Log-cosh Dice loss (Jadon, "A survey of loss functions for semantic segmentation", CIBCB 2020).

    .. math:: L = \log\cosh\big(L_{Dice}\big), \qquad
              L_{Dice} = \operatorname{mean}_c \Big[1 - \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big]

    Applied to each sample's soft Dice loss (:class:`DiceLoss`, same options), then reduced over samples.
    ``log cosh`` is a smooth, bounded reshaping (``x^2/2`` near 0, derivative ``tanh x``): on [0, 1] it
    damps the Dice loss, most near 0, where the Dice gradient is noisiest.

    Args:
        squared: squared-denominator Dice (Milletari 2016).""" + _COMMON_ARGS

    def __init__(self, squared: bool = False, smooth: float = 1.0, include_background: bool = True,
                 batch_dice: bool = False, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__(squared=squared, smooth=smooth, include_background=include_background,
                         batch_dice=batch_dice, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return log_cosh_dice_loss(input, target, mask=mask, **self.options)
