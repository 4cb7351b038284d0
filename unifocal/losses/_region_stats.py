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
backward written out next to it, and keeps two (B, R, *S) tensors for the backward (``p`` and
``-log(1 - p)``). On the CPU it works through the voxels in slabs small enough for the cache
(:func:`_slab_length`): a dozen elementwise passes over a slab cost less than two over the whole tensor,
and the temporaries stay small. Probability input (``from_logits=False``) takes the composed path over
the complement-first tensors instead.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["complement_first", "region_statistics"]

# Elements (B x R x slab length) of one slab on the CPU: the dozen slab-sized temporaries of a pass stay in
# a core's cache (measured: 3x faster than whole-tensor passes at 2 x 3 x 96^3).
_SLAB_ELEMENTS = 1 << 17


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
) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """(B, 2R) predicted, true-positive, actual and (if ``cross_entropy``) focal cross-entropy sums of
    region logits (B, R, *S) for a target (B, R, *S) that is zero outside ``mask`` (B, 1, *S).

    ``exponents``: focal exponents, one value or 2R (complements first); ``voxel_weight``: (B, 1, *S) or None.
    """
    r = logits.shape[1]
    if len(exponents) not in (1, 2 * r):
        raise ValueError(f"{len(exponents)} focal exponents for {r} regions (expected 1 or {2 * r})")
    roles = (exponents[:1], exponents[:1]) if len(exponents) == 1 else (exponents[:r], exponents[r:])
    complement, region = (_role_exponent(values, logits) for values in roles)
    # Autocast would run the reductions in half precision; the sums must stay in the compute dtype.
    with torch.autocast(logits.device.type, enabled=False):
        return _RegionStatistics.apply(logits, target, mask, complement, region, voxel_weight, cross_entropy)


def _role_exponent(values: Sequence[float], like: Tensor) -> Union[float, Tensor]:
    """One float when all channels share the exponent, else a (1, R, 1) table for the flattened (B, R, N)."""
    if len(set(values)) == 1:
        return float(values[0])
    return like.new_tensor([float(v) for v in values]).view(1, -1, 1)


def _is_zero(exponent: Union[float, Tensor]) -> bool:
    return not isinstance(exponent, Tensor) and exponent == 0


def _is_compiling() -> bool:
    return bool(getattr(torch, "compiler", None) and torch.compiler.is_compiling())


