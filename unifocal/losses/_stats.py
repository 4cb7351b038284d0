"""Shared arithmetic: the per-class statistics of a batch, soft confusion sums, reductions, a safe power.

A loss asks :func:`class_statistics` once per call for the per-class sums it needs (TP, predicted and
actual volumes, the focal cross entropy; one fused pass for a label map and logits) and derives every part
from that :class:`ClassStatistics`. Soft confusion sums (:func:`confusion_sums`) per class ``c`` over the
counted voxels: ``TP_c = sum_i y_ic p_ic``, ``FP_c = sum_i (1 - y_ic) p_ic``, ``FN_c = sum_i y_ic (1 - p_ic)``,
per sample, or over the batch with ``batch_dice`` (over all ranks with ``ddp``).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor
import torch.nn.functional as F

from ._autograd import autograd_only, class_table, first_order, scalar_or_table, weighted_sums
from ._inputs import Prepared, one_hot
from ._region_stats import region_statistics


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


def _distributed(prep: Prepared) -> bool:
    """Whether ``prep`` is one rank's share of a batch split over several ranks (asked for with ``ddp=True``)."""
    return prep.ddp and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def batch_total(values: Tensor, prep: Prepared) -> Tensor:
    """(1, ...) sum over the batch (dim 0) of per-sample ``values`` (B, ...); under ``ddp`` over the global
    batch of every rank, with the gradients of all ranks summed in the backward. Every batch-level sum of a
    loss goes through here, so none can miss the all-reduce."""
    total = values.sum(0, keepdim=True)
    return _AllGatherSum.apply(total) if _distributed(prep) else total


def _global_share(total: Tensor, prep: Prepared) -> Tensor:
    """``total`` (no gradient) summed over the ranks and divided by their number under ``ddp``: what a
    rank divides its own sum by so that the ranks' mean equals the global ratio."""
    return _AllGatherSum.apply(total.detach()) / dist.get_world_size() if _distributed(prep) else total


class ClassStatistics(NamedTuple):
    """Per sample and class (B, K) sums over the voxels that count, for target ``y``, probabilities ``p``,
    mask ``m``: ``actual = sum_i y_ic`` (no gradient) and, each when asked for (else None), the overlap sums
    ``predicted = sum_i m_i p_ic`` and ``true_positive = sum_i y_ic p_ic`` and the cross entropy
    ``cross_entropy = sum_i v_i y_ic (1 - p_ic)^gamma_c (-log p_ic)`` (voxel weights ``v``, focal exponents
    ``gamma``)."""

    predicted: Optional[Tensor]
    true_positive: Optional[Tensor]
    actual: Tensor
    cross_entropy: Optional[Tensor]


def _exponents(gamma: Union[float, Sequence[float]], num_classes: int) -> tuple[float, ...]:
    """Focal exponents as a tuple: one value when all classes share it, else one per class."""
    values = tuple(float(g) for g in gamma) if isinstance(gamma, (tuple, list)) else (float(gamma),)
    if len(values) not in (1, num_classes):
        raise ValueError(f"gamma has {len(values)} values for {num_classes} classes")
    return values[:1] if len(set(values)) == 1 else values


