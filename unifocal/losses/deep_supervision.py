"""Deep supervision: a weighted sum of one loss over several output scales.

Accepts what the two frameworks pass: nnU-Net's list of logits (full resolution first) with a list of
targets per scale, and MONAI DynUNet's single stacked tensor (B, k+1, C, *S) in training mode, whose
heads are all upsampled to full size (``stacked_dim=1``). MONAI's own DeepSupervisionLoss hands that
stacked tensor straight to the inner loss; here it is unbound first.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import check_numbers

__all__ = ["deep_supervision_weights", "DeepSupervisionLoss", "WEIGHT_SCHEMES"]

WEIGHT_SCHEMES = ("nnunet", "exp", "uniform")
STACKED_DIMS = (0, 1)
Weights = Union[str, Sequence[float]]


def deep_supervision_weights(num_outputs: int, scheme: Weights = "nnunet") -> list[float]:
    """Weights for ``num_outputs`` outputs, full resolution first.

    - "nnunet": 1/2^i, the lowest-resolution output weighted 0 (when there are several), normalised to
      sum 1 (nnU-Net v2's default trainer).
    - "exp": 1/2^i normalised to sum 1, every output kept.
    - "uniform": 1/n each.
    - a sequence: used as given (not normalised); its length must equal ``num_outputs``.
    """
    if num_outputs < 1:
        raise ValueError(f"deep supervision needs at least one output; got {num_outputs}")
    scheme = _check_weights(scheme)
    if not isinstance(scheme, str):
        if len(scheme) != num_outputs:
            raise ValueError(f"{len(scheme)} deep supervision weights given for {num_outputs} outputs")
        return list(scheme)
    if scheme == "uniform":
        raw = [1.0] * num_outputs
    else:
        raw = [0.5**i for i in range(num_outputs)]
        if scheme == "nnunet" and num_outputs > 1:
            raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


def _check_weights(weights: Weights) -> Weights:
    """A scheme name, or finite weights >= 0, not all 0, whose sum is finite (1e308 + 1e308 is not)."""
    if isinstance(weights, str):
        if weights not in WEIGHT_SCHEMES:
            raise ValueError(f"weight scheme must be one of {WEIGHT_SCHEMES} or a sequence of numbers; got {weights!r}")
        return weights
    weights = check_numbers("deep supervision weights", weights, scalar=False)
    if min(weights) < 0 or not 0 < sum(weights) < math.inf:
        raise ValueError(f"deep supervision weights must be >= 0 and not all 0, with a finite sum; got {weights}")
    return weights


def _resize_target(target: Tensor, size: torch.Size) -> Tensor:
    """Nearest-neighbour resize of a (B, 1 or C, *S) or (B, *S) target or mask to spatial ``size`` (as
    nnU-Net's DownsampleSegForDSTransform does), keeping its dtype."""
    if target.shape[-len(size):] == size:
        return target
    channels = target if target.ndim == len(size) + 2 else target.unsqueeze(1)
    resized = F.interpolate(channels.float(), size=tuple(size), mode="nearest-exact").to(target.dtype)
    return resized if target.ndim == len(size) + 2 else resized.squeeze(1)


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of ``loss`` over deep-supervision outputs.

    Args:
        loss: the loss applied at every scale, called as ``loss(output, target, **kwargs)``.
        weights: a scheme name ("nnunet", "exp", "uniform", see :func:`deep_supervision_weights`) or one
            number per output. Outputs with weight 0 are not evaluated.
        stacked_dim: the axis of a stacked tensor that holds the heads: 1 for MONAI DynUNet's (B, k+1, C, *S)
            training output, 0 for heads first ((k+1, B, C, *S), ``torch.stack`` of the outputs); None for
            lists. The heads always come before the class axis, so no other axis is accepted (at axis 2 a
            head count equal to the class count would silently swap heads and classes).

    ``forward(outputs, target, **kwargs)``: ``outputs`` is a list/tuple of (B, C, *S_i) tensors (full
    resolution first), a stacked tensor (with ``stacked_dim``), or a single (B, C, *S) tensor (no deep
    supervision: plain ``loss``). ``target`` is a list with one target per output, or one target
    resized by nearest neighbour to each output's size; ``mask`` (optional, for losses that take one) the
    same. Extra keyword arguments go to ``loss``.
    """

    def __init__(self, loss: nn.Module, *, weights: Weights = "nnunet", stacked_dim: Optional[int] = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = _check_weights(weights)
        if stacked_dim is not None and (not isinstance(stacked_dim, numbers.Integral) or isinstance(stacked_dim, bool)
                                        or stacked_dim not in STACKED_DIMS):
            raise ValueError(f"stacked_dim must be 0 or 1 (the heads' axis, before the class axis: 1 for MONAI "
                             f"DynUNet's (B, k+1, C, *S)) or None; got {stacked_dim!r} ({type(stacked_dim).__name__})")
        self.stacked_dim = stacked_dim

    def forward(self, outputs: Union[Tensor, Sequence[Tensor]], target: Union[Tensor, Sequence[Tensor]],
                mask: Union[Tensor, Sequence[Tensor], None] = None, **kwargs) -> Tensor:
        if isinstance(outputs, Tensor):
            if self.stacked_dim is None:  # no deep supervision: one output, one target (first of a list)
                first = [t if t is None or isinstance(t, Tensor) else t[0] for t in (target, mask)]
                return self._loss(outputs, *first, kwargs)
            _check_stacked_batch(outputs, self.stacked_dim, target)
            outputs = outputs.unbind(self.stacked_dim)
        targets = _per_output("targets", target, outputs)
        masks = [None] * len(outputs) if mask is None else _per_output("masks", mask, outputs)
        weights = deep_supervision_weights(len(outputs), self.weights)
        terms = [w * self._loss(out, tgt, m, kwargs) for w, out, tgt, m in zip(weights, outputs, targets, masks) if w != 0]
        return torch.stack(terms).sum(0)

    def _loss(self, output: Tensor, target: Tensor, mask: Optional[Tensor], kwargs: dict) -> Tensor:
        return self.loss(output, target, **kwargs) if mask is None else self.loss(output, target, mask=mask, **kwargs)

    def extra_repr(self) -> str:
        return f"weights={self.weights!r}, stacked_dim={self.stacked_dim}"


def _check_stacked_batch(stacked: Tensor, stacked_dim: int, target: Union[Tensor, Sequence[Tensor]]) -> None:
    """The heads of a stacked tensor hold the target's batch: a stacked_dim that does not match how the tensor
    was stacked splits it along the batch instead (heads of k+1 samples)."""
    batch = (target if isinstance(target, Tensor) else target[0]).shape[0]
    head_batch = stacked.shape[1 - stacked_dim]
    if head_batch != batch:
        raise ValueError(f"stacked_dim={stacked_dim} splits the stacked output {tuple(stacked.shape)} into "
                         f"{stacked.shape[stacked_dim]} heads of batch size {head_batch}, "
                         f"but the target has {batch} samples: the heads are on the other axis (1 for MONAI "
                         "DynUNet's (B, k+1, C, *S), 0 for (k+1, B, C, *S))")


def _per_output(name: str, given: Union[Tensor, Sequence[Tensor]], outputs: Sequence[Tensor]) -> list[Tensor]:
    """One target (or mask) per output: a list as given, or one tensor resized to each output's size."""
    if isinstance(given, Tensor):
        return [_resize_target(given, out.shape[2:]) for out in outputs]
    given = list(given)
    if len(given) != len(outputs):
        raise ValueError(f"{len(outputs)} deep supervision outputs but {len(given)} {name}")
    return given
