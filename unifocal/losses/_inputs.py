"""Validation and preparation of (input, target) pairs, shared by every loss.

Every loss reduces its input to one :class:`Prepared` record and writes only its own formula over it and
over the class statistics of :func:`unifocal.losses._stats.class_statistics`. Exclusive classes (default):
``prob = softmax(input)`` over ``C`` channels, background included. Region mode (``multilabel=True``):
channel ``c`` is a binary problem, ``sigmoid(x_c)`` against its complement; the losses see ``K = 2C``
classes, the complements first (:mod:`unifocal.losses._region_stats`), and divide their class sums by
``num_problems = C``, so they average the per-channel binary losses, as the Unified Focal loss and
nnU-Net's region training do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor
import torch.nn.functional as F

from ._autograd import device_assert, func_transformed
from ._region_stats import complement_first


@dataclass(eq=False)
class Prepared:
    """One validated batch, ready for a loss formula.

    Attributes:
        scores: (B, C, *S) the input in the compute dtype (float32, or float64 for float64 input): logits
            (``from_logits``) or probabilities; K = C classes, or K = 2C for multilabel input
            (:attr:`class_scores`).
        mask: (B, 1, *S) 1 where a voxel counts, 0 where it is ignored; None when every voxel counts.
        num_problems: 1 for exclusive classes, C for multilabel input (K = 2C).
        multilabel: whether the input was multilabel.
        labels: (B, 1, *S) integer class of each voxel for an exclusive label-map target (any value at
            ignored voxels), else None.
        dense_target: (B, C, *S) one-hot or soft target, zero outside ``mask``, when the target was not a
            label map; else None. A region (multilabel) target without a mask keeps its dtype (bool, integer
            or float) and is not copied. Read :attr:`target` for the K classes in the compute dtype.
        from_logits: whether ``scores`` are logits.
        ddp: the batch is one rank's share of a batch split over ``torch.distributed`` ranks (see
            :class:`~unifocal.losses._base.SegmentationLoss`).

    The dense (B, K, *S) properties ``class_scores``, ``log_prob``, ``prob`` and ``target`` are formed on
    first use and kept (in ``_class_scores`` ...), so a loss whose statistics come from a fused pass never
    forms them. Every tensor is contiguous (a copy of a strided input), as the fused passes' flat views need.
    """

    scores: Tensor
    mask: Optional[Tensor]
    num_problems: int
    multilabel: bool
    labels: Optional[Tensor] = None
    dense_target: Optional[Tensor] = None
    from_logits: bool = True
    ddp: bool = False
    _class_scores: Optional[Tensor] = field(default=None, repr=False)
    _log_prob: Optional[Tensor] = field(default=None, repr=False)
    _prob: Optional[Tensor] = field(default=None, repr=False)
    _target: Optional[Tensor] = field(default=None, repr=False)

    @property
    def class_scores(self) -> Tensor:
        """(B, K, *S) ``scores`` per class: for multilabel input the complement-first form (``-x`` / ``1 - p``
        before each channel's own value)."""
        if self.multilabel and self._class_scores is None:
            self._class_scores = complement_first(self.scores, 0.0 if self.from_logits else 1.0)
        return self._class_scores if self.multilabel else self.scores

    @property
    def log_prob(self) -> Tensor:
        """(B, K, *S) log-probabilities: log_softmax / logsigmoid of logits, else the log of the input clamped
        at the smallest normal number (only then: logits never need it)."""
        if self._log_prob is None:
            if not self.from_logits:
                self._log_prob = self.class_scores.clamp_min(torch.finfo(self.scores.dtype).tiny).log()
            else:
                self._log_prob = F.logsigmoid(self.class_scores) if self.multilabel else F.log_softmax(self.scores, 1)
        return self._log_prob

    @property
    def prob(self) -> Tensor:
        """(B, K, *S) class probabilities (``exp(log_prob)`` from logits)."""
        if self._prob is None:
            self._prob = self.log_prob.exp() if self.from_logits else self.class_scores
        return self._prob

    @property
    def target(self) -> Tensor:
        """(B, K, *S) one-hot or soft target, zero at voxels outside ``mask``."""
        if self._target is None:
            if self.multilabel:
                self._target = complement_first(self.dense_target.to(self.scores.dtype),
                                                1.0 if self.mask is None else self.mask)
            else:
                self._target = self.dense_target if self.labels is None else \
                    one_hot(self.labels, self.num_classes, self.mask, self.scores.dtype)
        return self._target

    @property
    def batch_size(self) -> int:
        return self.scores.shape[0]

    @property
    def num_classes(self) -> int:
        return self.scores.shape[1] * (2 if self.multilabel else 1)


def one_hot(labels: Tensor, num_classes: int, mask: Optional[Tensor], dtype: torch.dtype) -> Tensor:
    """(B, K, *S) one-hot target of a (B, 1, *S) integer label map, zero where ``mask`` is 0.

    One comparison pass written straight into the float result (faster than a scatter into zeros, and no
    int64 copy of the labels). The class indices are formed in the label dtype when it holds all of them,
    else in int64 (float64 for float labels): in a narrower dtype they would wrap (uint8 class 256 + k
    would match label k).
    """
    floating = labels.is_floating_point()
    exact = 2 / torch.finfo(labels.dtype).eps if floating else torch.iinfo(labels.dtype).max
    wide = torch.float64 if floating else torch.int64
    classes = torch.arange(num_classes, device=labels.device, dtype=labels.dtype if num_classes - 1 <= exact else wide)
    classes = classes.view(1, num_classes, *([1] * (labels.ndim - 2)))
    shape = (labels.shape[0], num_classes, *labels.shape[2:])
    onehot = torch.eq(labels, classes, out=torch.empty(shape, dtype=dtype, device=labels.device))
    return onehot if mask is None else onehot.mul_(mask)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (gradient checks); everything else is computed in float32 (AMP safety)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


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


class _Check(NamedTuple):
    """One condition on the values of the input or the target.

    ``holds``: a 0-dim bool tensor; ``message``: what both paths report when it fails; ``detail``: the rest of
    the eager ValueError, formatted with the ``found`` values (0-dim tensors read back with the conditions);
    ``recheck``: a second, costlier condition that clears a failed ``holds`` (see :func:`_value_checks`).
    """

    holds: Tensor
    message: str
    detail: str = ""
    found: tuple = ()
    recheck: Optional[Callable[[], Tensor]] = None


def _value_checks(input: Tensor, from_logits: bool, multilabel: bool, labels: Optional[Tensor],
                  dense: Optional[Tensor], num_classes: int, ignore_index: Optional[int],
                  mask: Optional[Tensor] = None, counted: Optional[Tensor] = None) -> list[_Check]:
    """Every condition on the values of ``input``, the target (a label map ``labels`` or a ``dense``
    target) and the ``mask`` as given (``counted``: its 0/1 form), in the order they are reported, as 0-dim
    tensors: nothing is read back here.

    Logits are checked by their sum (one reading pass, no input-sized temporary; ``isfinite(input).all()``
    writes one and costs more than the softmax): a NaN or an infinity makes it non-finite, and only then are
    the extremes looked at, to tell an infinity in the input from a sum of finite logits that overflowed.
    Probabilities and targets are checked by their extremes (NaN propagates into them), which their range
    checks need anyway. A dense target of exclusive classes is a distribution over the classes at every
    counted voxel (one-hot, or soft as label smoothing makes it): an empty or multi-hot voxel is an error.
    """
    not_finite, dtype = "input contains NaN or Inf values", compute_dtype(input.dtype)
    if from_logits:
        checks = [_Check(input.sum(dtype=dtype).isfinite(), not_finite,
                         recheck=lambda: torch.stack(torch.aminmax(input)).isfinite().all())]
    else:
        low, high = torch.aminmax(input)
        checks = [_Check(low.isfinite() & high.isfinite(), not_finite),
                  _Check((low >= 0) & (high <= 1), "from_logits=False expects probabilities in [0, 1]",
                         ", but the input holds values in [{:.4g}, {:.4g}]; pass raw network outputs with "
                         "from_logits=True", (low, high))]
        if not multilabel:
            deviation = _deviation_from_one(input)
            checks.append(_Check(deviation <= _sum_tolerance(input), "from_logits=False with exclusive classes "
                                 "expects probabilities that sum to 1 over the class axis (dim 1)",
                                 "; the sums deviate by up to {:.4g}. Pass logits with from_logits=True, or use "
                                 "multilabel=True for independent (sigmoid) channels", (deviation,)))
    if mask is not None and mask.is_floating_point():
        checks.append(_Check(~mask.isnan().any(), "mask contains NaN values",
                             "; a mask is nonzero where a voxel counts and 0 where it is ignored"))
    for target in (labels, dense):
        if target is None or target.dtype == torch.bool:
            continue
        valid = target if ignore_index is None else target.masked_fill(_ignored(target, ignore_index), 0)
        # compared in the compute dtype: in a narrow label dtype the bound would wrap (uint8 300 is 44)
        low, high = (v.to(dtype) for v in torch.aminmax(valid))
        if target.is_floating_point():
            checks.append(_Check(low.isfinite() & high.isfinite(), "target contains NaN or Inf values"))
            if target is labels:
                checks.append(_Check((target == target.round()).all(), "a label-map target must hold integer "
                                     "class indices", "; found fractional values"))
        if target is dense:
            checks.append(_Check((low >= 0) & (high <= 1), "a one-hot/soft (B, C, *S) target must hold values in "
                                 "[0, 1]", "; found [{:.4g}, {:.4g}]. A label map must have a single channel: "
                                 "(B, 1, *S) or (B, *S)", (low, high)))

        else:
            hint = "" if ignore_index is None else f" or equal ignore_index={ignore_index}"
            unset = "" if ignore_index is not None else " (set ignore_index if it marks voxels to ignore)"
            checks.append(_Check((low >= 0) & (high < num_classes), f"target label values must lie in "
                                 f"[0, {num_classes}){hint}", "; found {:.0f}" + unset,
                                 (torch.where(low < 0, low, high),)))
    if dense is not None and not multilabel:
        checks.append(_one_class_per_voxel(dense, counted))
    return checks


def _deviation_from_one(values: Tensor, counted: Optional[Tensor] = None) -> Tensor:
    """The largest deviation from 1 of the sums of ``values`` over the class axis, at the ``counted`` voxels."""
    deviation = values.sum(1, keepdim=True, dtype=torch.float32).sub_(1).abs_()
    return (deviation if counted is None else deviation * counted).max()


def _sum_tolerance(values: Tensor) -> float:
    return 1e-2 if values.dtype in (torch.float16, torch.bfloat16) else 1e-3  # half precision rounds


def _one_class_per_voxel(target: Tensor, counted: Optional[Tensor]) -> _Check:
    """A dense target of exclusive classes sums to 1 over the classes at every counted voxel."""
    deviation = _deviation_from_one(target, counted)
    return _Check(deviation <= _sum_tolerance(target), "a one-hot/soft (B, C, *S) target with exclusive classes "
                  "must sum to 1 over the class axis (dim 1) at every counted voxel", "; it deviates by up to "
                  "{:.4g} (an empty or multi-hot voxel). Mark voxels that do not count with mask=, or use "
                  "multilabel=True for overlapping classes", (deviation,))


def _check_values(checks: list[_Check], dtype: torch.dtype) -> None:
    """Raise a ValueError for the first failing check, naming the offending value.

    Eager: every condition and value is read back to the host together, one synchronisation per call on an
    accelerator (in ``dtype``: float32 unless the input is float64, exact for labels below 2^24; MPS has no
    float64). Under ``torch.compile`` reading a value back would break the graph (the loss became nine
    graphs, and ``fullgraph=True`` failed), so the conditions are asserted inside the graph instead
    (:func:`~unifocal.losses._autograd.device_assert`: no host synchronisation; on CUDA a failure is a
    device-side assert, as for an out-of-range class in torch's cross_entropy): a compiled loss rejects the
    same inputs, with a RuntimeError carrying the message without the value.
    """
    if torch.compiler.is_compiling():
        for check in checks:
            holds = check.holds if check.recheck is None else check.holds | check.recheck()
            device_assert(holds, check.message)
        return
    values = torch.stack([v.to(dtype) for check in checks for v in (check.holds, *check.found)])
    try:
        values = iter(values.tolist())
    except RuntimeError as error:  # torch.func.vmap's batched tensors have no values to read back
        if not func_transformed():
            raise
        raise RuntimeError("torch.func.vmap cannot run a unifocal loss: its input checks read values back to the "
                           "host. For per-sample losses use reduction='none'") from error
    for check in checks:
        holds, found = next(values), [next(values) for _ in check.found]
        if not holds and not (check.recheck is not None and check.recheck().item()):
            raise ValueError(check.message + check.detail.format(*found))


def _ignored(labels: Tensor, ignore_index: int) -> Tensor:
    """Where ``labels`` equal ``ignore_index``: nowhere when the label dtype cannot hold it (torch's comparison
    would wrap it, and uint8 labels == -1 would match 255)."""
    if not labels.is_floating_point():
        info = torch.iinfo(labels.dtype)
        if not info.min <= ignore_index <= info.max:
            return torch.zeros_like(labels, dtype=torch.bool)
    return labels == ignore_index


def _mask(mask: Tensor, input: Tensor, dtype: torch.dtype) -> Tensor:
    shape = (input.shape[0], 1, *input.shape[2:])
    if mask.ndim == input.ndim - 1:
        mask = mask.unsqueeze(1)
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {shape} (B, 1, *S) for input {tuple(input.shape)}")
    # 0/1: a voxel counts or not (a weighted mask would enter products of the prediction and the target twice)
    return (mask != 0).to(dtype).contiguous()


def _plain(tensor: Tensor) -> Tensor:
    return tensor if type(tensor) is Tensor else tensor.as_subclass(Tensor)


def prepare(
    input: Tensor,
    target: Tensor,
    *,
    from_logits: bool = True,
    multilabel: bool = False,
    ignore_index: Optional[int] = None,
    mask: Optional[Tensor] = None,
    ddp: bool = False,
) -> Prepared:
    """Validate ``input``/``target`` and turn them into a :class:`Prepared` record.

    ``input``: (B, C, *S) logits (``from_logits=True``; input that merely looks like probabilities is not
    guessed at) or probabilities, any floating dtype. ``target``: label map (B, 1, *S) or (B, *S) of class
    indices (exclusive classes), or one-hot/soft (B, C, *S) with values in [0, 1]; any integer, float or
    bool dtype. ``mask``: optional (B, 1, *S) or (B, *S), nonzero where a voxel counts (combined with
    ``ignore_index``; how one-hot and region targets carry an ignore region). The other options as
    :class:`~unifocal.losses._base.SegmentationLoss`.

    Raises:
        ValueError: naming the problem: shapes, NaN/Inf, probabilities out of range or not summing to 1,
            labels outside [0, C), fewer than two channels with exclusive classes.
    """
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError("input and target must be torch.Tensor")
    # Subclasses such as MONAI's MetaTensor run Python code on every operation and change signatures
    # (new_empty); the loss needs none of their metadata. as_subclass keeps the autograd history.
    input, target = _plain(input), _plain(target)
    mask = None if mask is None else _plain(mask)
    if input.ndim < 3:
        raise ValueError(f"input must be (B, C, *spatial) with at least one spatial dim; got shape {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor; got {input.dtype}")
    if input.numel() == 0:
        # torch's cross_entropy returns NaN (0 / 0) for an empty batch, which would silently poison an
        # optimiser step; no loss here has a value without a voxel.
        raise ValueError(f"input of shape {tuple(input.shape)} is empty: a loss needs at least one sample, "
                         f"one channel and one voxel (an empty batch has no loss)")
    num_channels = input.shape[1]
    if not multilabel and num_channels < 2:
        raise ValueError(
            "exclusive (softmax) classes need at least 2 channels, background included; got 1. "
            "For a single foreground channel use multilabel=True (sigmoid)"
        )
    labels, dense = _label_map(input, target), None
    if multilabel and labels is not None:
        if num_channels > 1:
            raise ValueError(
                f"multilabel=True expects a (B, C, *S) 0/1 target with one channel per input channel; got target "
                f"{tuple(target.shape)} for input {tuple(input.shape)}"
            )
        labels, dense = None, labels  # the single channel's 0/1 map
    elif labels is None:
        dense = target
    if ignore_index is not None and labels is None:
        raise ValueError(
            "ignore_index applies to exclusive label-map targets; for one-hot or multilabel targets pass mask="
        )
    dtype = compute_dtype(input.dtype)
    valid = None if mask is None else _mask(mask, input, dtype)
    _check_values(_value_checks(input, from_logits, multilabel, labels, dense, num_channels, ignore_index, mask,
                                valid), dtype)

    # The record's tensors are contiguous: strided inputs (Fortran-ordered arrays, permuted or expanded views,
    # channels_last) are copied once here, contiguous ones are not copied.
    if labels is not None:
        labels = (labels.to(torch.uint8) if labels.dtype == torch.bool else labels).contiguous()
        if ignore_index is not None:
            keep = (~_ignored(labels, ignore_index)).to(dtype)
            valid = keep if valid is None else valid * keep
    else:
        # A region target without a mask keeps its dtype (a bool mask is a quarter of a float copy): the region
        # statistics convert it slab by slab, the target property on first use.
        dense = dense.contiguous() if multilabel and valid is None else dense.to(dtype).contiguous()
        if valid is not None:
            dense = dense * valid
    return Prepared(input.to(dtype).contiguous(), valid, num_channels if multilabel else 1, multilabel,
                    labels=labels, dense_target=dense, from_logits=from_logits, ddp=ddp)
