"""Distribution-based losses: cross entropy and its weighted, balanced and focal forms.

All of them are one formula, a class-weighted, modulated cross entropy averaged over voxels:

    L = (1/N) sum_i v_i sum_c w_c (1 - p_ic)^gamma_c  (-y_ic log p_ic) / P

with class weights ``w_c``, focal exponents ``gamma_c``, optional voxel weights ``v_i`` and ``P`` the
number of binary problems (1 for exclusive classes; C for multilabel input, where the sum over the
channel and its complement is the binary cross entropy of that channel, so L is its channel mean).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ._inputs import Prepared, at_labels, check_choice, check_unit_interval, prepare
from ._stats import REDUCTIONS, BatchLoss, _power, _power_slope, class_roles, counted_mean, per_class

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


class _FocalTerm(torch.autograd.Function):
    """The focal term ``-log_p (1 - p)^gamma w`` elementwise, its modulation differentiated as
    :func:`safe_pow` does, for ``log_p`` and ``p`` at the target (:meth:`Prepared.at_target`).

    ``gamma`` and ``weight`` are given as :func:`modulated_cross_entropy` takes them and, for a label map
    (``labels``), looked up at the voxels' classes here, where each per-voxel copy is released as soon as it
    is used. The backward keeps the two partial derivatives, ``-(1 - p)^gamma w`` and
    ``log_p w d(1 - p)^gamma / dp``; the composed operations kept six tensors.
    """

    @staticmethod
    def forward(ctx, log_p: Tensor, p: Tensor, gamma: Union[float, Tensor], weight: Optional[Tensor],
                labels: Optional[Tensor]) -> Tensor:
        def at_target(values):
            return values if labels is None or not isinstance(values, Tensor) else at_labels(values, labels)

        base = 1 - p
        exponent = at_target(gamma)
        scale = _power(base, exponent)
        d_p = _power_slope(base, scale, exponent).mul_(log_p)  # in the buffer of base
        del exponent
        if weight is not None:  # (1, K, 1, ...) or (B, K, *S): at the target it fits the terms' shape
            weight = at_target(weight)
            d_p, scale = d_p.mul_(weight), scale.mul_(weight)
            del weight
        ctx.save_for_backward(scale, d_p)
        ctx.shapes = log_p.shape, p.shape
        return (log_p * scale).neg_()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        scale, d_p = ctx.saved_tensors
        log_p_shape, p_shape = ctx.shapes
        grad_log_p = (grad * scale).neg_().sum_to_size(log_p_shape)
        return grad_log_p, (grad * d_p).sum_to_size(p_shape), None, None, None


def modulated_cross_entropy(
    prep: Prepared,
    class_weight: Optional[Tensor] = None,
    gamma: Union[Tensor, float, None] = None,
    voxel_weight: Optional[Tensor] = None,
) -> BatchLoss:
    """The shared formula above on a prepared batch.

    The terms are formed at the target class only (:meth:`Prepared.at_target`: one value per voxel for
    label maps) and contracted with the target per voxel (:meth:`Prepared.target_sum`).

    Args:
        prep: the prepared batch.
        class_weight: (1, K, 1, ...) weights w_c, or None for 1; a (B, K, *S) map weights each class
            per voxel.
        gamma: focal exponents (a float or (1, K, 1, ...)); None or 0 for plain cross entropy.
        voxel_weight: (B, 1, *S) or (B, *S) weights v_i (distance maps), or None.
    """
    log_prob = prep.log_prob_at_target
    if gamma is not None and not (isinstance(gamma, (int, float)) and gamma == 0):
        terms = _FocalTerm.apply(log_prob, prep.prob_at_target, gamma, class_weight, prep.labels)
    else:
        terms = -log_prob if class_weight is None else -log_prob * prep.at_target(class_weight)
    per_voxel = prep.target_sum(terms)
    if voxel_weight is not None:
        per_voxel = per_voxel * voxel_weight.reshape(per_voxel.shape)
    return counted_mean(per_voxel.flatten(1).sum(1) / prep.num_problems, prep)


def _rare_weighted(prep: Prepared, rare_weight: float, common_weight: float) -> Tensor:
    """(1, K, 1, ...) weights: ``rare_weight`` on foreground (rare) classes, ``common_weight`` on background."""
    rare = class_roles(prep, None, None).view(1, -1, *([1] * (prep.scores.ndim - 2)))
    # Tensors of the compute dtype: Python scalars in torch.where would round the weights to float32.
    rare_w, common_w = (prep.scores.new_tensor(float(w)) for w in (rare_weight, common_weight))
    return torch.where(rare, rare_w, common_w)


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
    return modulated_cross_entropy(prep, _rare_weighted(prep, rare_weight, common_weight), gammas).reduce(reduction)


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
