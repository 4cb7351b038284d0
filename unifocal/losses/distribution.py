"""Distribution-based losses: cross entropy and its weighted, balanced and focal forms.

All of them are one formula, a class-weighted, modulated cross entropy averaged over voxels:

    L = (1/N) sum_i v_i sum_c w_c (1 - p_ic)^gamma_c  (-y_ic log p_ic) / P

with class weights ``w_c``, focal exponents ``gamma_c``, optional voxel weights ``v_i`` and ``P`` the
number of binary problems (1 for exclusive classes; C for multilabel input, where the sum over the
channel and its complement is the binary cross entropy of that channel, so L is its channel mean).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from torch import Tensor, nn

from ._inputs import Prepared, check_choice, check_unit_interval, prepare
from ._stats import REDUCTIONS, BatchLoss, class_roles, class_statistics, counted_mean, per_class

__all__ = [
    "modulated_cross_entropy",
    "cross_entropy_loss",
    "weighted_cross_entropy_loss",
    "balanced_cross_entropy_loss",
    "focal_loss",
    "CrossEntropyLoss",
    "WeightedCrossEntropyLoss",
    "BalancedCrossEntropyLoss",
    "FocalLoss",
]

Gamma = Union[float, Sequence[float]]


def modulated_cross_entropy(
    prep: Prepared,
    class_weight: Optional[Sequence[float]] = None,
    gamma: Union[float, Sequence[float]] = 0.0,
    voxel_weight: Optional[Tensor] = None,
) -> BatchLoss:
    """The shared formula above on a prepared batch.

    The voxel sums are per-class sums (:func:`unifocal.losses._stats.class_statistics`); the class weights
    apply to them, so no per-voxel weight map is formed.

    Args:
        prep: the prepared batch.
        class_weight: weights w_c, one per class of ``prep`` (:func:`per_class`), or None for 1.
        gamma: focal exponents, one value or one per class; 0 for plain cross entropy.
        voxel_weight: (B, 1, *S) or (B, *S) weights v_i (distance maps), or (B, K, *S) per class and
            voxel; None for 1.
    """
    sums = class_statistics(prep, cross_entropy=True, gamma=gamma, voxel_weight=voxel_weight).cross_entropy
    if class_weight is not None:
        sums = sums * sums.new_tensor(class_weight)
    return counted_mean(sums.sum(1) / prep.num_problems, prep)


def role_weights(rare: Sequence[bool], rare_weight: float, common_weight: float) -> tuple[float, ...]:
    """Per-class weights from :func:`class_roles`: ``rare_weight`` on rare classes, ``common_weight`` on common."""
    return tuple(rare_weight if is_rare else common_weight for is_rare in rare)


def check_focal_gamma(gamma: Gamma, name: str = "gamma", tversky_exponent: bool = False) -> Gamma:
    """Each gamma must be finite and >= 0; where it also sets a Tversky exponent 1 - gamma, < 1."""
    values = [float(g) for g in (gamma if isinstance(gamma, (list, tuple)) else [gamma])]
    upper = 1.0 if tversky_exponent else float("inf")
    for g in values:
        if not (0.0 <= g < upper):
            interval = "[0, 1) (it sets the Tversky exponent 1 - gamma)" if tversky_exponent else "[0, inf)"
            raise ValueError(f"{name} must lie in {interval}; got {g}")
    return tuple(values) if isinstance(gamma, (list, tuple)) else values[0]


def cross_entropy_loss(
    input: Tensor,
    target: Tensor,
    *,
    class_weight: Optional[Sequence[float]] = None,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross entropy ``-(1/N) sum_i sum_c w_c y_ic log p_ic`` (binary cross entropy per channel, averaged
    over channels, with ``multilabel=True``). See :class:`CrossEntropyLoss`."""
    check_choice("reduction", reduction, REDUCTIONS)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    weight = None if class_weight is None else per_class(class_weight, prep, "class_weight")
    return modulated_cross_entropy(prep, weight).reduce(reduction)


def weighted_cross_entropy_loss(input: Tensor, target: Tensor, *, beta: float = 2.0, **options) -> Tensor:
    """Weighted cross entropy: ``beta`` on the foreground (rare) classes, 1 on the background;
    ``beta > 1`` trades false positives for fewer false negatives. See :class:`WeightedCrossEntropyLoss`."""
    return _foreground_weighted(input, target, float(beta), 1.0, **options)


def balanced_cross_entropy_loss(input: Tensor, target: Tensor, *, beta: float = 0.7, **options) -> Tensor:
    """Balanced cross entropy: ``beta`` on the foreground, ``1 - beta`` on the background.
    See :class:`BalancedCrossEntropyLoss`."""
    beta = check_unit_interval("beta", beta)
    return _foreground_weighted(input, target, beta, 1.0 - beta, **options)


