"""Shared arithmetic: soft confusion sums, their DDP all-gather, reductions and a gradient-safe power.

Soft confusion sums per class ``c`` (spec: Building blocks), over the voxels that count:
``TP_c = sum_i y_ic p_ic``, ``FP_c = sum_i (1 - y_ic) p_ic``, ``FN_c = sum_i y_ic (1 - p_ic)``.
They are summed over the spatial axes per sample, or over the batch too with ``batch_dice=True``; under
``torch.distributed`` the batch sums are all-gathered across ranks (as nnU-Net's batch Dice does), so
every rank sees the statistics of the global batch.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._inputs import Prepared, check_choice

__all__ = [
    "ConfusionSums",
    "confusion_sums",
    "BatchLoss",
    "voxel_mean",
    "counted_mean",
    "class_mean",
    "safe_pow",
    "per_class",
    "REDUCTIONS",
    "tversky_distance",
    "class_roles",
    "check_class_sets",
]

REDUCTIONS = ("mean", "sum", "none")

# Below this base, powers with exponent < 1 keep their exact value but pass no gradient; at it the
# gradient is exponent * 1e-6 ** (exponent - 1), finite (e.g. 500 for exponent 0.5).
_POW_FLOOR = 1e-6


class ConfusionSums(NamedTuple):
    """Soft TP/FP/FN, each (B, K) per sample, or (1, K) with batch_dice."""

    tp: Tensor
    fp: Tensor
    fn: Tensor


class _AllGatherSum(torch.autograd.Function):
    """Sum of a tensor over all ranks; the backward sums the gradients of all ranks (like nnU-Net's
    AllGatherGrad), so that after DDP averages the gradients each rank holds the exact gradient of the
    loss on the global batch."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def confusion_sums(prep: Prepared, batch_dice: bool = False, classes: Union[slice, Tensor, None] = None) -> ConfusionSums:
    """Soft TP/FP/FN of ``prep`` per sample (B, K), or over the (global, under DDP) batch (1, K).

    ``classes`` selects classes first (e.g. ``prep.foreground_channels``); all classes by default.
    FP and FN are derived from the sums of p and y; TP and the sums of y are target contractions
    (:meth:`Prepared.class_sums`), which form no (B, K, *S) product for label maps.
    """
    tp = prep.class_sums(prep.prob_at_target, classes)
    stacked = torch.stack([tp, prep.predicted_sums(classes), prep.class_sums(None, classes)])
    if batch_dice:
        stacked = stacked.sum(1, keepdim=True)
        if _distributed():
            stacked = _AllGatherSum.apply(stacked)
    tp, predicted, actual = stacked.unbind(0)
    return ConfusionSums(tp, (predicted - tp).clamp_min(0), (actual - tp).clamp_min(0))


class BatchLoss(NamedTuple):
    """A loss value in both reduced forms: ``mean`` (scalar, as the loss defines its batch mean) and
    ``per_sample`` (B,). Parts combine linearly: ``a.scaled(w1).plus(b.scaled(w2))``."""

    mean: Tensor
    per_sample: Tensor

    def scaled(self, factor: float) -> "BatchLoss":
        return BatchLoss(self.mean * factor, self.per_sample * factor)

    def plus(self, other: "BatchLoss") -> "BatchLoss":
        return BatchLoss(self.mean + other.mean, self.per_sample + other.per_sample)

    def reduce(self, reduction: str) -> Tensor:
        """"mean": the batch mean; "sum": sum of the per-sample values; "none": per-sample values (B,)."""
        check_choice("reduction", reduction, REDUCTIONS)
        if reduction == "mean":
            return self.mean
        if reduction == "sum":
            return self.per_sample.sum()
        return self.per_sample


def voxel_mean(per_voxel: Tensor, prep: Prepared) -> BatchLoss:
    """Mean over the voxels that count of a (B, *S) or (B, 1, *S) map whose ignored voxels are 0."""
    return counted_mean(per_voxel.flatten(1).sum(1), prep)


def counted_mean(sums: Tensor, prep: Prepared) -> BatchLoss:
    """Voxel mean from (B,) per-sample sums over the voxels that count.

    ``mean`` divides by all counted voxels of the batch (as nnU-Net's and torch's cross entropy do);
    ``per_sample`` divides each sample by its own count. A sample without counted voxels gives 0.
    """
    counts = prep.voxel_counts()
    return BatchLoss(sums.sum() / counts.sum().clamp_min(1), sums / counts.clamp_min(1))


def class_mean(per_class_loss: Tensor, batch_size: int) -> BatchLoss:
    """Mean over classes of a (B, K) per-sample or (1, K) batch-level loss."""
    per_sample = per_class_loss.mean(1)
    if per_sample.shape[0] != batch_size:
        per_sample = per_sample.expand(batch_size)
    return BatchLoss(per_sample.mean(), per_sample)


def _power(base: Tensor, exponent: Union[float, Tensor]) -> Tensor:
    """``base ** exponent`` for bases in [0, 1]. A tensor exponent (one per voxel, from a per-class table)
    makes torch's pow several times slower than ``exp(exponent * log(base))``, which is used then; its only
    NaN is ``0 * log 0`` (exponent 0 on a zero base), whose power is 1."""
    if not isinstance(exponent, Tensor):
        return base.pow(exponent)
    log = torch.log(base)
    fits = exponent.ndim <= log.ndim and all(e in (1, b) for e, b in zip(exponent.shape[::-1], log.shape[::-1]))
    log = log.mul_(exponent) if fits else log * exponent
    return log.exp_().nan_to_num_(nan=1.0)


