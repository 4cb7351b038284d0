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
puts its ``weight`` on the Tversky part instead (the same at the default 0.5). Differences from the public
ports (any number of classes, regions, logits, absent classes, bounded gradients): docs/losses.md.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from ._base import SegmentationLoss, check_bool, check_classes, check_number, check_unit_interval, functional
from ._inputs import Prepared
from ._stats import (
    BatchLoss,
    class_mean,
    class_roles,
    class_statistics,
    confusion_sums,
    per_class,
    role_weights,
    safe_pow,
    scalar_or_table,
    tversky_distance,
    weighted_sum,
)
from .distribution import check_focal_gamma, modulated_cross_entropy
from .region import check_smooth

__all__ = ["UnifiedFocalLoss", "AsymmetricUnifiedFocalLoss", "SymmetricUnifiedFocalLoss",
           "AsymmetricFocalLoss", "SymmetricFocalLoss", "AsymmetricFocalTverskyLoss",
           "SymmetricFocalTverskyLoss", "HybridFocalLoss", "unified_focal_loss", "hybrid_focal_loss"]

Gamma = Union[float, Sequence[float]]


def _unified(loss, prep: Prepared, rare: tuple[bool, ...], focal: tuple, tversky: tuple) -> BatchLoss:
    """``weight`` times the focal part (``focal = (delta, gamma)``: delta-weighted rare and common classes, the
    focal modulation in the statistics) plus ``1 - weight`` times the focal Tversky part (``tversky = (delta,
    exponent)``: ``mean_c (1 - TI_c)^exponent_c``, delta on false negatives), both from one statistics pass;
    a part with weight 0 is not computed."""
    stats = class_statistics(prep, cross_entropy=loss.weight > 0, gamma=focal[1], overlap=loss.weight < 1)

    def focal_part() -> BatchLoss:
        return modulated_cross_entropy(stats, prep, role_weights(rare, focal[0], 1.0 - focal[0]))

    def focal_tversky_part() -> BatchLoss:
        sums = confusion_sums(stats, prep, loss.batch_dice)
        distance = tversky_distance(sums, 1.0 - tversky[0], tversky[0], loss.smooth)
        return class_mean(safe_pow(distance, scalar_or_table(tversky[1], distance)), prep.batch_size)

    return weighted_sum([(loss.weight, focal_part), (1.0 - loss.weight, focal_tversky_part)])


