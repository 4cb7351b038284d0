"""What the hand-written passes of unifocal.losses share: first-order backward, per-class tables, weighted
sums, and when none can run."""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.autograd import forward_ad


def first_order(backward: Callable) -> Callable:
    """A hand-written backward that runs without building a graph and refuses double backward
    (``create_graph=True``) with a clear error, where torch's ``once_differentiable`` returns gradients
    silently treated as constants when the incoming gradients need none. Autocast is off inside: it would
    run the batched products in half precision, and the gradients stay in the compute dtype."""

    def checked(ctx, *grads):
        if torch.is_grad_enabled() and not torch.compiler.is_compiling():
            raise RuntimeError("the fused statistics of unifocal.losses do not support double backward "
                               "(create_graph=True, gradient penalties); compute such terms with another loss")
        device = next((g.device.type for g in grads if g is not None), "cpu")
        with torch.no_grad(), torch.autocast(device, enabled=False):
            return backward(ctx, *grads)

    return checked


def class_table(values: Sequence[float], like: Tensor) -> Tensor:
    """Per-class values as a (1, K, 1, ...) tensor that broadcasts against ``like`` ((B, K, ...))."""
    return like.new_tensor(values).view(1, -1, *([1] * (like.ndim - 2)))


def scalar_or_table(values: Sequence[float], like: Tensor) -> Union[float, Tensor]:
    """One float when every class shares the value (a scalar power is cheaper), else :func:`class_table`."""
    return float(values[0]) if len(set(values)) == 1 else class_table(values, like)


def weighted_sums(values: Tensor, weight: Optional[Tensor]) -> Tensor:
    """(B, K) sums over the last axis of (B, K, N) ``values``, weighted by (B, 1, N) or (B, K, N) ``weight``
    (None: 1); a batched product for a weight shared by the K rows, with no (B, K, N) temporary."""
    if weight is None:
        return values.sum(2)
    if weight.shape[1] == 1:
        return torch.bmm(values, weight.transpose(1, 2)).squeeze(2)
    return torch.linalg.vecdot(values, weight)


def func_transformed() -> bool:
    """Whether a ``torch.func`` transform (grad, vjp, jacrev, jvp, vmap) traces the call.

    torch has no public query for this: the one read of its private flag is here, and
    tests/test_torch_private_api.py fails loudly if torch renames it or changes what it reports."""
    return torch._C._are_functorch_transforms_active()


def device_assert(condition: Tensor, message: str) -> None:
    """Assert a 0-dim bool tensor inside a compiled graph, without reading it back to the host (on CUDA a
    failure is a device-side assert). torch's only such assert is private (``torch._assert_async``); this is
    its one use, watched by tests/test_torch_private_api.py."""
    torch._assert_async(condition, message)


def autograd_only(scores: Tensor) -> bool:
    """Whether the statistics of ``scores`` must be formed by autograd alone: under ``torch.func``, which
    cannot run the hand-written backward passes (it needs their ``setup_context`` form, which would return
    every saved intermediate as an output), and when ``scores`` carry a forward-mode tangent
    (``torch.autograd.forward_ad``), which needs a ``jvp`` they do not have."""
    return func_transformed() or forward_ad.unpack_dual(scores).tangent is not None