def _slab_length(x: Tensor) -> int:
    """Voxels per slab of the flattened (B, R, N) logits: cache-sized on the CPU (equal slabs of at most
    ``_SLAB_ELEMENTS``); the whole of N on an accelerator (whose kernels are launch- and bandwidth-bound, not
    cache-bound) and under torch.compile (which fuses the passes itself)."""
    b, r, n = x.shape
    if x.device.type != "cpu" or _is_compiling():
        return max(n, 1)
    count = -(-b * r * n // _SLAB_ELEMENTS)
    return max(-(-n // max(count, 1)), 1)


def _slabs(n: int, length: int):
    return (slice(start, min(start + length, n)) for start in range(0, n, length))


def _sums(values: Tensor, weight: Optional[Tensor]) -> Tensor:
    """(B, R) sums over the last axis of (B, R, L) ``values``, weighted by (B, 1, L) or (B, R, L) ``weight``."""
    if weight is None:
        return values.sum(2)
    if weight.shape[1] == 1:
        return torch.bmm(values, weight.transpose(1, 2)).squeeze(2)
    return torch.linalg.vecdot(values, weight)


class _Slab:
    """One slab of the flattened (B, R, N) input: logits ``x``, target ``y``, mask ``m`` and voxel weights ``v``
    ((B, 1, L) or None), ``p = sigmoid(x)``, ``q = 1 - p`` and ``softplus(x) = -log q`` (then
    ``log p = x - softplus(x)``).

    The focal terms and their derivatives with respect to ``x`` (from ``d log p/dx = q`` and
    ``d log q/dx = -p``), bounded for every p and without a division:

        complement:  t_n = -log q p^g_n   S_n = p^g_n (p - g_n q log q)      (p for g_n = 0)
        region:      t_r = -log p q^g_r   S_r = q^g_r (g_r p log p - q)      (-q for g_r = 0)
    """

    def __init__(self, x: Tensor, y: Tensor, m: Optional[Tensor], v: Optional[Tensor], p: Tensor,
                 softplus: Optional[Tensor]) -> None:
        self.x, self.y, self.m, self.p, self.softplus = x, y, m, p, softplus
        self.q = torch.sub(1, p)
        self.weight = y if v is None else y * v  # the region's voxel weights; the complement's: counted - weight
        self.counted = v if m is None else (m if v is None else m * v)

    @classmethod
    def first(cls, x: Tensor, y: Tensor, m: Optional[Tensor], v: Optional[Tensor], p: Tensor,
              softplus: Optional[Tensor]) -> "_Slab":
        """Computes ``p`` into the slab ``p`` and, if given, ``softplus(x)`` into ``softplus`` as
        ``max(x, 0) - log(max(p, q))``: the larger of the two probabilities has full relative precision, so
        this is exact to round-off for every x with one logarithm (``F.softplus`` takes an exponential and a
        logarithm per element, the costliest pass here)."""
        slab = cls(x, y, m, v, torch.sigmoid(x, out=p), softplus)
        if softplus is not None:
            torch.sub(torch.clamp_min(x, 0), torch.maximum(slab.p, slab.q).log_(), out=softplus)
        return slab

    def cross_entropy_sums(self, complement_exponent, region_exponent) -> tuple[Tensor, Tensor]:
        """(B, R) sums ``sum v (m - y) t_n`` and ``sum v y t_r``: both terms in one (B, 2R, L) buffer, whose
        weighted sums are one batched product over all channel pairs (the diagonal is kept)."""
        b, r, length = self.x.shape
        terms = self.x.new_empty(b, 2 * r, length)
        t_n, t_r = terms[:, :r], terms[:, r:]
        if _is_zero(complement_exponent):
            t_n.copy_(self.softplus)
        else:
            torch.pow(self.p, complement_exponent, out=t_n).mul_(self.softplus)
        torch.sub(self.softplus, self.x, out=t_r)  # -log p
        if not _is_zero(region_exponent):
            t_r.mul_(self.q.pow(region_exponent))
        weighted = torch.bmm(terms, self.weight.transpose(1, 2))  # (B, 2R, R)
        return _sums(t_n, self.counted) - weighted[:, :r].diagonal(0, 1, 2), weighted[:, r:].diagonal(0, 1, 2)

    def cross_entropy_gradient(self, out: Tensor, complement_exponent, region_exponent, e_n: Tensor,
                               e_r: Tensor) -> None:
        """Adds ``v (y E_r S_r + (m - y) E_n S_n)`` for per-channel (B, R, 1) gradients ``E_n``, ``E_r`` to
        ``out``."""
        p, q, softplus = self.p, self.q, self.softplus
        if _is_zero(complement_exponent):
            s_n = p
        else:  # p^g (p + g q softplus)
            s_n = _addcmul(p, q, softplus, complement_exponent).mul_(p.pow(complement_exponent))
        if _is_zero(region_exponent):
            region = torch.mul(q, -e_r)
        else:  # E_r S_r = -E_r q^g (q - g p log p)
            region = _addcmul(q, p, torch.sub(self.x, softplus), -region_exponent).mul_(q.pow(region_exponent))
            region.mul_(-e_r)
        # v y (E_r S_r - E_n S_n) + v m E_n S_n
        out.addcmul_(region.addcmul_(s_n, e_n, value=-1), self.weight)
        out.addcmul_(s_n if self.counted is None else s_n * self.counted, e_n)


def _addcmul(base: Tensor, a: Tensor, b: Tensor, factor: Union[float, Tensor]) -> Tensor:
    """``base + factor a b`` (one pass for a float factor)."""
    if isinstance(factor, Tensor):
        return torch.mul(a, b).mul_(factor).add_(base)
    return torch.addcmul(base, a, b, value=factor)


class _RegionStatistics(torch.autograd.Function):
    """The sums of the module docstring, as (B, 2R) tables (complements first), slab by slab.

    Backward. With ``G``, ``T`` and ``E`` the gradients of the loss with respect to the predicted,
    true-positive and cross-entropy tables, per sample and channel (``_n`` complement, ``_r`` region)

        A = G_r - G_n - T_n     (predicted_r rises, the complement's predicted and true-positive sums fall)
        B = T_r + T_n           (both true-positive sums rise with TP_r)

    and the slopes ``S_n``, ``S_r`` of :class:`_Slab`:

        dL/dx = p (1 - p) (m A + y B) + v (y E_r S_r + (m - y) E_n S_n)

    The forward keeps ``p`` and, with the cross entropy, ``softplus(x)`` (the costliest passes to repeat);
    target, mask and weights are the caller's. Only first derivatives are implemented (no double backward).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, mask: Optional[Tensor], complement_exponent, region_exponent,
                voxel_weight: Optional[Tensor], cross_entropy: bool):
        b, r = logits.shape[:2]
        x, y, m, v = _flat(logits, target, mask, voxel_weight)
        count = m.sum(2) if m is not None else x.new_full((b, 1), float(x.shape[2]))
        actual = y.sum(2)
        prob = torch.empty_like(x)
        softplus = torch.empty_like(x) if cross_entropy else None
        predicted, true_positive, ce_n, ce_r = (x.new_zeros(b, r) for _ in range(4))
        for part in _slabs(x.shape[2], _slab_length(x)):
            slab = _Slab.first(x[:, :, part], y[:, :, part], _part(m, part), _part(v, part), prob[:, :, part],
                               _part(softplus, part))
            predicted += _sums(slab.p, slab.m)
            true_positive += _sums(slab.p, slab.y)
            if cross_entropy:
                complement, region = slab.cross_entropy_sums(complement_exponent, region_exponent)
                ce_n += complement
                ce_r += region
        ctx.save_for_backward(logits, target, mask, voxel_weight, prob, softplus)
        ctx.exponents = (complement_exponent, region_exponent)
        ctx.device_type = logits.device.type
        actual_table = complement_first(actual, count)
        ctx.mark_non_differentiable(actual_table)
        ctx.set_materialize_grads(False)
        return (complement_first(predicted, count),
                torch.cat([count - actual - predicted + true_positive, true_positive], 1),
                actual_table,
                torch.cat([ce_n, ce_r], 1) if cross_entropy else None)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_predicted: Optional[Tensor], grad_tp: Optional[Tensor], _, grad_ce: Optional[Tensor]):
        with torch.autocast(ctx.device_type, enabled=False):
            grad = _RegionStatistics._backward(ctx, grad_predicted, grad_tp, grad_ce)
        return grad, None, None, None, None, None, None

    @staticmethod
    def _backward(ctx, grad_predicted: Optional[Tensor], grad_tp: Optional[Tensor],
                  grad_ce: Optional[Tensor]) -> Tensor:
        logits, target, mask, voxel_weight, prob, softplus = ctx.saved_tensors
        r = logits.shape[1]
        x, y, m, v = _flat(logits, target, mask, voxel_weight)

        def roles(table: Optional[Tensor]):
            """(complement, region) columns of a (B, 2R) gradient table as (B, R, 1); 0 when absent."""
            if table is None:
                return 0.0, 0.0
            return table[:, :r, None], table[:, r:, None]

        g_n, g_r = roles(grad_predicted)
        t_n, t_r = roles(grad_tp)
        e_n, e_r = roles(grad_ce)
        along_mask, along_target = g_r - g_n - t_n, t_r + t_n  # A and B above
        grad = torch.empty_like(x)
        for part in _slabs(x.shape[2], _slab_length(x)):
            slab = _Slab(x[:, :, part], y[:, :, part], _part(m, part), _part(v, part), prob[:, :, part],
                         _part(softplus, part))
            out = grad[:, :, part]
            if grad_predicted is None and grad_tp is None:
                out.zero_()
            else:  # p (1 - p) (m A + y B)
                torch.mul(slab.y, along_target, out=out)
                out = out.add_(along_mask) if slab.m is None else out.addcmul_(slab.m, along_mask)
                out.mul_(slab.p).mul_(slab.q)
            if grad_ce is not None:
                slab.cross_entropy_gradient(out, *ctx.exponents, e_n, e_r)
        return grad.view_as(logits)


def _flat(logits: Tensor, target: Tensor, mask: Optional[Tensor], voxel_weight: Optional[Tensor]):
    """(B, R, N) logits and target, (B, 1, N) mask and voxel weights (or None)."""
    b, r = logits.shape[:2]
    flat = [t if t is None else t.reshape(b, t.shape[1], -1) for t in (logits, target, mask, voxel_weight)]
    return tuple(flat)


def _part(values: Optional[Tensor], part: slice) -> Optional[Tensor]:
    return None if values is None else values[:, :, part]
