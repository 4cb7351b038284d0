"""Validation and preparation of (input, target) pairs, shared by every loss.

Every loss in :mod:`unifocal.losses` reduces its input to one :class:`Prepared` record: class
probabilities and log-probabilities, a one-hot (or soft) target over the same classes, an optional
mask of the voxels that count, and the number of independent classification problems. Losses then
only write their own formula.

Label maps are kept as labels: the one-hot target (K times their size) is formed only when a loss reads
``Prepared.target``. Formulas that only need each voxel's own class go through the contractions
``at_target`` (the values at the target class), ``target_sum`` (their sum over classes per voxel, weighted
by the target) and ``class_sums`` (per-class sums weighted by the target), which gather and scatter along
the label map instead; for one-hot/soft targets the same calls multiply by the target, so one formula
serves both forms.

Exclusive classes (default): ``prob = softmax(input)`` over ``C`` channels, background included.

Multi-label / region mode (``multilabel=True``): channel ``c`` is a binary problem with foreground
probability ``sigmoid(x_c)``. It is represented as ``K = 2C`` exclusive "classes": the ``C``
complements ("not c", probability ``1 - p_c``) first, then the ``C`` channels themselves, with
``num_problems = C``. A loss that sums over classes and divides by ``num_problems`` then averages the
per-channel binary losses, as the Unified Focal loss and nnU-Net's region training do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["Prepared", "prepare", "at_labels", "compute_dtype", "check_unit_interval", "check_choice"]

# Probabilities are clamped at this value before a log only when they were given as probabilities
# (from_logits=False); logits always go through log_softmax / logsigmoid.
_TINY = {torch.float32: torch.finfo(torch.float32).tiny, torch.float64: torch.finfo(torch.float64).tiny}


class _SoftmaxAtLabels(torch.autograd.Function):
    """Softmax statistics of logits ``x`` for a label map ``t``, with a hand-written backward: the label-map
    path of :class:`Prepared` from logits.

    Forward: ``p = softmax(x)``, ``log_prob_at_labels_i = log p_{i t_i}`` (from log_softmax) and the class
    sums ``sums_bc = sum_i m_i p_bic`` (mask ``m``). Backward, with ``g_i``, ``G_c`` (per sample) and
    ``P_ic`` the gradients of the loss with respect to the three outputs:

        dL/dx_ic = g_i [c = t_i] + p_ic (m_i (G_c - sum_k G_k p_ik) + P_ic - sum_k P_ik p_ik - g_i)

    Losses written with the contractions only need ``g`` and ``G``; then the backward keeps one (B, K, *S)
    tensor (``p``) and writes one (the gradient, in place), where autograd's chain (log_softmax, exp,
    gather, sum) keeps two and writes five.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, mask: Optional[Tensor]):
        prob = F.log_softmax(logits, 1)
        log_prob_at_labels = prob.gather(1, labels)
        prob = prob.exp_()
        sums = (prob if mask is None else prob * mask).flatten(2).sum(2)
        ctx.save_for_backward(prob, labels, mask)
        ctx.set_materialize_grads(False)
        return prob, log_prob_at_labels, sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_prob: Optional[Tensor], grad_at_labels: Optional[Tensor], grad_sums: Optional[Tensor]):
        prob, labels, mask = ctx.saved_tensors
        b, k = prob.shape[:2]
        inner = None  # the bracket above, built in place in one (B, K, *S) tensor
        if grad_sums is not None:
            # m_i sum_k G_k p_ik (+ g_i), per voxel: a (B, 1, K) x (B, K, N) product, no (B, K, *S) temporary
            shift = torch.bmm(grad_sums.unsqueeze(1), prob.reshape(b, k, -1)).view(b, 1, *prob.shape[2:])
            if mask is not None:
                shift.mul_(mask)
            if grad_at_labels is not None:
                shift.add_(grad_at_labels)
            per_class = grad_sums.view(b, k, *([1] * (prob.ndim - 2)))
            inner = per_class - shift if mask is None else torch.mul(per_class, mask).sub_(shift)
        if grad_prob is not None:
            centred = grad_prob - (grad_prob * prob).sum(1, keepdim=True)
            inner = centred if inner is None else inner.add_(centred)
        if grad_at_labels is not None and grad_sums is None:
            inner = grad_at_labels.neg().expand_as(prob).clone() if inner is None else inner.sub_(grad_at_labels)
        if inner is None:
            return None, None, None
        grad = inner.mul_(prob)
        if grad_at_labels is not None:
            grad.scatter_add_(1, labels, grad_at_labels)
        return grad, None, None


