"""Class statistics of region (multilabel) input, straight from its R sigmoid channels.

With ``multilabel=True`` channel ``r`` is a binary problem: the region, with probability ``p = sigmoid(x_r)``,
against its complement ("not r", probability ``1 - p``). The losses see ``K = 2R`` classes, the R
complements first (:func:`complement_first`). Their per-class sums need no ``2R``-channel tensor: with ``m``
the mask of counted voxels, ``y`` the (soft) target, zero outside ``m``, and ``N = sum_i m_i`` per sample,

    region r:     predicted = sum m p          true positive = sum y p          actual = sum y
    complement:   predicted = N - predicted_r  true positive = N - actual_r - predicted_r + TP_r
                  actual    = N - actual_r

and the focal cross entropies (voxel weights ``v``, focal exponents ``g_r`` of the region, ``g_n`` of
the complement):

    region r:     sum v y       (1 - p)^g_r (-log p)
    complement:   sum v (m - y) p^g_n       (-log(1 - p))

:class:`_RegionStatistics` forms them from one sigmoid and one logarithm per voxel and channel, with the
backward written out next to it, and keeps at most two (B, R, *S) tensors for the backward (the focal
slopes, or ``p``). On the CPU it works through the voxels in slabs small enough for the cache
(:func:`_slab_length`): a dozen elementwise passes over a slab cost less than two over the whole tensor,
and the temporaries stay small. Probability input (``from_logits=False``) takes the composed path over
the complement-first tensors instead.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from ._autograd import first_order, scalar_or_table, weighted_sums

__all__ = ["complement_first", "region_statistics"]

# Elements (B x R x slab length) of one slab on the CPU: the dozen slab-sized temporaries of a pass stay in
# the cache, and each of the ~40 operations per slab pays its dispatch once per 2^18 elements (measured in
# docs/performance.md: 2^17 and 2^19 were slower on one and on two threads).
_SLAB_ELEMENTS = 1 << 18


def complement_first(region: Tensor, total: Union[Tensor, float]) -> Tensor:
    """``cat([total - region, region], 1)``: per channel the complement's value (``total`` minus the region's)
    first, then the region's; the class order of multilabel input."""
    return torch.cat([total - region, region], 1)