class UnifiedFocalLoss(SegmentationLoss):
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
        batch_dice: TP/FP/FN over the batch (nnU-Net's batch_dice); over all ranks with ``ddp=True``.
        smooth: Tversky smoothing (> 0), see :mod:`unifocal.losses.region`.
        multilabel: independent sigmoid channels (regions, BraTS/KiTS23 in nnU-Net); each channel is a
            binary problem and the loss is averaged over channels.
        reduction: "mean" (batch mean: focal part over all counted voxels), "sum" or "none" (per sample).
        from_logits, ignore_index, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(
        self,
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
        reduction: str = "mean",
        ddp: bool = False,
    ) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.weight = check_unit_interval("weight (lambda)", weight)
        self.delta = check_unit_interval("delta", delta)
        self.gamma = check_focal_gamma(gamma, tversky_exponent=self.weight < 1)
        self.asymmetric = check_bool("asymmetric", asymmetric)
        self.common_classes = check_classes("common_classes", common_classes)
        self.rare_classes = check_classes("rare_classes", rare_classes)
        self.batch_dice = check_bool("batch_dice", batch_dice)
        self.smooth = check_smooth(smooth)
        both = set(self.common_classes or ()) & set(self.rare_classes or ())
        if both:
            raise ValueError(f"common_classes {self.common_classes} and rare_classes {self.rare_classes} overlap: "
                             f"{sorted(both)}")
        if self.multilabel and (self.common_classes is not None or self.rare_classes is not None):
            raise ValueError("common_classes/rare_classes apply to exclusive classes, not multilabel=True")

    def compute(self, prep: Prepared) -> BatchLoss:
        rare = class_roles(prep, self.common_classes, self.rare_classes)
        gamma = per_class(self.gamma, prep, "gamma")
        # asymmetric: the focal modulation suppresses common classes only, the Tversky power enhances rare only
        focal_gamma = tuple(0.0 if self.asymmetric and r else g for r, g in zip(rare, gamma))
        exponent = tuple(1.0 if self.asymmetric and not r else 1.0 - g for r, g in zip(rare, gamma))
        return _unified(self, prep, rare, (self.delta, focal_gamma), (self.delta, exponent))


class AsymmetricUnifiedFocalLoss(UnifiedFocalLoss):
    """Asymmetric Unified Focal loss: :class:`UnifiedFocalLoss` with ``asymmetric=True`` (the paper's
    recommended form; defaults weight=0.5, delta=0.6, gamma=0.5).

    Args: as :class:`UnifiedFocalLoss`, without ``asymmetric``.
    """

    def __init__(self, *, weight: float = 0.5, delta: float = 0.6, gamma: Gamma = 0.5,
                 common_classes: Optional[Sequence[int]] = None, rare_classes: Optional[Sequence[int]] = None,
                 batch_dice: bool = False, smooth: float = 1.0, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(weight=weight, delta=delta, gamma=gamma, asymmetric=True, common_classes=common_classes,
                         rare_classes=rare_classes, batch_dice=batch_dice, smooth=smooth,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)


class SymmetricUnifiedFocalLoss(UnifiedFocalLoss):
    """Symmetric Unified Focal loss: :class:`UnifiedFocalLoss` with ``asymmetric=False``.

    Args: as :class:`UnifiedFocalLoss`, without ``asymmetric``.
    """

    def __init__(self, *, weight: float = 0.5, delta: float = 0.6, gamma: Gamma = 0.5,
                 common_classes: Optional[Sequence[int]] = None, rare_classes: Optional[Sequence[int]] = None,
                 batch_dice: bool = False, smooth: float = 1.0, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(weight=weight, delta=delta, gamma=gamma, asymmetric=False, common_classes=common_classes,
                         rare_classes=rare_classes, batch_dice=batch_dice, smooth=smooth,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)


class AsymmetricFocalLoss(UnifiedFocalLoss):
    r"""Modified asymmetric focal loss (the focal part of the asymmetric Unified Focal loss):

    .. math:: L_{maF} = \frac{1}{N} \sum_i \Big[\sum_{c \in R} \delta\, CE_{ic}
              + \sum_{c \in K} (1 - \delta)(1 - p_{ic})^{\gamma_c} CE_{ic}\Big]

    Defaults delta=0.7, gamma=2 as mlyg's ``asymmetric_focal_loss``. Other arguments as
    :class:`UnifiedFocalLoss` (no ``weight``, ``batch_dice`` or ``smooth``).
    """

    def __init__(self, *, delta: float = 0.7, gamma: Gamma = 2.0, common_classes: Optional[Sequence[int]] = None,
                 rare_classes: Optional[Sequence[int]] = None, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(weight=1.0, delta=delta, gamma=gamma, asymmetric=True, common_classes=common_classes,
                         rare_classes=rare_classes, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction, ddp=ddp)


class SymmetricFocalLoss(UnifiedFocalLoss):
    r"""Modified symmetric focal loss: :math:`\frac{1}{N}\sum_i \sum_c w_c (1 - p_{ic})^{\gamma_c} CE_{ic}`,
    ``w_c = delta`` on rare and ``1 - delta`` on common classes; with delta = alpha and gamma = 2 the
    alpha-balanced focal loss of Lin et al. Defaults delta=0.7, gamma=2 (mlyg). Other arguments as
    :class:`UnifiedFocalLoss` (no ``weight``, ``batch_dice`` or ``smooth``).
    """

    def __init__(self, *, delta: float = 0.7, gamma: Gamma = 2.0, common_classes: Optional[Sequence[int]] = None,
                 rare_classes: Optional[Sequence[int]] = None, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(weight=1.0, delta=delta, gamma=gamma, asymmetric=False, common_classes=common_classes,
                         rare_classes=rare_classes, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction, ddp=ddp)


class AsymmetricFocalTverskyLoss(UnifiedFocalLoss):
    r"""Modified asymmetric focal Tversky loss:
    :math:`\operatorname{mean}_c [c \in K: 1 - TI_c;\ c \in R: (1 - TI_c)^{1 - \gamma_c}]`.
    Defaults delta=0.7, gamma=0.75 as mlyg's ``asymmetric_focal_tversky_loss``. Other arguments as
    :class:`UnifiedFocalLoss` (no ``weight``).
    """

    def __init__(self, *, delta: float = 0.7, gamma: Gamma = 0.75, common_classes: Optional[Sequence[int]] = None,
                 rare_classes: Optional[Sequence[int]] = None, batch_dice: bool = False, smooth: float = 1.0,
                 from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(weight=0.0, delta=delta, gamma=gamma, asymmetric=True, common_classes=common_classes,
                         rare_classes=rare_classes, batch_dice=batch_dice, smooth=smooth,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)


class SymmetricFocalTverskyLoss(UnifiedFocalLoss):
    r"""Modified symmetric focal Tversky loss :math:`\operatorname{mean}_c (1 - TI_c)^{1 - \gamma_c}`;
    ``1 - gamma = 1/gamma_FT`` gives Abraham & Khan's focal Tversky loss. Defaults delta=0.7, gamma=0.75 (mlyg).
    Other arguments as :class:`UnifiedFocalLoss` (no ``weight``).
    """

    def __init__(self, *, delta: float = 0.7, gamma: Gamma = 0.75, common_classes: Optional[Sequence[int]] = None,
                 rare_classes: Optional[Sequence[int]] = None, batch_dice: bool = False, smooth: float = 1.0,
                 from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(weight=0.0, delta=delta, gamma=gamma, asymmetric=False, common_classes=common_classes,
                         rare_classes=rare_classes, batch_dice=batch_dice, smooth=smooth,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)


class HybridFocalLoss(SegmentationLoss):
    r"""Hybrid Focal loss (Yeung et al. 2022, section 2.4): the symmetric focal and focal Tversky losses,
    each with its own parameters (the Unified Focal loss ties them).

    .. math:: L_{HF} = \lambda L_{mF}(\delta_F, \gamma_F) + (1 - \lambda) L_{mFT}(\delta_{FT}, \gamma_{FT})

    Args:
        weight: lambda in [0, 1] on the focal part.
        focal_delta, focal_gamma: the focal part's delta (alpha) and gamma >= 0 (defaults 0.7, 2).
        tversky_delta, tversky_gamma: the focal Tversky part's delta and gamma in [0, 1) (0.7, 0.75).
        batch_dice, smooth, from_logits, multilabel, ignore_index, reduction, ddp: as
            :class:`UnifiedFocalLoss`.
    """

    def __init__(self, *, weight: float = 0.5, focal_delta: float = 0.7, focal_gamma: float = 2.0,
                 tversky_delta: float = 0.7, tversky_gamma: float = 0.75, batch_dice: bool = False,
                 smooth: float = 1.0, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.weight = check_unit_interval("weight (lambda)", weight)
        self.focal_delta = check_unit_interval("focal_delta", focal_delta)
        self.focal_gamma = check_number("focal_gamma", focal_gamma, 0.0)
        self.tversky_delta = check_unit_interval("tversky_delta", tversky_delta)
        self.tversky_gamma = check_number("tversky_gamma", tversky_gamma, 0.0, 1.0, high_open=True,
                                          why=" (it sets the Tversky exponent 1 - gamma)")
        self.batch_dice = check_bool("batch_dice", batch_dice)
        self.smooth = check_smooth(smooth)

    def compute(self, prep: Prepared) -> BatchLoss:
        exponent = (1.0 - self.tversky_gamma,) * prep.num_classes
        return _unified(self, prep, class_roles(prep), (self.focal_delta, self.focal_gamma),
                        (self.tversky_delta, exponent))


unified_focal_loss = functional(UnifiedFocalLoss)
hybrid_focal_loss = functional(HybridFocalLoss)