def at_labels(values: Tensor, labels: Tensor) -> Tensor:
    """``values`` (B, K, *S), or broadcasting to it, at each voxel's class in ``labels`` (B, 1, *S) int64:
    a (B, 1, *S) tensor (:meth:`Prepared.at_target` for label maps). A (B, 1, *S) map is the same for every
    class and is returned as it is."""
    if values.shape[1] == 1:
        return values
    if values.numel() == values.shape[1]:  # one value per class: a table look-up
        return values.flatten().index_select(0, labels.flatten()).view(labels.shape)
    return values.expand(labels.shape[0], -1, *labels.shape[2:]).gather(1, labels)


def _label_class_sums(index: Tensor, weights: Tensor, num_classes: int, scatter: Optional[bool] = None) -> Tensor:
    """(B, K) sums of ``weights`` (B, N) per class ``index`` (B, N) (int64).

    On the CPU a scatter-add: one serial pass. On an accelerator a scatter-add would serialise on the
    atomic additions into K addresses, so there the voxels are compared with each class and summed: K
    memory-bound reductions with (B, N) temporaries (which torch.compile fuses into one). ``scatter``
    overrides the choice (tests).
    """
    if scatter if scatter is not None else index.device.type == "cpu":
        return weights.new_zeros(index.shape[0], num_classes).scatter_add(1, index, weights)
    return torch.stack([torch.where(index == c, weights, 0).sum(1) for c in range(num_classes)], 1)


def _cached(method):
    """A read-only property computed on first use and then kept (``functools.cached_property`` takes a lock
    on Python < 3.12, which torch.compile cannot trace)."""
    key = "_cached_" + method.__name__

    def get(self):
        if key not in self.__dict__:
            self.__dict__[key] = method(self)
        return self.__dict__[key]

    return property(get, doc=method.__doc__)