def _power_slope(base: Tensor, power: Tensor, exponent: Union[float, Tensor]) -> Tensor:
    """Derivative of ``power = base ** exponent`` as safe_pow defines it: ``exponent * power / base`` (that
    is ``exponent * base ** (exponent - 1)``) where ``base >= _POW_FLOOR``, 0 below. Overwrites ``base``:
    its buffer becomes the slope."""
    below = base < _POW_FLOOR
    return torch.div(power, base.clamp_min_(_POW_FLOOR), out=base).mul_(exponent).masked_fill_(below, 0)


class _SafePow(torch.autograd.Function):
    """:func:`safe_pow` with the power computed once and reused by the backward; no gradient for the
    exponent (a hyperparameter)."""

    @staticmethod
    def forward(ctx, base: Tensor, exponent: Union[float, Tensor]) -> Tensor:
        power = _power(base, exponent)
        ctx.exponent = exponent if not isinstance(exponent, Tensor) else None
        ctx.save_for_backward(base, power, exponent if isinstance(exponent, Tensor) else None)
        return power

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        base, power, exponent = ctx.saved_tensors
        exponent = ctx.exponent if exponent is None else exponent
        return (grad * _power_slope(base.clone(), power, exponent)).sum_to_size(base.shape), None


def safe_pow(base: Tensor, exponent: Union[float, Tensor]) -> Tensor:
    """``base ** exponent`` for base in [0, 1], with its value (to round-off) but a bounded gradient.

    ``x ** e`` with ``e < 1`` has an infinite derivative at 0 (a perfect prediction, TI -> 1, or a
    saturated probability p -> 1): below ``_POW_FLOOR`` the gradient is stopped instead. The exponent
    gets no gradient.
    """
    return _SafePow.apply(base, exponent)


def per_class(value: Union[float, Sequence[float], Tensor], prep: Prepared, name: str) -> Tensor:
    """Broadcast a scalar or per-channel sequence to a (1, K, 1, ...) tensor over ``prep``'s classes.

    For multilabel input a per-channel value applies to the channel and its complement.
    """
    ndim = prep.scores.ndim
    values = torch.as_tensor(value, dtype=prep.scores.dtype, device=prep.scores.device).flatten()
    channels = prep.num_problems if prep.multilabel else prep.num_classes
    if values.numel() == 1:
        values = values.expand(prep.num_classes)
    elif values.numel() != channels:
        raise ValueError(f"{name} has {values.numel()} values but the input has {channels} channels")
    elif prep.multilabel:
        values = values.repeat(2)
    return values.view(1, -1, *([1] * (ndim - 2)))


def tversky_distance(sums: ConfusionSums, fp_weight: float, fn_weight: float, smooth: float) -> Tensor:
    """``1 - TI`` with ``TI = (TP + s) / (TP + fp_weight FP + fn_weight FN + s)``.

    Computed as ``(a FP + b FN) / (TP + a FP + b FN + s)`` so that it stays exact as TI -> 1, where
    ``1 - TI`` would cancel. Weights 0.5/0.5 give the Dice loss (with smoothing 2s in the usual form),
    1/1 the Jaccard loss.
    """
    errors = fp_weight * sums.fp + fn_weight * sums.fn
    return errors / (sums.tp + errors + smooth)


def class_roles(prep: Prepared, common_classes, rare_classes) -> Tensor:
    """(K,) bool, True for rare classes of ``prep``.

    Exclusive classes: ``common_classes`` default to (0,) (the background) and ``rare_classes`` to
    the rest; giving one set makes the other its complement; giving both requires a partition.
    Multilabel input: each channel is rare and its complement common; the sets must be left unset.
    """
    k = prep.num_classes
    if prep.multilabel:
        if common_classes is not None or rare_classes is not None:
            raise ValueError(
                "common_classes/rare_classes apply to exclusive classes; with multilabel=True every channel is "
                "its own binary problem (its complement common, the channel rare)"
            )
        rare = torch.zeros(k, dtype=torch.bool, device=prep.scores.device)
        rare[prep.foreground_channels] = True
        return rare
    for name, classes in (("common_classes", common_classes), ("rare_classes", rare_classes)):
        if classes is not None and any(c >= k for c in classes):
            raise ValueError(f"{name}={tuple(classes)} names a class the input lacks (it has {k} channels)")
    if rare_classes is None:
        common = set(common_classes if common_classes is not None else (0,))
        rare_set = set(range(k)) - common
    else:
        rare_set = set(rare_classes)
        common = set(common_classes) if common_classes is not None else set(range(k)) - rare_set
        if common | rare_set != set(range(k)):
            missing = sorted(set(range(k)) - common - rare_set)
            raise ValueError(f"classes {missing} are neither common nor rare; the two sets must cover all {k} classes")
    rare = torch.zeros(k, dtype=torch.bool, device=prep.scores.device)
    rare[sorted(rare_set)] = True
    return rare


def check_class_sets(common_classes, rare_classes) -> tuple:
    """Validate class index sets at construction time; returns them as tuples (or None)."""
    sets = []
    for name, classes in (("common_classes", common_classes), ("rare_classes", rare_classes)):
        if classes is None:
            sets.append(None)
            continue
        classes = tuple(int(c) for c in classes)
        if any(c < 0 for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"{name} must hold distinct non-negative class indices; got {classes}")
        sets.append(classes)
    if sets[0] is not None and sets[1] is not None and set(sets[0]) & set(sets[1]):
        raise ValueError(f"common_classes {sets[0]} and rare_classes {sets[1]} overlap: {sorted(set(sets[0]) & set(sets[1]))}")
    return tuple(sets)