def _foreground_weighted(
    input: Tensor,
    target: Tensor,
    rare_weight: float,
    common_weight: float,
    *,
    gamma: Gamma = 0.0,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    if rare_weight < 0 or common_weight < 0:
        raise ValueError(f"class weights must be >= 0; got {rare_weight} (foreground), {common_weight} (background)")
    check_choice("reduction", reduction, REDUCTIONS)
    prep = prepare(input, target, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index, mask=mask)
    gammas = per_class(gamma, prep, "gamma")
    return modulated_cross_entropy(prep, role_weights(class_roles(prep, None, None), rare_weight, common_weight), gammas).reduce(reduction)


def focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    gamma: Gamma = 2.0,
    alpha: Optional[float] = None,
    **options,
) -> Tensor:
    """Focal loss (Lin et al. 2017): ``-(1/N) sum_i sum_c a_c (1 - p_ic)^gamma y_ic log p_ic``, with
    ``a_c = alpha`` on the foreground and ``1 - alpha`` on the background (or 1 when ``alpha`` is None).
    See :class:`FocalLoss`."""
    gamma = check_focal_gamma(gamma)
    if alpha is None:
        return _foreground_weighted(input, target, 1.0, 1.0, gamma=gamma, **options)
    alpha = check_unit_interval("alpha", alpha)
    return _foreground_weighted(input, target, alpha, 1.0 - alpha, gamma=gamma, **options)


class _LossModule(nn.Module):
    """Thin module over a functional loss: validates the options once and stores them."""

    def __init__(self, **options) -> None:
        super().__init__()
        check_choice("reduction", options.get("reduction", "mean"), REDUCTIONS)
        self.options = options

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class CrossEntropyLoss(_LossModule):
    r"""Cross entropy for segmentation, from logits, computed in float32.

    .. math:: L = -\frac{1}{N} \sum_i \sum_c w_c\, y_{ic} \log p_{ic}

    With ``multilabel=True`` each channel is a sigmoid binary problem and L is the binary cross entropy
    averaged over channels and voxels (nnU-Net's region-mode BCE). Voxels carrying ``ignore_index`` or
    outside ``mask`` count nowhere; the mean is over the voxels that remain.

    Args:
        class_weight: optional per-class weights w_c (length C).
        from_logits: input holds logits (default) rather than probabilities.
        multilabel: independent sigmoid channels (regions) instead of softmax classes.
        ignore_index: label value to ignore (label-map targets).
        reduction: "mean" (over all counted voxels of the batch), "sum" or "none" (per-sample means).
    """

    def __init__(
        self,
        class_weight: Optional[Sequence[float]] = None,
        from_logits: bool = True,
        multilabel: bool = False,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        if class_weight is not None and any(float(w) < 0 for w in class_weight):
            raise ValueError(f"class_weight must be >= 0; got {class_weight}")
        super().__init__(class_weight=class_weight, from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return cross_entropy_loss(input, target, mask=mask, **self.options)


class WeightedCrossEntropyLoss(_LossModule):
    r"""Weighted cross entropy (Ronneberger 2015; Jadon 2020's survey form): the foreground (every class
    but the background; each channel in multilabel mode) weighted by ``beta``, the background by 1.

    .. math:: L = -\frac{1}{N} \sum_i \Big[\beta \sum_{c \ge 1} y_{ic} \log p_{ic} + y_{i0} \log p_{i0}\Big]

    Args:
        beta: foreground weight, >= 0; beta > 1 gives fewer false negatives.
        Other arguments as :class:`CrossEntropyLoss`.
    """

    def __init__(self, beta: float = 2.0, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        if not float(beta) >= 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        super().__init__(beta=float(beta), from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return weighted_cross_entropy_loss(input, target, mask=mask, **self.options)


class BalancedCrossEntropyLoss(_LossModule):
    r"""Balanced cross entropy (Xie & Tu 2015): ``beta`` on the foreground, ``1 - beta`` on the background.

    .. math:: L = -\frac{1}{N} \sum_i \Big[\beta \sum_{c \ge 1} y_{ic} \log p_{ic} + (1-\beta) y_{i0} \log p_{i0}\Big]

    Args:
        beta: foreground weight in [0, 1].
        Other arguments as :class:`CrossEntropyLoss`.
    """

    def __init__(self, beta: float = 0.7, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__(beta=check_unit_interval("beta", beta), from_logits=from_logits, multilabel=multilabel,
                         ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return balanced_cross_entropy_loss(input, target, mask=mask, **self.options)


class FocalLoss(_LossModule):
    r"""Focal loss (Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017).

    .. math:: L = -\frac{1}{N} \sum_i \sum_c a_c (1 - p_{ic})^{\gamma_c}\, y_{ic} \log p_{ic}

    ``a_c = alpha`` on the foreground classes and ``1 - alpha`` on the background (alpha-balanced form),
    or 1 everywhere with ``alpha=None``. The sum runs over classes and the mean over voxels; MONAI's
    FocalLoss also averages over the class axis (a factor C smaller).

    Args:
        gamma: focusing parameter >= 0, or one per class (per channel in multilabel mode).
        alpha: foreground weight in [0, 1], or None.
        Other arguments as :class:`CrossEntropyLoss`.
    """

    def __init__(self, gamma: Gamma = 2.0, alpha: Optional[float] = None, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        if alpha is not None:
            alpha = check_unit_interval("alpha", alpha)
        super().__init__(gamma=check_focal_gamma(gamma), alpha=alpha, from_logits=from_logits,
                         multilabel=multilabel, ignore_index=ignore_index, reduction=reduction)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return focal_loss(input, target, mask=mask, **self.options)
