"""The shape every loss shares: a module with validated hyperparameters and a thin functional form.

A loss is a :class:`SegmentationLoss` subclass. Its ``__init__`` checks each hyperparameter once, with the
checks below (a message naming the argument; values are never coerced: a string is not a list of classes,
a bool is not a label or a number), and stores it as an attribute. Its ``compute(batch)`` writes the
formula once, over a :class:`~unifocal.losses._inputs.Prepared` batch and the statistics of
:mod:`unifocal.losses._stats`, and returns a :class:`~unifocal.losses._stats.BatchLoss`. Input validation
and preparation (:func:`~unifocal.losses._inputs.prepare`) and the reduction happen in
:meth:`SegmentationLoss.forward`, the same for every loss. The functional form of a loss is
:func:`functional` of its class, so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from typing import Callable, Optional, Union

import numpy as np
from torch import Tensor, nn

from ..validate import check_bool, check_number, check_numbers
from ._inputs import prepare
from ._stats import REDUCTIONS, BatchLoss


def check_unit_interval(name: str, value) -> float:
    """A number in [0, 1] (a weight or a fraction), as :func:`check_number`."""
    return check_number(name, value, 0.0, 1.0)


def check_label(name: str, value) -> Optional[int]:
    """None or an integer label value (a bool or a float is not a label)."""
    if value is not None and (not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_))):
        raise ValueError(f"{name} must be an integer label value or None; got {value!r} ({type(value).__name__})")
    return None if value is None else int(value)


def check_classes(name: str, value) -> Optional[tuple[int, ...]]:
    """None or a list/tuple of distinct non-negative integer class indices (a string is not a list of classes)."""
    if value is not None and not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"{name} must be a list of class indices or None; got {value!r} ({type(value).__name__})")
    classes = None if value is None else tuple(check_label(f"{name}[{i}]", c) for i, c in enumerate(value))
    if classes is not None and (any(c < 0 for c in classes) or len(set(classes)) != len(classes)):
        raise ValueError(f"{name} must hold distinct non-negative class indices; got {classes}")
    return classes


class SegmentationLoss(nn.Module):
    """Base of every loss: the options all losses share, input preparation and reduction.

    Args:
        from_logits: the input holds raw network outputs (default); False for probabilities.
        multilabel: independent sigmoid channels (regions) instead of exclusive softmax classes.
        ignore_index: label value (label-map targets) whose voxels count nowhere; ``forward(..., mask=)``
            marks ignored voxels for any target.
        reduction: "mean" (the batch mean as the loss defines it), "sum" or "none" (per-sample values, (B,)).
        ddp: each call sees one rank's share of a batch split over ``torch.distributed`` ranks: batch sums
            (``batch_dice``) are all-reduced and voxel means divide by the global count of counted voxels, so
            the ranks' mean loss and (after DDP's averaging) the parameter gradients are those of the whole
            batch. Off by default: no collective runs unless asked, so a loss computed on one rank alone never
            waits; no effect without a process group of several ranks.

    Gradients are first order: the hand-written backward passes refuse double backward (``create_graph``).
    ``torch.func.grad`` and forward-mode AD work (autograd's passes then); ``vmap`` and the distance-map losses
    raise.
    """

    def __init__(self, *, from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__()
        self.from_logits = check_bool("from_logits", from_logits)
        self.multilabel = check_bool("multilabel", multilabel)
        self.ignore_index = check_label("ignore_index", ignore_index)
        if not isinstance(reduction, str) or reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
        self.reduction = reduction
        self.ddp = check_bool("ddp", ddp)

    def forward(self, input: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Loss of ``input`` (B, C, *S) against ``target`` (label map (B, 1, *S) / (B, *S) or one-hot/soft
        (B, C, *S)); ``mask`` (B, 1, *S), nonzero where a voxel counts, is optional."""
        batch = prepare(input, target, from_logits=self.from_logits, multilabel=self.multilabel,
                        ignore_index=self.ignore_index, mask=mask, ddp=self.ddp)
        return self.compute(batch).reduce(self.reduction)

    def compute(self, batch) -> BatchLoss:
        """The loss of a prepared batch in both reduced forms."""
        raise NotImplementedError

    @property
    def options(self) -> dict:
        """The hyperparameters as validated at construction, by name."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "training"}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def functional(loss_class: type) -> Callable[..., Tensor]:
    """The functional form of a loss class: ``f(input, target, *, mask=None, **options)`` is
    ``loss_class(**options)(input, target, mask=mask)``.

    Its name is the class name in snake case (``DiceCELoss`` -> ``dice_ce_loss``), its docstring the class's,
    and its signature (``inspect.signature``) ``(input, target, *, mask=None, <the class's options>)``."""

    def loss(input: Tensor, target: Tensor, *, mask: Optional[Tensor] = None, **options) -> Tensor:
        return loss_class(**options)(input, target, mask=mask)

    words = r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])"  # DiceCELoss -> dice_ce_loss
    loss.__name__ = loss.__qualname__ = re.sub(words, "_", loss_class.__name__).lower()
    loss.__module__ = loss_class.__module__
    loss.__doc__ = loss_class.__doc__
    own = list(inspect.signature(loss).parameters.values())[:3]  # input, target, mask
    loss.__signature__ = inspect.signature(loss).replace(
        parameters=[*own, *inspect.signature(loss_class).parameters.values()])
    return loss

