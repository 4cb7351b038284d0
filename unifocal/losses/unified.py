"""The Unified Focal loss family (Yeung, Sala, Schönlieb, Rundo, CMIG 95 (2022) 102026, arXiv 2102.04525).

Classes split into common classes K (default: the background) and rare classes R (the rest). With
``delta`` weighting false negatives / rare classes and per-class ``gamma_c``:

    modified (a)symmetric focal:  L_F  = (1/N) sum_i sum_c w_c m_ic (-y_ic log p_ic),  w_c = delta (R), 1 - delta (K)
                                  m_ic = (1 - p_ic)^gamma_c on K (and on R when symmetric), 1 otherwise
    modified (a)symmetric focal Tversky:  L_FT = mean_c e_c(1 - TI_c),
                                  TI_c = (TP_c + s) / (TP_c + delta FN_c + (1 - delta) FP_c + s)
                                  e_c(d) = d^(1 - gamma_c) on R (and on K when symmetric), d otherwise
    Unified Focal:                L_UF = lambda L_F + (1 - lambda) L_FT      (lambda = ``weight``)

Here ``lambda`` weights the cross-entropy-based part, as in the paper and MONAI; mlyg's reference code
puts its ``weight`` on the Tversky part instead (the same at the default 0.5). Unlike the public ports
this implementation works for any number of classes, 2D and 3D, multilabel (region) input, takes logits,
computes in float32 under autocast, gives an absent class predicted absent a loss of 0, and keeps the
gradient of ``(1 - TI)^(1 - gamma)`` finite as TI -> 1.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor

from ._inputs import Prepared, check_choice, check_unit_interval, prepare
from ._stats import (
    REDUCTIONS,
    BatchLoss,
    check_class_sets,
    class_mean,
    class_roles,
    confusion_sums,
    per_class,
    safe_pow,
    scalar_or_table,
    tversky_distance,
)
from .distribution import _LossModule, check_focal_gamma, modulated_cross_entropy, role_weights
from .region import check_smooth

__all__ = [
    "unified_focal",
    "unified_focal_loss",
    "hybrid_focal_loss",
    "UnifiedFocalLoss",
    "AsymmetricUnifiedFocalLoss",
    "SymmetricUnifiedFocalLoss",
    "AsymmetricFocalLoss",
    "SymmetricFocalLoss",
    "AsymmetricFocalTverskyLoss",
    "SymmetricFocalTverskyLoss",
    "HybridFocalLoss",
]

Gamma = Union[float, Sequence[float]]


def _focal_part(prep: Prepared, rare: tuple[bool, ...], delta: float, gamma: tuple[float, ...], asymmetric: bool) -> BatchLoss:
    class_weight = role_weights(rare, delta, 1.0 - delta)
    if asymmetric:
        gamma = tuple(0.0 if r else g for r, g in zip(rare, gamma))
    return modulated_cross_entropy(prep, class_weight, gamma)


def _focal_tversky_part(
    prep: Prepared, rare: tuple[bool, ...], delta: float, gamma: tuple[float, ...], asymmetric: bool,
    batch_dice: bool, smooth: float
) -> BatchLoss:
    distance = tversky_distance(confusion_sums(prep, batch_dice), 1.0 - delta, delta, smooth)
    exponent = tuple(1.0 if asymmetric and not r else 1.0 - g for r, g in zip(rare, gamma))
    return class_mean(safe_pow(distance, scalar_or_table(exponent, distance)), prep.scores.shape[0])


def unified_focal(
    prep: Prepared,
    *,
    weight: float = 0.5,
    delta: float = 0.6,
    gamma: Gamma = 0.5,
    asymmetric: bool = True,
    common_classes: Optional[Sequence[int]] = None,
    rare_classes: Optional[Sequence[int]] = None,
    batch_dice: bool = False,
    smooth: float = 1.0,
) -> BatchLoss:
    """The Unified Focal loss on a prepared batch, in both reduced forms (see the module docstring).

    A part whose weight is 0 is not computed, so ``weight=1`` is the pure focal loss and ``weight=0``
    the pure focal Tversky loss. Both parts share one pass over the voxels
    (:func:`unifocal.losses._stats.class_statistics`).
    """
    rare = class_roles(prep, common_classes, rare_classes)
    gammas = per_class(gamma, prep, "gamma")
    parts = []
    if weight > 0:
        parts.append(_focal_part(prep, rare, delta, gammas, asymmetric).scaled(weight))
    if weight < 1:
        parts.append(_focal_tversky_part(prep, rare, delta, gammas, asymmetric, batch_dice, smooth).scaled(1 - weight))
    return parts[0] if len(parts) == 1 else parts[0].plus(parts[1])


def _check_unified(weight: float, delta: float, gamma: Gamma, common_classes, rare_classes, smooth: float) -> dict:
    weight = check_unit_interval("weight (lambda)", weight)
    common_classes, rare_classes = check_class_sets(common_classes, rare_classes)
    return dict(
        weight=weight,
        delta=check_unit_interval("delta", delta),
        gamma=check_focal_gamma(gamma, tversky_exponent=weight < 1),
        common_classes=common_classes,
        rare_classes=rare_classes,
        smooth=check_smooth(smooth),
    )


def unified_focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    weight: float = 0.5,
    delta: float = 0.6,
    gamma: Gamma = 0.5,
    asymmetric: bool = True,
    common_classes: Optional[Sequence[int]] = None,
    rare_classes: Optional[Sequence[int]] = None,
    batch_dice: bool = False,
    smooth: float = 1.0,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Functional form of :class:`UnifiedFocalLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    params = _check_unified(weight, delta, gamma, common_classes, rare_classes, smooth)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    return unified_focal(prep, asymmetric=asymmetric, batch_dice=batch_dice, **params).reduce(reduction)


def hybrid_focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    weight: float = 0.5,
    focal_delta: float = 0.7,
    focal_gamma: float = 2.0,
    tversky_delta: float = 0.7,
    tversky_gamma: float = 0.75,
    batch_dice: bool = False,
    smooth: float = 1.0,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Functional form of :class:`HybridFocalLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    weight = check_unit_interval("weight (lambda)", weight)
    focal = _check_unified(1.0, focal_delta, focal_gamma, None, None, smooth)
    tversky = _check_unified(0.0, tversky_delta, tversky_gamma, None, None, smooth)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    focal_part = unified_focal(prep, asymmetric=False, batch_dice=batch_dice, **focal)
    tversky_part = unified_focal(prep, asymmetric=False, batch_dice=batch_dice, **tversky)
    return focal_part.scaled(weight).plus(tversky_part.scaled(1 - weight)).reduce(reduction)


class UnifiedFocalLoss(_LossModule):
    r"""Unified Focal loss (Yeung et al. 2022), asymmetric (default) or symmetric.

    .. math:: L_{UF} = \lambda L_{F} + (1 - \lambda) L_{FT}

    with the modified (a)symmetric focal loss :math:`L_F` and focal Tversky loss :math:`L_{FT}` of the
    module docstring. The asymmetric form suppresses only the common classes in the focal part and
    enhances only the rare classes in the Tversky part; the symmetric form does both for every class.

    Special cases (tested): weight=1, gamma=0, delta=0.5 is cross entropy / 2; weight=0, gamma=0,
    delta=0.5 the soft Dice loss; weight=0, gamma=0, delta=0.7 the Tversky loss; weight=0, symmetric,
    1 - gamma = 1/gamma_FT the focal Tversky loss; weight=1, symmetric, delta=alpha, gamma=2 the
    alpha-balanced focal loss (binary); weight=0.5, gamma=0, delta=0.5 the Combo loss plus 0.5.

    Args:
        weight: lambda in [0, 1], the weight of the cross-entropy-based (focal) part.
        delta: in [0, 1], weight of the rare classes and of false negatives (0.6).
        gamma: focal parameter, one value or one per class (per channel in multilabel mode):
            "rare-class gamma assignment"; in [0, 1) while the Tversky part is used (its exponent is
            1 - gamma), any value >= 0 with weight=1. See :mod:`unifocal.gamma` for a data-driven choice.
        asymmetric: asymmetric (default) or symmetric variant.
        common_classes: classes suppressed in the focal part (default (0,), the background).
        rare_classes: classes enhanced in the Tversky part (default: all other classes). Giving one set
            makes the other its complement; both must partition the classes. Unset with multilabel=True,
            where each channel is rare and its complement common.
        batch_dice: TP/FP/FN over the batch (nnU-Net's batch_dice), all-gathered under DDP.
        smooth: Tversky smoothing (> 0), see :mod:`unifocal.losses.region`.
        from_logits: input holds logits (default); False for probabilities.
        multilabel: independent sigmoid channels (regions, BraTS/KiTS23 in nnU-Net); each channel is a
            binary problem and the loss is averaged over channels.
        ignore_index: label value to ignore; ``forward(..., mask=)`` for one-hot/multilabel targets.
        reduction: "mean" (batch mean: focal part over all counted voxels), "sum" or "none" (per sample).
    """

    def __init__(
        self,
        weight: float = 0.5,
        delta: float = 0.6,
        gamma: Gamma = 0.5,
        asymmetric: bool = True,
        common_classes: Optional[Sequence[int]] = None,
        rare_classes: Optional[Sequence[int]] = None,
        batch_dice: bool = False,
        smooth: float = 1.0,
        from_logits: bool = True,
        multilabel: bool = False,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        params = _check_unified(weight, delta, gamma, common_classes, rare_classes, smooth)
        if multilabel and (params["common_classes"] is not None or params["rare_classes"] is not None):
            raise ValueError("common_classes/rare_classes apply to exclusive classes, not multilabel=True")
        super().__init__(**params, asymmetric=asymmetric, batch_dice=batch_dice, from_logits=from_logits,
                         multilabel=multilabel, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Loss of ``input`` (B, C, *S) against ``target`` (label map or one-hot); ``mask`` (B, 1, *S)
        optionally marks the voxels that count."""
        return unified_focal_loss(input, target, mask=mask, **self.options)


class AsymmetricUnifiedFocalLoss(UnifiedFocalLoss):
    """Asymmetric Unified Focal loss: :class:`UnifiedFocalLoss` with ``asymmetric=True`` (the paper's
    recommended form; defaults weight=0.5, delta=0.6, gamma=0.5)."""

    def __init__(self, weight: float = 0.5, delta: float = 0.6, gamma: Gamma = 0.5, **kwargs) -> None:
        super().__init__(weight=weight, delta=delta, gamma=gamma, asymmetric=True, **kwargs)


class SymmetricUnifiedFocalLoss(UnifiedFocalLoss):
    """Symmetric Unified Focal loss: :class:`UnifiedFocalLoss` with ``asymmetric=False``."""

    def __init__(self, weight: float = 0.5, delta: float = 0.6, gamma: Gamma = 0.5, **kwargs) -> None:
        super().__init__(weight=weight, delta=delta, gamma=gamma, asymmetric=False, **kwargs)


class AsymmetricFocalLoss(UnifiedFocalLoss):
    r"""Modified asymmetric focal loss (the focal part of the asymmetric Unified Focal loss):

    .. math:: L_{maF} = \frac{1}{N} \sum_i \Big[\sum_{c \in R} \delta\, CE_{ic}
              + \sum_{c \in K} (1 - \delta)(1 - p_{ic})^{\gamma_c} CE_{ic}\Big]

    Defaults delta=0.7, gamma=2 as mlyg's ``asymmetric_focal_loss``. Other arguments as
    :class:`UnifiedFocalLoss` (no ``weight``, ``batch_dice`` or ``smooth``).
    """

    def __init__(self, delta: float = 0.7, gamma: Gamma = 2.0, **kwargs) -> None:
        super().__init__(weight=1.0, delta=delta, gamma=gamma, asymmetric=True, **kwargs)


class SymmetricFocalLoss(UnifiedFocalLoss):
    r"""Modified symmetric focal loss: :math:`\frac{1}{N}\sum_i \sum_c w_c (1 - p_{ic})^{\gamma_c} CE_{ic}`,
    ``w_c = delta`` on rare and ``1 - delta`` on common classes; with delta = alpha and gamma = 2 the
    alpha-balanced focal loss of Lin et al. Defaults delta=0.7, gamma=2 (mlyg)."""

    def __init__(self, delta: float = 0.7, gamma: Gamma = 2.0, **kwargs) -> None:
        super().__init__(weight=1.0, delta=delta, gamma=gamma, asymmetric=False, **kwargs)


class AsymmetricFocalTverskyLoss(UnifiedFocalLoss):
    r"""Modified asymmetric focal Tversky loss:
    :math:`\operatorname{mean}_c [c \in K: 1 - TI_c;\ c \in R: (1 - TI_c)^{1 - \gamma_c}]`.
    Defaults delta=0.7, gamma=0.75 as mlyg's ``asymmetric_focal_tversky_loss``."""

    def __init__(self, delta: float = 0.7, gamma: Gamma = 0.75, **kwargs) -> None:
        super().__init__(weight=0.0, delta=delta, gamma=gamma, asymmetric=True, **kwargs)


class SymmetricFocalTverskyLoss(UnifiedFocalLoss):
    r"""Modified symmetric focal Tversky loss :math:`\operatorname{mean}_c (1 - TI_c)^{1 - \gamma_c}`;
    ``1 - gamma = 1/gamma_FT`` gives Abraham & Khan's focal Tversky loss. Defaults delta=0.7, gamma=0.75 (mlyg)."""

    def __init__(self, delta: float = 0.7, gamma: Gamma = 0.75, **kwargs) -> None:
        super().__init__(weight=0.0, delta=delta, gamma=gamma, asymmetric=False, **kwargs)


class HybridFocalLoss(_LossModule):
    r"""Hybrid Focal loss (Yeung et al. 2022, section 2.4): the symmetric focal and focal Tversky losses,
    each with its own parameters (the Unified Focal loss ties them).

    .. math:: L_{HF} = \lambda L_{mF}(\delta_F, \gamma_F) + (1 - \lambda) L_{mFT}(\delta_{FT}, \gamma_{FT})

    Args:
        weight: lambda in [0, 1] on the focal part.
        focal_delta, focal_gamma: the focal part's delta (alpha) and gamma >= 0 (defaults 0.7, 2).
        tversky_delta, tversky_gamma: the focal Tversky part's delta and gamma in [0, 1) (0.7, 0.75).
        Other arguments as :class:`UnifiedFocalLoss`.
    """

    def __init__(self, weight: float = 0.5, focal_delta: float = 0.7, focal_gamma: float = 2.0,
                 tversky_delta: float = 0.7, tversky_gamma: float = 0.75, batch_dice: bool = False,
                 smooth: float = 1.0, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        _check_unified(1.0, focal_delta, focal_gamma, None, None, smooth)
        _check_unified(0.0, tversky_delta, tversky_gamma, None, None, smooth)
        super().__init__(weight=check_unit_interval("weight (lambda)", weight), focal_delta=float(focal_delta),
                         focal_gamma=float(focal_gamma), tversky_delta=float(tversky_delta),
                         tversky_gamma=float(tversky_gamma), batch_dice=batch_dice, smooth=float(smooth),
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return hybrid_focal_loss(input, target, mask=mask, **self.options)