def region_statistics(
    logits: Tensor,
    target: Tensor,
    mask: Optional[Tensor],
    exponents: Sequence[float],
    voxel_weight: Optional[Tensor],
    cross_entropy: bool,
    overlap: bool = True,
) -> tuple[Optional[Tensor], Optional[Tensor], Tensor, Optional[Tensor]]:
    """(B, 2R) predicted and true-positive (if ``overlap``), actual and (if ``cross_entropy``) focal sums of
    region logits (B, R, *S) for a target (B, R, *S) that is zero outside ``mask`` (B, 1, *S), in any dtype
    (bool, integer or float: converted to the logits' dtype a slab at a time, no input-sized copy).

    ``exponents``: focal exponents, one value or 2R (complements first); ``voxel_weight``: (B, 1, *S) or None.
    """
    r = logits.shape[1]
    if len(exponents) not in (1, 2 * r):
        raise ValueError(f"{len(exponents)} focal exponents for {r} regions (expected 1 or {2 * r})")
    exponents = tuple(exponents) * (2 * r // len(exponents))
    complement, region = (scalar_or_table(e, logits.flatten(2)) for e in (exponents[:r], exponents[r:]))  # (1, R, 1)
    # Autocast would run the reductions in half precision; the sums must stay in the compute dtype.
    with torch.autocast(logits.device.type, enabled=False):
        return _RegionStatistics.apply(logits, target, mask, complement, region, voxel_weight, cross_entropy, overlap)


def _slab_length(x: Tensor) -> int:
    """Voxels per slab of the flattened (B, R, N) logits: cache-sized on the CPU (equal slabs of at most
    ``_SLAB_ELEMENTS``); the whole of N on an accelerator (whose kernels are launch- and bandwidth-bound, not
    cache-bound) and under torch.compile (which fuses the passes itself)."""
    b, r, n = x.shape
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return max(n, 1)
    count = -(-b * r * n // _SLAB_ELEMENTS)
    return max(-(-n // max(count, 1)), 1)


def _slabs(length: int, *tensors: Optional[Tensor]):
    """The (B, *, N) ``tensors`` cut along N into slabs of ``length`` voxels (views; None stays None), a tuple
    per slab."""
    count = -(-tensors[0].shape[2] // length)
    return zip(*((None,) * count if t is None else t.split(length, 2) for t in tensors))


class _Slab:
    """One slab of the flattened (B, R, N) input: logits ``x``, target ``y``, mask ``m`` and voxel weights ``v``
    ((B, 1, L) or None); ``weight = v y`` (the region's voxel weights) and ``counted = v m`` (None: 1), so
    that the complement's weights are ``counted - weight``."""

    def __init__(self, x: Tensor, y: Tensor, m: Optional[Tensor], v: Optional[Tensor]) -> None:
        # A bool or integer target is converted here, a slab at a time (bool through uint8: 4x faster on the CPU).
        y = (y.view(torch.uint8) if y.dtype == torch.bool else y).to(x.dtype)
        self.x, self.y, self.m = x, y, m
        self.weight = y if v is None else y * v
        self.counted = v if m is None else (m if v is None else m * v)

    def complement_weight(self) -> Tensor:
        return torch.sub(1, self.weight) if self.counted is None else torch.sub(self.counted, self.weight)


class _Saved(NamedTuple):
    """What the forward keeps for the backward (None where not kept): ``p``, unless both focal slopes are kept
    (then the backward recomputes it, one sigmoid), and the focal slopes ``S_n``, ``S_r`` whose exponent is
    not 0 (else ``S_n = p``, ``S_r = -q``): two input-sized tensors at most."""

    prob: Optional[Tensor]
    slope_n: Optional[Tensor]
    slope_r: Optional[Tensor]


def _saved_layout(x: Tensor, cross_entropy: bool, complement_exponent, region_exponent) -> _Saved:
    slopes = [cross_entropy and (isinstance(e, Tensor) or e != 0) for e in (complement_exponent, region_exponent)]
    return _Saved(*(torch.empty_like(x) if keep else None for keep in (not all(slopes), *slopes)))


def _forward_slab(slab: _Slab, saved: _Saved, cross_entropy: bool, overlap: bool, complement_exponent,
                  region_exponent):
    """(B, R) sums of one slab: actual, predicted and true positives (None without ``overlap``) and, with
    ``cross_entropy``, the two focal sums; writes the slab's part of ``saved``.

    Both logarithms come from one, ``l = log max(p, q) = log(1 - min(p, q))``: ``softplus(x) = -log q =
    max(x, 0) - l`` and ``log p = min(x, 0) + l``, exact to round-off for every x where ``l`` is. The smaller
    probability is exact (``p``, or ``1 - p`` computed without rounding for ``p >= 1/2``); ``M = max(p, q)``
    is ``1 - min(p, q)`` rounded (exactly so for ``p >= 1/2``), off by ``d = (1 - q) - p`` (both
    subtractions exact), so ``l = log M + d / M``: one ``log`` (1.1-1.5 ns per element on the CPU here;
    ``log1p`` and ``F.softplus`` take 9-10 with torch's AVX512 kernels). Then the focal terms and their
    slopes (derivatives with respect to x, from ``d log p/dx = q``, ``d log q/dx = -p``), bounded for every
    p and without a division:

        complement:  t_n = softplus p^g_n    S_n = p^g_n (p + g_n q softplus)
        region:      t_r = -log p q^g_r      S_r = q^g_r (g_r p log p - q) = -(q q^g_r + g_r p t_r)
    """
    x = slab.x
    p = torch.sigmoid(x) if saved.prob is None else torch.sigmoid(x, out=saved.prob)
    sums = (slab.y.sum(2), *((weighted_sums(p, slab.m), weighted_sums(p, slab.y)) if overlap else (None, None)))
    if not cross_entropy:
        return sums
    q = torch.sub(1, p)
    larger = torch.maximum(p, q)
    log_larger = torch.log(larger).addcdiv_(torch.rsub(q, 1).sub_(p), larger)
    softplus = torch.clamp_min(x, 0).sub_(log_larger)
    if saved.slope_n is None:
        ce_n = weighted_sums(softplus, slab.complement_weight())
    else:
        power = torch.pow(p, complement_exponent, out=larger)
        _addcmul(p, q, softplus, complement_exponent, out=saved.slope_n).mul_(power)
        ce_n = power.mul_(softplus).mul_(slab.complement_weight()).sum(2)
    log_p = log_larger.add_(torch.clamp_max(x, 0))
    if saved.slope_r is not None:
        power = q.pow(region_exponent)
        log_p.mul_(power)  # -t_r
        torch.mul(q, power, out=saved.slope_r)
        _addcmul(saved.slope_r, p, log_p, -region_exponent, out=saved.slope_r).neg_()
    return sums + (ce_n, log_p.mul_(slab.weight).sum(2).neg_())


def _addcmul(base: Tensor, a: Tensor, b: Tensor, factor: Union[float, Tensor], out: Tensor) -> Tensor:
    """``base + factor a b`` into ``out`` (one pass for a float factor; ``out`` may be ``base``)."""
    if isinstance(factor, Tensor):
        return torch.add(base, torch.mul(a, b).mul_(factor), out=out)
    return torch.addcmul(base, a, b, value=factor, out=out)


class _RegionStatistics(torch.autograd.Function):
    """The sums of the module docstring, as (B, 2R) tables (complements first), slab by slab.

    Backward. With ``G``, ``T`` and ``E`` the gradients of the loss with respect to the predicted,
    true-positive and cross-entropy tables, per sample and channel (``_n`` complement, ``_r`` region)

        A = G_r - G_n - T_n     (predicted_r rises, the complement's predicted and true-positive sums fall)
        B = T_r + T_n           (both true-positive sums rise with TP_r)

    and the focal slopes ``S_n``, ``S_r`` of :func:`_forward_slab`:

        dL/dx = p q (m A + y B) + v y (E_r S_r - E_n S_n) + v m E_n S_n

    The forward keeps two input-sized tensors at most (:class:`_Saved`; ``p q = p - p^2``); target, mask and
    weights are the caller's. Only first derivatives are implemented: double backward is a clear error
    (:mod:`unifocal.losses._autograd`).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, mask: Optional[Tensor], complement_exponent, region_exponent,
                voxel_weight: Optional[Tensor], cross_entropy: bool, overlap: bool):
        x, y, m, v = _flat(logits, target, mask, voxel_weight)
        count = m.sum(2) if m is not None else x.new_full((x.shape[0], 1), float(x.shape[2]))
        saved = _saved_layout(x, cross_entropy, complement_exponent, region_exponent)
        sums = []  # per slab: actual, predicted, true positives and (with the cross entropy) the two focal sums
        for parts in _slabs(_slab_length(x), x, y, m, v, *saved):
            sums.append(_forward_slab(_Slab(*parts[:4]), _Saved(*parts[4:]), cross_entropy, overlap,
                                      complement_exponent, region_exponent))
        # One addition over the slabs per table, not one per slab and table (none for one slab).
        actual, predicted, true_positive, *focal = (table[0] if len(table) == 1 or table[0] is None
                                                    else torch.stack(table).sum(0) for table in zip(*sums))
        ctx.save_for_backward(logits, target, mask, voxel_weight, saved.prob, saved.slope_n, saved.slope_r)
        actual_table = complement_first(actual, count)
        ctx.mark_non_differentiable(actual_table)
        ctx.set_materialize_grads(False)
        if overlap:
            predicted, true_positive = (complement_first(predicted, count),
                                        torch.cat([count - actual - predicted + true_positive, true_positive], 1))
        return predicted, true_positive, actual_table, torch.cat(focal, 1) if cross_entropy else None

    @staticmethod
    @first_order
    def backward(ctx, grad_predicted: Optional[Tensor], grad_tp: Optional[Tensor], _, grad_ce: Optional[Tensor]):
        logits, target, mask, voxel_weight, prob, slope_n, slope_r = ctx.saved_tensors
        r = logits.shape[1]
        x, y, m, v = _flat(logits, target, mask, voxel_weight)

        def roles(table: Optional[Tensor]):
            """(complement, region) columns of a (B, 2R) gradient table as (B, R, 1); 0 when absent."""
            return (0.0, 0.0) if table is None else (table[:, :r, None], table[:, r:, None])

        g_n, g_r = roles(grad_predicted)
        t_n, t_r = roles(grad_tp)
        e_n, e_r = roles(grad_ce)
        along_mask, along_target = g_r - g_n - t_n, t_r + t_n  # A and B above
        grad = torch.empty_like(x)
        for *inputs, out, p, s_n, s_r in _slabs(_slab_length(x), x, y, m, v, grad, prob, slope_n, slope_r):
            slab = _Slab(*inputs)
            p = torch.sigmoid(slab.x) if p is None else p  # not kept: both slopes were
            if grad_predicted is None and grad_tp is None:
                out.zero_()
            else:  # p q (m A + y B)
                torch.mul(slab.y, along_target, out=out)
                out = out.add_(along_mask) if slab.m is None else out.addcmul_(slab.m, along_mask)
                out.mul_(torch.addcmul(p, p, p, value=-1))
            if grad_ce is not None:
                s_n = p if s_n is None else s_n  # S_n = p when its exponent is 0
                # E_r S_r, with S_r = -q = p - 1 when its exponent is 0
                region = torch.sub(p, 1).mul_(e_r) if s_r is None else torch.mul(s_r, e_r)
                # v y (E_r S_r - E_n S_n) + v m E_n S_n
                out.addcmul_(region.addcmul_(s_n, e_n, value=-1), slab.weight)
                out.addcmul_(s_n if slab.counted is None else s_n * slab.counted, e_n)
        return grad.view_as(logits), None, None, None, None, None, None, None


def _flat(logits: Tensor, target: Tensor, mask: Optional[Tensor], voxel_weight: Optional[Tensor]):
    """(B, R, N) logits and target, (B, 1, N) mask and voxel weights (or None)."""
    return tuple(t if t is None else t.reshape(*t.shape[:2], -1) for t in (logits, target, mask, voxel_weight))

