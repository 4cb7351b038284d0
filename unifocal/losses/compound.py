"""Compound losses: a cross-entropy part and a Dice part, both computed from one prepared batch.

    Combo (Taghanaki 2019):             L = alpha CE_beta - (1 - alpha) mean_c DSC_c
    Dice + CE (MONAI's DiceCELoss):     L = lambda_dice L_Dice + lambda_ce CE
    Exponential logarithmic (Wong 2018): L = w_dice E_c[(-ln DSC_c)^gamma_dice] + w_ce E_i[w_l (-ln p_il)^gamma_ce]

with the soft Dice coefficient ``DSC_c = (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)`` and the smoothing ``s``
of :class:`~unifocal.losses.DiceLoss`. Each loss prepares its input once and derives every part from it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ._inputs import Prepared, check_choice, check_unit_interval, prepare
from ._stats import (
    REDUCTIONS,
    BatchLoss,
    class_mean,
    class_roles,
    class_table,
    confusion_sums,
    per_class,
    safe_pow,
    tversky_distance,
    voxel_mean,
)
from .distribution import _LossModule, modulated_cross_entropy, role_weights
from .region import check_smooth, region_classes

__all__ = [
    "combo",
    "combo_loss",
    "dice_ce",
    "dice_ce_loss",
    "exponential_logarithmic",
    "exponential_logarithmic_loss",
    "ComboLoss",
    "DiceCELoss",
    "ExponentialLogarithmicLoss",
]


def _dice_distance(prep: Prepared, classes: slice, batch_dice: bool, smooth: float) -> Tensor:
    """(B, K') or (1, K') soft Dice loss ``1 - DSC_c`` per class, DSC_c = (2 TP + s) / (2 TP + FP + FN + s)."""
    return tversky_distance(confusion_sums(prep, batch_dice, classes), 0.5, 0.5, smooth / 2)


def _check_nonnegative(**values: float) -> dict:
    checked = {}
    for name, value in values.items():
        value = float(value)
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"{name} must be a finite number >= 0; got {value}")
        checked[name] = value
    return checked


def _check_class_weight(class_weight: Optional[Sequence[float]]) -> Optional[tuple]:
    if class_weight is None:
        return None
    weights = tuple(float(w) for w in class_weight)
    if not weights or any(not (0 <= w < float("inf")) for w in weights):
        raise ValueError(f"class_weight must hold finite values >= 0, one per channel; got {class_weight}")
    return weights


# --- Combo -----------------------------------------------------------------------------------------------------


def combo(prep: Prepared, *, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0, batch_dice: bool = False) -> BatchLoss:
    """The Combo loss on a prepared batch (see :class:`ComboLoss`)."""
    cross_entropy = modulated_cross_entropy(prep, role_weights(class_roles(prep, None, None), beta, 1.0 - beta))
    distance = _dice_distance(prep, slice(None), batch_dice, smooth)
    dice = class_mean(1 - distance, prep.prob.shape[0])
    return cross_entropy.scaled(alpha).plus(dice.scaled(-(1.0 - alpha)))


def _check_combo(alpha: float, beta: float, smooth: float) -> dict:
    return dict(alpha=check_unit_interval("alpha", alpha), beta=check_unit_interval("beta", beta),
                smooth=check_smooth(smooth))


def combo_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1.0,
    batch_dice: bool = False,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Functional form of :class:`ComboLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    params = _check_combo(alpha, beta, smooth)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    return combo(prep, batch_dice=batch_dice, **params).reduce(reduction)


class ComboLoss(_LossModule):
    r"""Combo loss (Taghanaki, Zheng, Zhou, Georgescu, Sharma, Xu, Comaniciu, Hamarneh, "Combo loss: Handling
    input and output imbalance in multi-organ segmentation", CMIG 75 (2019) 24-33).

    .. math:: L = \alpha\, \Big(-\frac{1}{N} \sum_i \sum_c b_c\, y_{ic} \log p_{ic}\Big)
              - (1 - \alpha)\, \operatorname{mean}_c \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}

    with ``b_c = beta`` on the foreground classes and ``1 - beta`` on the background: Taghanaki's modified
    cross entropy ``beta y log p + (1 - beta)(1 - y) log(1 - p)``, where ``beta > 0.5`` penalises false
    negatives more than false positives. The Dice coefficient is averaged over all classes, background
    included (as mlyg's ``combo_loss``; in multilabel mode over every channel and its complement). The loss
    lies in [-(1 - alpha), inf): it is negative for good predictions, as in the paper.

    Unified Focal special case (tested to float64 round-off): ``UnifiedFocalLoss(weight=0.5, gamma=0,
    delta=0.5, smooth=s / 2)`` equals ``ComboLoss(alpha=0.5, beta=0.5, smooth=s) + 0.5`` (the Unified Focal
    loss writes the Tversky smoothing in the form ``(TP + s') / (TP + FN/2 + FP/2 + s')``, i.e. ``s = 2 s'``).
    mlyg's reference code puts its ``beta`` on channel 0 (the background); this class follows the paper.

    Args:
        alpha: weight in [0, 1] of the cross-entropy part (default 0.5).
        beta: weight in [0, 1] of the foreground classes in the cross entropy (default 0.5).
        smooth: Dice smoothing (> 0), as :class:`~unifocal.losses.DiceLoss`.
        batch_dice: Dice over the batch (nnU-Net's batch_dice), all-gathered under DDP.
        from_logits: input holds logits (default) rather than probabilities.
        multilabel: independent sigmoid channels (regions) instead of softmax classes.
        ignore_index: label value to ignore (label-map targets); ``forward(..., mask=)`` for others.
        reduction: "mean", "sum" or "none" (per-sample values, (B,)).
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0, batch_dice: bool = False,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean") -> None:
        super().__init__(**_check_combo(alpha, beta, smooth), batch_dice=batch_dice, from_logits=from_logits,
                         multilabel=multilabel, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return combo_loss(input, target, mask=mask, **self.options)


# --- Dice + cross entropy --------------------------------------------------------------------------------------


def dice_ce(
    prep: Prepared,
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    class_weight: Optional[Sequence[float]] = None,
    smooth: float = 1.0,
    include_background: bool = True,
    batch_dice: bool = False,
) -> BatchLoss:
    """Dice + cross entropy on a prepared batch (see :class:`DiceCELoss`)."""
    parts = []
    if lambda_dice > 0:
        distance = _dice_distance(prep, region_classes(prep, include_background), batch_dice, smooth)
        parts.append(class_mean(distance, prep.prob.shape[0]).scaled(lambda_dice))
    if lambda_ce > 0 or not parts:
        weight = None if class_weight is None else per_class(class_weight, prep, "class_weight")
        parts.append(modulated_cross_entropy(prep, weight).scaled(lambda_ce))
    return parts[0] if len(parts) == 1 else parts[0].plus(parts[1])


def _check_dice_ce(lambda_dice: float, lambda_ce: float, class_weight, smooth: float) -> dict:
    return dict(**_check_nonnegative(lambda_dice=lambda_dice, lambda_ce=lambda_ce),
                class_weight=_check_class_weight(class_weight), smooth=check_smooth(smooth))


def dice_ce_loss(
    input: Tensor,
    target: Tensor,
    *,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    class_weight: Optional[Sequence[float]] = None,
    smooth: float = 1.0,
    include_background: bool = True,
    batch_dice: bool = False,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Functional form of :class:`DiceCELoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    params = _check_dice_ce(lambda_dice, lambda_ce, class_weight, smooth)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    return dice_ce(prep, include_background=include_background, batch_dice=batch_dice, **params).reduce(reduction)


class DiceCELoss(_LossModule):
    r"""Soft Dice loss plus cross entropy, the default compound loss of nnU-Net and MONAI.

    .. math:: L = \lambda_{dice}\, \operatorname{mean}_c \Big[1 - \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big]
              + \lambda_{ce} \Big(-\frac{1}{N} \sum_i \sum_c w_c\, y_{ic} \log p_{ic}\Big)

    The Dice part is :class:`~unifocal.losses.DiceLoss`, the CE part :class:`~unifocal.losses.CrossEntropyLoss`
    (binary cross entropy averaged over channels with ``multilabel=True``).

    Relation to MONAI: equal to ``monai.losses.DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=s,
    smooth_dr=s, lambda_dice=..., lambda_ce=...)`` for exclusive classes and to ``sigmoid=True`` for a single
    sigmoid channel. Differences: MONAI applies ``weight`` to the Dice part too (here ``class_weight`` is the
    CE's only), uses softmax cross entropy for multi-channel sigmoid input (here per-channel BCE), and offers
    ``squared_pred``/``jaccard`` (use :class:`~unifocal.losses.DiceLoss` + CE for those). nnU-Net's
    ``DC_and_CE_loss`` uses ``include_background=False``, batch Dice and its own smoothing.

    Args:
        lambda_dice: weight (>= 0) of the Dice part (default 1).
        lambda_ce: weight (>= 0) of the cross-entropy part (default 1).
        class_weight: optional per-class CE weights (one per channel).
        smooth: Dice smoothing (> 0).
        include_background: keep channel 0 in the Dice part (default True).
        batch_dice: Dice over the batch (nnU-Net's batch_dice), all-gathered under DDP.
        from_logits: input holds logits (default) rather than probabilities.
        multilabel: independent sigmoid channels (regions) instead of softmax classes.
        ignore_index: label value to ignore (label-map targets); ``forward(..., mask=)`` for others.
        reduction: "mean", "sum" or "none" (per-sample values, (B,)).
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, class_weight: Optional[Sequence[float]] = None,
                 smooth: float = 1.0, include_background: bool = True, batch_dice: bool = False,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean") -> None:
        super().__init__(**_check_dice_ce(lambda_dice, lambda_ce, class_weight, smooth),
                         include_background=include_background, batch_dice=batch_dice, from_logits=from_logits,
                         multilabel=multilabel, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return dice_ce_loss(input, target, mask=mask, **self.options)


# --- Exponential logarithmic -----------------------------------------------------------------------------------


def frequency_weights(prep: Prepared) -> Tensor:
    """Wong et al.'s label weights ``w_l = (sum_k f_k / f_l)^0.5`` from the batch's target (no gradient).

    ``f_l`` is the number of counted voxels of class ``l`` in the whole batch; with ``multilabel=True`` each
    channel is weighed within its own binary problem (channel against complement). A class absent from the
    batch gets weight 0, which is never used: no voxel carries its label. Returns (1, K, 1, ...).
    """
    dims = (0, *range(2, prep.target.ndim))
    frequency = prep.target.detach().sum(dims)
    total = frequency.sum() / prep.num_problems
    weights = torch.where(frequency > 0, (total / frequency.clamp_min(torch.finfo(frequency.dtype).tiny)).sqrt(),
                          torch.zeros_like(frequency))
    return weights.view(1, -1, *([1] * (prep.prob.ndim - 2)))


def exponential_logarithmic(
    prep: Prepared,
    *,
    dice_weight: float = 0.8,
    ce_weight: float = 0.2,
    gamma_dice: float = 0.3,
    gamma_ce: float = 0.3,
    class_weight: Optional[Sequence[float]] = None,
    smooth: float = 1.0,
    include_background: bool = True,
    batch_dice: bool = False,
) -> BatchLoss:
    """The exponential logarithmic loss on a prepared batch (see :class:`ExponentialLogarithmicLoss`)."""
    parts = []
    if dice_weight > 0:
        distance = _dice_distance(prep, region_classes(prep, include_background), batch_dice, smooth)
        # -ln DSC = -log1p(-(1 - DSC)): exact as DSC -> 1; safe_pow keeps the gradient of x^gamma finite at 0.
        parts.append(class_mean(safe_pow(-torch.log1p(-distance), gamma_dice), prep.prob.shape[0]).scaled(dice_weight))
    if ce_weight > 0 or not parts:
        weight = frequency_weights(prep) if class_weight is None else class_table(per_class(class_weight, prep, "class_weight"), prep.scores)
        terms = prep.target * safe_pow(-prep.log_prob, gamma_ce) * weight
        per_voxel = terms.sum(1) / prep.num_problems
        parts.append(voxel_mean(per_voxel, prep).scaled(ce_weight))
    return parts[0] if len(parts) == 1 else parts[0].plus(parts[1])


def _check_exp_log(dice_weight, ce_weight, gamma_dice, gamma_ce, class_weight, smooth) -> dict:
    params = _check_nonnegative(dice_weight=dice_weight, ce_weight=ce_weight)
    for name, gamma in (("gamma_dice", gamma_dice), ("gamma_ce", gamma_ce)):
        gamma = float(gamma)
        if not 0 < gamma < float("inf"):
            raise ValueError(f"{name} must be a finite number > 0; got {gamma}")
        params[name] = gamma
    return dict(**params, class_weight=_check_class_weight(class_weight), smooth=check_smooth(smooth))


def exponential_logarithmic_loss(
    input: Tensor,
    target: Tensor,
    *,
    dice_weight: float = 0.8,
    ce_weight: float = 0.2,
    gamma_dice: float = 0.3,
    gamma_ce: float = 0.3,
    class_weight: Optional[Sequence[float]] = None,
    smooth: float = 1.0,
    include_background: bool = True,
    batch_dice: bool = False,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Functional form of :class:`ExponentialLogarithmicLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    params = _check_exp_log(dice_weight, ce_weight, gamma_dice, gamma_ce, class_weight, smooth)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    return exponential_logarithmic(prep, include_background=include_background, batch_dice=batch_dice,
                                   **params).reduce(reduction)


class ExponentialLogarithmicLoss(_LossModule):
    r"""Exponential logarithmic loss (Wong, Moradi, Tang, Syeda-Mahmood, "3D segmentation with exponential
    logarithmic loss for highly unbalanced object sizes", MICCAI 2018).

    .. math:: L = w_{dice}\, \operatorname{mean}_c \big(-\ln DSC_c\big)^{\gamma_{dice}}
              + w_{ce}\, \frac{1}{N} \sum_i \sum_l y_{il}\, w_l \big(-\ln p_{il}\big)^{\gamma_{ce}},
              \qquad DSC_c = \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}

    Exponents below 1 raise the loss of well-segmented classes and confident voxels (``x^gamma > x`` for
    ``x < 1``), which keeps small structures in play. Label weights ``w_l`` (Wong's choice):
    ``w_l = (sum_k f_k / f_l)^0.5`` with ``f_k`` the voxel count of class ``k`` in the current batch
    (counted voxels only; per channel against its complement in multilabel mode; see
    :func:`frequency_weights`). Wong et al. count frequencies over the training set: pass those weights as
    ``class_weight`` (e.g. from :mod:`unifocal.gamma`'s class frequencies) for batch-independent weights.
    Defaults are the paper's: ``w_dice = 0.8``, ``w_ce = 0.2``, ``gamma_dice = gamma_ce = 0.3``, ``s = 1``.
    Gradients of ``x^gamma`` are stopped below ``x = 1e-6`` (a perfect class or a saturated voxel),
    where they would be infinite.

    Args:
        dice_weight: w_dice >= 0 (default 0.8).
        ce_weight: w_ce >= 0 (default 0.2).
        gamma_dice: exponent > 0 of the Dice part (default 0.3).
        gamma_ce: exponent > 0 of the cross-entropy part (default 0.3).
        class_weight: fixed label weights w_l (one per channel; in multilabel mode a channel's weight applies
            to its complement too), or None for the batch frequency weights.
        smooth: Dice smoothing (> 0; Wong's epsilon, default 1).
        include_background: keep channel 0 in the Dice part (default True).
        batch_dice: Dice over the batch (nnU-Net's batch_dice), all-gathered under DDP.
        from_logits: input holds logits (default) rather than probabilities.
        multilabel: independent sigmoid channels (regions) instead of softmax classes.
        ignore_index: label value to ignore (label-map targets); ``forward(..., mask=)`` for others.
        reduction: "mean", "sum" or "none" (per-sample values, (B,)).
    """

    def __init__(self, dice_weight: float = 0.8, ce_weight: float = 0.2, gamma_dice: float = 0.3,
                 gamma_ce: float = 0.3, class_weight: Optional[Sequence[float]] = None, smooth: float = 1.0,
                 include_background: bool = True, batch_dice: bool = False, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__(**_check_exp_log(dice_weight, ce_weight, gamma_dice, gamma_ce, class_weight, smooth),
                         include_background=include_background, batch_dice=batch_dice, from_logits=from_logits,
                         multilabel=multilabel, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return exponential_logarithmic_loss(input, target, mask=mask, **self.options)