def class_statistics(
    prep: Prepared,
    cross_entropy: bool = False,
    gamma: Union[float, Sequence[float]] = 0.0,
    voxel_weight: Optional[Tensor] = None,
    overlap: bool = True,
) -> ClassStatistics:
    """The :class:`ClassStatistics` of ``prep``, the overlap sums only if ``overlap`` (a loss of the cross
    entropy alone reads none), the cross entropy only if ``cross_entropy``, with focal
    exponent ``gamma`` (one or one per class; 0: plain cross entropy) and voxel weights ``voxel_weight``
    ((B, 1, *S), or (B, K, *S) per class and voxel, composed path only). From one fused pass for an exclusive
    label map and logits (:class:`_LabelMapStatistics`), from the sigmoid channels for region logits
    (:func:`unifocal.losses._region_stats.region_statistics`), else (and under ``torch.func`` or forward-mode AD)
    from the dense probabilities and target."""
    exponents = _exponents(gamma, prep.num_classes)
    fused = prep.from_logits and (voxel_weight is None or voxel_weight.shape[1] == 1) and not autograd_only(prep.scores)
    if not fused or (prep.labels is None and not prep.multilabel):
        return _composed_statistics(prep, cross_entropy, exponents, voxel_weight, overlap)
    weight = None if voxel_weight is None else voxel_weight.to(prep.scores.dtype)
    if prep.multilabel:
        return ClassStatistics(*region_statistics(prep.scores, prep.dense_target, prep.mask, exponents, weight,
                                                  cross_entropy, overlap))
    exponent = exponents[0] if len(exponents) == 1 else exponents
    # Autocast would run the batched products in half precision; the sums must stay in the compute dtype.
    with torch.autocast(prep.scores.device.type, enabled=False):
        return ClassStatistics(*_LabelMapStatistics.apply(prep.scores, prep.labels, prep.mask, exponent, weight,
                                                          cross_entropy, overlap))


def _composed_statistics(prep: Prepared, cross_entropy: bool, exponents: tuple[float, ...],
                         voxel_weight: Optional[Tensor], overlap: bool = True) -> ClassStatistics:
    """:class:`ClassStatistics` from the dense probabilities and target (any target, any input), by autograd."""
    target = prep.target

    def sums(values: Tensor) -> Tensor:
        return values.flatten(2).sum(2)

    predicted = true_positive = cross_entropy_sums = None
    if overlap:
        prob, counted = prep.prob.flatten(2), None if prep.mask is None else prep.mask.flatten(2)
        predicted, true_positive = weighted_sums(prob, counted), weighted_sums(prob, target.flatten(2))
    if cross_entropy:
        weight = target if voxel_weight is None else target * voxel_weight
        if any(exponents):
            exponent = scalar_or_table(exponents, prep.scores)
            if autograd_only(prep.scores):
                cross_entropy_sums = sums(-prep.log_prob * safe_pow(1 - prep.prob, exponent) * weight)
            else:
                cross_entropy_sums = _DenseFocalSums.apply(prep.log_prob, weight, exponent)
        else:
            cross_entropy_sums = sums(-prep.log_prob * weight)
    return ClassStatistics(predicted, true_positive, sums(target.detach()), cross_entropy_sums)


class _DenseFocalSums(torch.autograd.Function):
    """(B, K) sums ``sum_i w_ic (-log p_ic) (1 - p_ic)^gamma_c`` for a dense weight ``w`` (target times voxel
    weights, no gradient); keeps one (B, K, *S) tensor for the backward (autograd's chain of the same
    formula keeps several) and bounds the derivative where ``1 - p`` has lost its digits
    (:func:`_focal_term`). Double backward is not supported."""

    @staticmethod
    def forward(ctx, log_prob: Tensor, weight: Tensor, exponent: Union[float, Tensor]) -> Tensor:
        terms, slope = _focal_term(log_prob, log_prob.exp(), exponent)
        ctx.save_for_backward(slope.mul_(weight))
        return terms.mul_(weight).flatten(2).sum(2)

    @staticmethod
    @first_order
    def backward(ctx, grad: Tensor):
        # dL/d(log p_ic) = G_bc w_ic (1 - p_ic)^gamma_c (gamma_c r_ic - 1),  r = p log p / (1 - p)  (_focal_term)
        (slope,) = ctx.saved_tensors
        return slope * grad.view(*grad.shape, *([1] * (slope.ndim - 2))), None, None