@dataclass(frozen=True)
class Prepared:
    """One validated batch, ready for a loss formula.

    Attributes:
        scores: (B, K, *S) the input in the compute dtype (float32, or float64 for float64 input): logits
            (``from_logits``) or probabilities; for multilabel input the K = 2C complement-first form.
        mask: (B, 1, *S) 1 where a voxel counts, 0 where it is ignored; None when every voxel counts.
        num_problems: 1 for exclusive classes, C for multilabel input (K = 2C).
        multilabel: whether the input was multilabel.
        labels: (B, 1, *S) int64 class of each voxel for an exclusive label-map target (0 at ignored
            voxels), else None.
        dense_target: (B, K, *S) one-hot or soft target, zero outside ``mask``, when the target was not a
            label map; else None. Read :attr:`target` for either form.
        from_logits: whether ``scores`` are logits.

    ``prob``, ``log_prob`` and ``target`` are formed on first use. With a label map and logits, ``prob``
    and the contractions a loss needs most (:attr:`log_prob_at_target`, :meth:`predicted_sums`) come from
    one fused softmax (:class:`_SoftmaxAtLabels`); a loss written with the contractions
    (:meth:`at_target`, :meth:`class_sums`) then never forms ``log_prob`` or the one-hot ``target``.
    """

    scores: Tensor
    mask: Optional[Tensor]
    num_problems: int
    multilabel: bool
    labels: Optional[Tensor] = None
    dense_target: Optional[Tensor] = None
    from_logits: bool = True

    @_cached
    def log_prob(self) -> Tensor:
        """(B, K, *S) log-probabilities: log_softmax / logsigmoid of logits, else the log of the clamped input."""
        if not self.from_logits:
            return self.scores.clamp_min(_TINY[self.scores.dtype]).log()
        return F.logsigmoid(self.scores) if self.multilabel else F.log_softmax(self.scores, 1)

    @_cached
    def prob(self) -> Tensor:
        """(B, K, *S) class probabilities (``exp(log_prob)`` from logits)."""
        if self._fused is not None:
            return self._fused[0]
        return self.log_prob.exp() if self.from_logits else self.scores

    @_cached
    def target(self) -> Tensor:
        """(B, K, *S) one-hot or soft target, zero at voxels outside ``mask``; formed from a label map on
        first use. Formulas that only need the target class use :meth:`at_target` / :meth:`class_sums`."""
        if self.labels is None:
            return self.dense_target
        onehot = torch.zeros_like(self.scores).scatter_(1, self.labels, 1.0)
        return onehot if self.mask is None else onehot * self.mask

    @_cached
    def _fused(self) -> Optional[tuple[Tensor, Tensor, Tensor]]:
        """(p, log p at the labels, masked class sums of p) from :class:`_SoftmaxAtLabels`, where it applies."""
        if self.labels is None or not self.from_logits:
            return None
        return _SoftmaxAtLabels.apply(self.scores, self.labels, self.mask)

    def at_target(self, values: Tensor) -> Tensor:
        """``values`` at each voxel's target class, for a formula to be summed by :meth:`class_sums`.

        ``values`` is (B, K, *S) or broadcasts to it (a per-class (1, K, 1, ...) tensor; a (B, 1, *S) map,
        the same for every class, is returned as it is). Label map: (B, 1, *S), the value of the voxel's
        class. One-hot/soft target: ``values`` unchanged; :meth:`class_sums` then weights each class by the
        target. Either way ``class_sums(f(at_target(v)))`` is ``sum_i y_ic f(v_ic)`` for elementwise ``f``
        (and ``target_sum(f(at_target(v)))`` is ``sum_c y_ic f(v_ic)``).
        """
        return values if self.labels is None else at_labels(values, self.labels)

    @_cached
    def log_prob_at_target(self) -> Tensor:
        """:meth:`at_target` of ``log_prob``, formed once per batch."""
        return self._fused[1] if self._fused is not None else self.at_target(self.log_prob)

    @_cached
    def prob_at_target(self) -> Tensor:
        """:meth:`at_target` of ``prob``, formed once per batch (from logits with a label map: the exp of
        :attr:`log_prob_at_target`, a pass over the label map instead of over the input)."""
        return self.log_prob_at_target.exp() if self._fused is not None else self.at_target(self.prob)

    def predicted_sums(self, classes: Union[slice, Tensor, None] = None) -> Tensor:
        """(B, K) per sample and class ``sum_i p_ic`` over the voxels that count; ``classes`` selects classes."""
        if self._fused is not None:
            sums = self._fused[2]
            return sums if classes is None else sums[:, classes]
        prob = self.prob if classes is None else self.prob[:, classes]
        if self.mask is not None:
            prob = prob * self.mask
        return prob.flatten(2).sum(2)

    def target_sum(self, values: Tensor) -> Tensor:
        """(B, 1, *S) per voxel ``sum_c y_ic v_ic`` for ``values`` from :meth:`at_target`, 0 at ignored voxels."""
        if self.labels is None:
            return (self.dense_target * values).sum(1, keepdim=True)
        return values if self.mask is None else values * self.mask

    def class_sums(self, values: Optional[Tensor] = None, classes: Union[slice, Tensor, None] = None) -> Tensor:
        """(B, K) per sample and class ``sum_i y_ic v_ic`` over the voxels that count, for ``values`` from
        :meth:`at_target` (or a (B, 1, *S) map); the target's own sums (class volumes) when ``values`` is
        None. ``classes`` selects classes (a slice or index tensor), as ``[:, classes]`` would.

        Label map: the per-voxel values summed into their classes (:func:`_label_class_sums`);
        one-hot/soft target: the product with the target, summed over the voxels.
        """
        if self.labels is None:
            target = self.dense_target if classes is None else self.dense_target[:, classes]
            if values is not None:
                target = target * (values if classes is None or values.shape[1] == 1 else values[:, classes])
            return target.flatten(2).sum(2)
        index = self.labels.flatten(1)
        if values is None:
            weights = self.mask if self.mask is not None else self.scores.new_ones(()).expand(index.shape)
        else:
            weights = values if self.mask is None else values * self.mask
        sums = _label_class_sums(index, weights.reshape(index.shape), self.num_classes)
        return sums if classes is None else sums[:, classes]

    @property
    def num_classes(self) -> int:
        return self.scores.shape[1]

    @property
    def foreground_channels(self) -> slice:
        """Classes that correspond to the input's own channels (all of them for exclusive input)."""
        return slice(self.num_classes - self.num_problems, None) if self.multilabel else slice(None)

    def voxel_counts(self) -> Tensor:
        """(B,) number of voxels that count in each sample."""
        b = self.scores.shape[0]
        if self.mask is None:
            return self.scores.new_full((b,), float(self.scores[0, 0].numel()))
        return self.mask.flatten(1).sum(1)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (gradient checks); everything else is computed in float32 (AMP safety)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_unit_interval(name: str, value: float, *, closed_right: bool = True) -> float:
    """Raise ValueError unless ``value`` is a finite number in [0, 1] (or [0, 1))."""
    value = float(value)
    upper_ok = value <= 1.0 if closed_right else value < 1.0
    if not (value >= 0.0 and upper_ok):
        raise ValueError(f"{name} must lie in [0, 1{']' if closed_right else ')'}; got {value}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def _is_compiling() -> bool:
    return bool(getattr(torch, "compiler", None) and torch.compiler.is_compiling())


def _label_map(input: Tensor, target: Tensor) -> Optional[Tensor]:
    """Return the target as a (B, 1, *S) label map, or None when it is one-hot/soft (B, C, *S).

    Raises ValueError naming the shapes when the target fits neither form.
    """
    if target.shape[0] != input.shape[0]:
        raise ValueError(
            f"batch size mismatch: input has {input.shape[0]} samples, target has {target.shape[0]} "
            f"(input {tuple(input.shape)}, target {tuple(target.shape)})"
        )
    spatial = input.shape[2:]
    if target.ndim == input.ndim - 1 and target.shape[1:] == spatial:
        return target.unsqueeze(1)
    if target.ndim == input.ndim and target.shape[2:] == spatial:
        if target.shape[1] == input.shape[1]:
            return None
        if target.shape[1] == 1:
            return target
    raise ValueError(
        f"target shape {tuple(target.shape)} does not match input shape {tuple(input.shape)}: expected a "
        f"label map (B, 1, *S) or (B, *S), or a one-hot/soft target (B, C, *S) with S = {tuple(spatial)}"
    )


def _check_input_values(input: Tensor, from_logits: bool, multilabel: bool) -> None:
    if input.numel() == 0:
        return
    # One reading pass without an input-sized temporary (isfinite(input).all() writes one, and costs more
    # than the softmax): a NaN propagates into both extremes, an infinity shows in one of them.
    low, high = torch.aminmax(input)
    if not torch.isfinite(torch.stack((low, high))).all():
        raise ValueError("input contains NaN or Inf values")
    if from_logits:
        return
    if low < 0 or high > 1:
        raise ValueError(
            f"from_logits=False expects probabilities in [0, 1], but the input holds values in "
            f"[{low.item():.4g}, {high.item():.4g}]; pass raw network outputs with from_logits=True"
        )
    if not multilabel:
        deviation = (input.sum(1, dtype=torch.float32) - 1).abs().max()
        tolerance = 1e-2 if input.dtype in (torch.float16, torch.bfloat16) else 1e-3
        if deviation > tolerance:
            raise ValueError(
                f"from_logits=False with exclusive classes expects probabilities that sum to 1 over the "
                f"class axis (dim 1); the sums deviate by up to {deviation.item():.4g}. Pass logits with "
                f"from_logits=True, or use multilabel=True for independent (sigmoid) channels"
            )


def _check_labels(labels: Tensor, num_classes: int, ignore_index: Optional[int]) -> None:
    if labels.is_floating_point():
        if not torch.isfinite(labels).all():
            raise ValueError("target contains NaN or Inf values")
        if not (labels == labels.round()).all():
            raise ValueError("a label-map target must hold integer class indices; found fractional values")
    if labels.dtype == torch.bool:
        return
    valid = labels if ignore_index is None else labels.masked_fill(labels == ignore_index, 0)
    low, high = torch.aminmax(valid)
    if low < 0 or high >= num_classes:
        bad = int(low.item()) if low < 0 else int(high.item())
        hint = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
        raise ValueError(
            f"target label values must lie in [0, {num_classes}){hint}; found {bad}"
            + ("" if ignore_index is not None else " (set ignore_index if it marks voxels to ignore)")
        )


def _check_dense_target(target: Tensor) -> None:
    if target.dtype == torch.bool:
        return
    if target.is_floating_point() and not torch.isfinite(target).all():
        raise ValueError("target contains NaN or Inf values")
    low, high = torch.aminmax(target)
    if low < 0 or high > 1:
        raise ValueError(
            f"a one-hot/soft (B, C, *S) target must hold values in [0, 1]; found [{low.item():.4g}, "
            f"{high.item():.4g}]. A label map must have a single channel: (B, 1, *S) or (B, *S)"
        )


def _mask(mask: Tensor, input: Tensor, dtype: torch.dtype) -> Tensor:
    shape = (input.shape[0], 1, *input.shape[2:])
    if mask.ndim == input.ndim - 1:
        mask = mask.unsqueeze(1)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {shape} (B, 1, *S) for input {tuple(input.shape)}")
    # 0/1: a voxel counts or not (a weighted mask would enter products of the prediction and the target twice)
    return (mask != 0).to(dtype)


def prepare(
    input: Tensor,
    target: Tensor,
    *,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
) -> Prepared:
    """Validate ``input``/``target`` and turn them into a :class:`Prepared` record.

    Args:
        input: (B, C, *S) logits (``from_logits=True``) or probabilities, any floating dtype.
        target: label map (B, 1, *S) or (B, *S) of class indices (exclusive mode), or one-hot/soft
            (B, C, *S) with values in [0, 1]; any integer, float or bool dtype.
        from_logits: apply softmax (exclusive) or sigmoid (multilabel). Input that merely looks like
            probabilities is not guessed at: with ``from_logits=True`` it is treated as logits.
        multilabel: independent sigmoid channels (regions) instead of exclusive softmax classes.
        ignore_index: label value (label-map targets) whose voxels count nowhere.
        mask: optional (B, 1, *S) or (B, *S) map, nonzero where a voxel counts; combined with
            ``ignore_index``. This is how one-hot or multilabel targets carry an ignore region.

    Raises:
        ValueError: naming the problem: shapes, NaN/Inf, probabilities out of range or not summing to 1,
            labels outside [0, C), fewer than two channels with exclusive classes.
    """
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError("input and target must be torch.Tensor")
    if input.ndim < 3:
        raise ValueError(f"input must be (B, C, *spatial) with at least one spatial dim; got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor; got {input.dtype}")
    num_channels = input.shape[1]
    if not multilabel and num_channels < 2:
        raise ValueError(
            "exclusive (softmax) classes need at least 2 channels, background included; got 1. "
            "For a single foreground channel use multilabel=True (sigmoid)"
        )
    labels = _label_map(input, target)
    if multilabel and labels is not None and num_channels > 1:
        raise ValueError(
            f"multilabel=True expects a (B, C, *S) 0/1 target with one channel per input channel; got target "
            f"{tuple(target.shape)} for input {tuple(input.shape)}"
        )
    if ignore_index is not None and (labels is None or multilabel):
        raise ValueError(
            "ignore_index applies to exclusive label-map targets; for one-hot or multilabel targets pass mask="
        )
    exclusive_labels = labels is not None and not multilabel
    dense = None if exclusive_labels else (target if labels is None else labels)
    if not _is_compiling():
        _check_input_values(input, from_logits, multilabel)
        if exclusive_labels:
            _check_labels(labels, num_channels, ignore_index)
        else:
            _check_dense_target(dense)

    dtype = compute_dtype(input.dtype)
    x = input.to(dtype)
    valid = None if mask is None else _mask(mask, input, dtype)
    onehot = None
    if exclusive_labels:
        if ignore_index is not None:
            ignored = labels == ignore_index
            keep = (~ignored).to(dtype)
            valid = keep if valid is None else valid * keep
            labels = labels.masked_fill(ignored, 0)
        labels = labels.long()
    else:
        onehot = dense.to(dtype)
        if valid is not None:
            onehot = onehot * valid

    if multilabel:
        x = torch.cat([-x, x], 1) if from_logits else torch.cat([1 - x, x], 1)
        onehot = torch.cat([(valid if valid is not None else 1) - onehot, onehot], 1)
    return Prepared(x, valid, num_channels if multilabel else 1, multilabel,
                    labels=labels if exclusive_labels else None, dense_target=onehot, from_logits=from_logits)