class _LabelMapStatistics(torch.autograd.Function):
    """:class:`ClassStatistics` of logits ``x`` (B, K, *S) for a label map ``t`` (B, 1, *S), in one pass.

    With ``p = softmax(x)``, the one-hot target ``y`` (zero rows at masked voxels) and ``p_t``/``log p_t``
    each voxel's values at its own class, every voxel term is formed at the target class only (one value
    per voxel), and the per-class sums are batched matrix products with ``y``:
    ``true_positive_c = sum_i y_ic p_ti``, ``cross_entropy_c = sum_i y_ic v_i (1 - p_ti)^gamma_ti (-log p_ti)``.

    Everything the backward needs is saved through ``save_for_backward`` (saved-tensor hooks such as
    ``save_on_cpu`` and checkpointing see it); the one-hot target is rebuilt from the labels in the backward,
    where its buffer becomes the gradient. Double backward is not supported (a clear error); under the
    ``torch.func`` transforms and in forward-mode AD :func:`class_statistics` uses the composed path instead.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, mask: Optional[Tensor], exponent: Union[float, tuple],
                voxel_weight: Optional[Tensor], cross_entropy: bool, overlap: bool = True):
        b, k = logits.shape[:2]
        onehot = one_hot(labels, k, mask, logits.dtype)
        flat_onehot = onehot.view(b, k, -1)
        log_prob = F.log_softmax(logits, 1)
        log_pt = at_target(log_prob, onehot)
        prob = log_prob.exp_()
        flat_mask = None if mask is None else mask.view(b, 1, -1)
        predicted = weighted_sums(prob.view(b, k, -1), flat_mask) if overlap else None
        focal = cross_entropy and (isinstance(exponent, tuple) or exponent != 0)
        pt = log_pt.exp() if overlap or focal else None  # p_t: the true positives' and the focal terms' input

        term_slope = terms = None
        if cross_entropy:
            if isinstance(exponent, tuple):  # each voxel's class's exponent (0 at masked voxels)
                exponent = at_target(class_table(exponent, onehot), onehot)
            if isinstance(exponent, Tensor) or exponent != 0:
                terms, term_slope = _focal_term(log_pt, pt, exponent)
            else:
                terms = log_pt.neg()
            if voxel_weight is not None:
                voxel_weight = voxel_weight.reshape(log_pt.shape)
                terms.mul_(voxel_weight)
                term_slope = voxel_weight.neg() if term_slope is None else term_slope.mul_(voxel_weight)
        ctx.save_for_backward(prob, labels, mask, pt, term_slope)
        true_positive = weighted_sums(flat_onehot, pt.view(b, 1, -1)) if overlap else None
        actual = flat_onehot.sum(2)
        ctx.mark_non_differentiable(actual)
        ctx.set_materialize_grads(False)
        cross_entropy_sums = None if terms is None else weighted_sums(flat_onehot, terms.view(b, 1, -1))
        return predicted, true_positive, actual, cross_entropy_sums

    @staticmethod
    @first_order
    def backward(ctx, grad_predicted: Optional[Tensor], grad_tp: Optional[Tensor], _, grad_ce: Optional[Tensor]):
        # With G, T, E the gradients of the loss w.r.t. the predicted, true-positive and cross-entropy sums,
        # m the mask and g_i = dL/d(log p_ti) = T_ti p_ti + E_ti dterm_i/d(log p_ti) (term slope: _focal_term):
        #     dL/dx_ic = g_i y_ic + p_ic (m_i (G_c - sum_k G_k p_ik) - g_i)
        prob, labels, mask, pt, term_slope = ctx.saved_tensors
        b, k = prob.shape[:2]
        per_voxel = (b, 1, *prob.shape[2:])
        onehot = one_hot(labels, k, mask, prob.dtype)
        # (gradient table, its factor per voxel) of the sums that get a gradient; a slope None is -1 (plain CE)
        kept = [(table, factor) for table, factor in ((grad_tp, pt), (grad_ce, term_slope)) if table is not None]
        at_voxel = None  # g above, (B, 1, *S)
        if kept:
            at_class = torch.bmm(torch.stack([t for t, _ in kept], 1), onehot.view(b, k, -1))  # the voxel's entries
            for entry, (_, factor) in zip(at_class.unbind(1), kept):
                entry = entry.neg_() if factor is None else entry.mul_(factor.view(b, -1))
                at_voxel = entry if at_voxel is None else at_voxel.add_(entry)
            at_voxel = at_voxel.view(per_voxel)
        if at_voxel is None and grad_predicted is None:
            return None, None, None, None, None, None, None
        grad = onehot.mul_(at_voxel) if at_voxel is not None else onehot.zero_()
        if grad_predicted is None:
            grad.addcmul_(prob, at_voxel, value=-1)
            return grad, None, None, None, None, None, None
        # m_i sum_k G_k p_ik + g_i per voxel, then class by class p_ic (m_i G_c - that): no (B, K, *S) temporary
        shift = torch.bmm(grad_predicted.unsqueeze(1), prob.view(b, k, -1)).view(per_voxel)
        if mask is not None:
            shift.mul_(mask)
        if at_voxel is not None:
            shift.add_(at_voxel)
        scratch = torch.empty_like(shift)
        for c in range(k):
            per_class = grad_predicted[:, c].view(b, *([1] * (prob.ndim - 1)))
            if mask is None:
                torch.sub(per_class, shift, out=scratch)
            else:
                torch.mul(mask, per_class, out=scratch).sub_(shift)
            grad[:, c : c + 1].addcmul_(prob[:, c : c + 1], scratch)
        return grad, None, None, None, None, None, None


def _focal_term(log_pt: Tensor, pt: Tensor, exponent: Union[float, Tensor]) -> tuple[Tensor, Tensor]:
    """The focal term ``-log p (1 - p)^gamma`` per voxel and its derivative with respect to ``log p``.

    The derivative is ``(1 - p)^gamma (gamma r - 1)`` with ``r = p log p / (1 - p)``, which lies in [-1, 0]
    (``log p >= (p - 1) / p``). Clamping the computed ``r`` to that range keeps the derivative exact where
    ``1 - p`` is well computed and bounded where it has lost its digits (p -> 1), without the stopped
    gradient :func:`safe_pow` needs for a power alone (whose slope is unbounded at 0).
    """
    base = torch.sub(1, pt).clamp_min_(torch.finfo(pt.dtype).tiny)
    modulation = _power(base, exponent)
    ratio = torch.mul(pt, log_pt).div_(base).clamp_(-1, 0)
    slope = ratio.mul_(exponent).sub_(1).mul_(modulation)
    return modulation.mul_(log_pt).neg_(), slope


def at_target(values: Tensor, onehot: Tensor) -> Tensor:
    """(B, 1, *S) ``sum_c y_ic v_ic``: each voxel's value at its class (0 at masked voxels) of (B, K, *S) values or
    a (1, K, 1, ...) table; a pass per class, cheaper than a product with a (B, K, *S) temporary or an int64
    gather for the few classes of a segmentation."""
    result = torch.mul(values[:, :1], onehot[:, :1])
    for c in range(1, values.shape[1]):
        result.addcmul_(values[:, c : c + 1], onehot[:, c : c + 1])
    return result


def confusion_sums(stats: ClassStatistics, prep: Prepared, batch_dice: bool = False,
                   classes: Union[slice, Sequence[int]] = slice(None)) -> ConfusionSums:
    """Soft TP/FP/FN per sample (B, K), or over the batch (1, K), from the TP and the predicted and actual
    volumes of ``stats``; with ``ddp`` the batch sums are those of the global batch (all-reduced, and in
    the backward the gradients of all ranks summed, like nnU-Net's AllGatherGrad).

    ``classes`` (a slice or class indices) selects classes first; all classes by default.
    """
    stacked = torch.stack([stats.true_positive, stats.predicted, stats.actual], 1)[..., classes]  # (B, 3, K)
    if batch_dice:
        stacked = batch_total(stacked, prep)
    tp, predicted, actual = stacked.unbind(1)
    return ConfusionSums(tp, (predicted - tp).clamp_min(0), (actual - tp).clamp_min(0))


class BatchLoss(NamedTuple):
    """A loss value in both reduced forms, each computed only when called, so a loss reduced one way builds
    no graph for the other: ``mean()`` (scalar, the batch mean as the loss defines it) and ``per_sample()``
    (B,). Parts combine linearly (:func:`weighted_sum`)."""

    mean: Callable[[], Tensor]
    per_sample: Callable[[], Tensor]

    def scaled(self, factor: float) -> "BatchLoss":
        return BatchLoss(lambda: self.mean() * factor, lambda: self.per_sample() * factor)

    def plus(self, other: "BatchLoss") -> "BatchLoss":
        return BatchLoss(lambda: self.mean() + other.mean(), lambda: self.per_sample() + other.per_sample())

    def reduce(self, reduction: str) -> Tensor:
        """"mean": the batch mean; "sum": sum of the per-sample values; "none": per-sample values (B,)."""
        if reduction == "mean":
            return self.mean()
        return self.per_sample().sum() if reduction == "sum" else self.per_sample()


def weighted_sum(parts: Sequence[tuple[float, Callable[[], BatchLoss]]]) -> BatchLoss:
    """``sum_j w_j part_j`` of the parts whose weight is not 0 (a part with weight 0 is not computed; with
    every weight 0 the first part, times 0)."""
    kept = [part().scaled(w) for w, part in parts if w != 0] or [parts[0][1]().scaled(0.0)]
    return functools.reduce(BatchLoss.plus, kept)


def voxel_mean(per_voxel: Tensor, prep: Prepared) -> BatchLoss:
    """Mean over the voxels that count of a (B, *S) map (its values at ignored voxels do not count)."""
    if prep.mask is not None:
        per_voxel = per_voxel * prep.mask[:, 0]
    return counted_mean(per_voxel.flatten(1).sum(1), prep)


def counted_voxels(prep: Prepared) -> Tensor:
    """(B,) the number of voxels that count in each sample (not ignored, inside the mask)."""
    if prep.mask is None:
        return prep.scores.new_full((prep.batch_size,), float(prep.scores[0, 0].numel()))
    return prep.mask.flatten(1).sum(1)


def counted_mean(sums: Tensor, prep: Prepared, totals: Optional[Tensor] = None) -> BatchLoss:
    """Mean from (B,) per-sample sums over the voxels that count.

    ``mean`` divides by the total of the batch: the number of counted voxels (as nnU-Net's and torch's cross
    entropy do) or the (B,) per-sample ``totals`` given (torch's class-weighted mean divides by the summed
    weights of the targets); with ``ddp`` the total of the global batch, shared out over the ranks.
    ``per_sample`` divides each sample by its own total. A sample without counted voxels gives 0.
    """
    if totals is None and prep.mask is None and not _distributed(prep):
        count = prep.scores[0, 0].numel()
        return BatchLoss(lambda: sums.sum() / (count * sums.shape[0]), lambda: sums / count)
    totals = (counted_voxels(prep) if totals is None else totals).detach()
    tiny = torch.finfo(totals.dtype).tiny
    return BatchLoss(lambda: sums.sum() / _global_share(totals.sum(), prep).clamp_min(tiny),
                     lambda: sums / totals.clamp_min(tiny))


def class_mean(per_class_loss: Tensor, batch_size: int) -> BatchLoss:
    """Mean over classes of a (B, K) per-sample or (1, K) batch-level loss (then the same for every sample).
    The callables are lambdas: dynamo cannot trace a bound ``Tensor.mean`` called later."""
    return BatchLoss(lambda: per_class_loss.mean(), lambda: per_class_loss.mean(1).expand(batch_size))


def _power(base: Tensor, exponent: Union[float, Tensor]) -> Tensor:
    """``base ** exponent`` for bases in [0, 1]. A tensor exponent (one per voxel, from a per-class table)
    makes torch's pow several times slower than ``exp(exponent * log(base))``, which is used then; its only
    NaN is ``0 * log 0`` (exponent 0 on a zero base), whose power is 1."""
    if not isinstance(exponent, Tensor):
        return base.pow(exponent)
    return torch.log(base).mul_(exponent).exp_().nan_to_num_(nan=1.0)  # the exponent broadcasts against the base


def safe_pow(base: Tensor, exponent: Union[float, Tensor]) -> Tensor:
    """``base ** exponent`` for base in [0, 1], with its value (to round-off) but a bounded gradient.

    ``x ** e`` with ``e < 1`` has an infinite derivative at 0 (a perfect prediction, TI -> 1, or a
    saturated probability p -> 1): below ``_POW_FLOOR`` the gradient is stopped instead (the exact power
    of the detached base). The exponent gets no gradient. Plain autograd: the bases are per-class sums
    or one voxel map, where a hand-written backward saves nothing measurable.
    """
    below = base.detach() < _POW_FLOOR
    return torch.where(below, base.detach().pow(exponent), base.clamp_min(_POW_FLOOR).pow(exponent))


def per_class(value: Union[float, Sequence[float]], prep: Prepared, name: str) -> tuple[float, ...]:
    """A scalar or per-channel sequence as one float per class of ``prep`` (K values).

    For multilabel input a per-channel value applies to the channel and its complement.
    """
    values = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)
    channels = prep.num_problems if prep.multilabel else prep.num_classes
    if len(values) not in (1, channels):
        raise ValueError(f"{name} has {len(values)} values but the input has {channels} channels")
    return values * (prep.num_classes // len(values))


def tversky_distance(sums: ConfusionSums, fp_weight: float, fn_weight: float, smooth: float) -> Tensor:
    """``1 - TI`` with ``TI = (TP + s) / (TP + fp_weight FP + fn_weight FN + s)``, computed as
    ``(a FP + b FN) / (TP + a FP + b FN + s)``, exact as TI -> 1 where ``1 - TI`` would cancel."""
    errors = fp_weight * sums.fp + fn_weight * sums.fn
    return errors / (sums.tp + errors + smooth)


def class_roles(prep: Prepared, common_classes=None, rare_classes=None) -> tuple[bool, ...]:
    """One flag per class of ``prep``: True for rare classes.

    Exclusive classes: ``common_classes`` default to (0,) (the background) and ``rare_classes`` to
    the rest; giving one set makes the other its complement; giving both requires a partition.
    Multilabel input: each channel is rare and its complement common (the sets are unset there).
    """
    k = prep.num_classes
    if prep.multilabel:
        return (False,) * prep.num_problems + (True,) * prep.num_problems
    for name, classes in (("common_classes", common_classes), ("rare_classes", rare_classes)):
        if classes is not None and any(c >= k for c in classes):
            raise ValueError(f"{name}={tuple(classes)} names a class the input lacks (it has {k} channels)")
    every = set(range(k))
    common = {0} if common_classes is None and rare_classes is None else set(common_classes or ())
    rare = every - common if rare_classes is None else set(rare_classes)
    missing = sorted(every - rare - common) if common_classes is not None else []  # both sets given
    if missing:
        raise ValueError(f"classes {missing} are neither common nor rare; the two sets must cover all {k} classes")
    return tuple(c in rare for c in range(k))


def role_weights(rare: Sequence[bool], rare_weight: float, common_weight: float) -> tuple[float, ...]:
    """Per-class weights from :func:`class_roles`: ``rare_weight`` on rare classes, ``common_weight`` on common."""
    return tuple(rare_weight if is_rare else common_weight for is_rare in rare)


def region_classes(prep: Prepared, include_background: bool = True) -> slice:
    """The classes of ``prep`` that stand for the input's channels (not the complements of multilabel
    input), less channel 0 if so asked (the background with exclusive classes, as MONAI does in both modes)."""
    start = prep.num_classes - prep.num_problems if prep.multilabel else 0
    if include_background:
        return slice(start, None)
    if prep.num_classes - start < 2:
        raise ValueError("include_background=False leaves no channel: the input has a single channel")
    return slice(start + 1, None)


def selected_values(prep: Prepared, include_background: bool = True) -> tuple[Tensor, Tensor]:
    """(B, C', *S) probabilities and target of the classes :func:`region_classes` selects; for multilabel
    input, the channels themselves straight from the C sigmoid channels (no 2C-class tensor is formed)."""
    classes = region_classes(prep, include_background)
    if not prep.multilabel:
        return prep.prob[:, classes], prep.target[:, classes]
    channels = slice(classes.start - prep.num_problems, None)
    scores = prep.scores[:, channels]
    prob = torch.sigmoid(scores) if prep.from_logits else scores
    return prob, prep.dense_target[:, channels].to(scores.dtype)
