"""Forward+backward time and peak extra memory of segmentation losses, side by side on the same tensors.

Each *case* is one input shape, with or without deep supervision, in label-map or region mode. Every
candidate loss of a case gets the same logits (float32, requiring grad) and the same targets nnU-Net's data
loader produces: int16 (B, 1, *S) label maps, or in region mode (KiTS23, BraTS) bool (B, R, *S) region
masks, nested as those datasets declare them (region k holds the labels >= k). The reference of a case is
the loss nnUNetTrainer builds for it: ``DC_and_CE_loss`` for label maps, ``DC_and_BCE_loss`` (do_bg True)
for regions. A candidate may also name a *peer* (its nnU-Net or MONAI counterpart), to which its time and
memory are compared as well. With deep supervision the inputs are nnU-Net's lists: logits and targets at scales 1, 1/2, ...,
one per pooling stage but the last (nnU-Net's planner halves an isotropic patch while its edge stays >= 4),
weighted 1/2^i with the lowest-resolution weight 0, normalised to sum 1 (nnUNetTrainer._build_loss).

Timing: one warm-up call per candidate, then ``repeats`` rounds; in each round every candidate runs once, in
an order rotated from round to round, so that a change in machine load hits all candidates alike. A call is
``loss(outputs, targets).backward()`` after clearing the input gradients (CUDA: followed by a synchronize).
Reported: median and interquartile range of the wall-clock times, and the median over rounds of the
per-round ratio to nnU-Net's loss (a paired ratio, robust to load that drifts between rounds). Also the
process CPU time of each call and its paired ratio: on a machine shared with other processes the CPU time
of a single-threaded run (``--threads 1``) measures the work itself, where wall time also counts the time
the process waited for a core. (With several threads CPU time includes the threads' spin-waiting.) And
the ratio of the best (smallest) CPU times, the usual estimate of the cost without interference.

Peak extra memory: bytes allocated during one forward+backward call above what was allocated before it (the
inputs), including the input gradients, which every candidate allocates alike. On CUDA this is
``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` before the call. On CPU torch has no
allocator statistics, so the call runs once under ``torch.profiler`` with ``profile_memory=True``, which
records every CPU allocation and free of torch's allocator with its size: the running sum of those
records, taken in time order, peaks at the same quantity. (RSS would also count the allocator's caching
and the glibc heap's reuse, and tracemalloc does not see torch's allocations.)

Bandwidth (CUDA only): a loss over logits ``x`` and labels ``y`` must at least read ``x`` and ``y`` and write
``dL/dx`` once: ``2 * x.nbytes + y.nbytes`` per scale. Achieved bandwidth is those compulsory bytes over the
median time; a memory-bound loss gets close to the device's bandwidth, one that makes many passes over
``x``-sized temporaries does not.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "SHAPES",
    "QUICK_SHAPES",
    "REGION_SHAPES",
    "QUICK_REGION_SHAPES",
    "FAMILY_SHAPES",
    "QUICK_FAMILY_SHAPES",
    "Case",
    "Candidate",
    "make_cases",
    "make_inputs",
    "candidates",
    "family_candidates",
    "reference",
    "nnunet_ds_weights",
    "ds_num_outputs",
    "time_case",
    "peak_extra_memory",
    "run_cases",
    "REFERENCE",
    "REGION_REFERENCE",
]

# The shapes: two 3D, two 2D (B, C, *S).
SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 96, 96, 96), (2, 2, 128, 128, 128), (12, 2, 256, 256), (12, 4, 512, 512))
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 32, 32, 32), (2, 2, 32, 32, 32), (4, 2, 64, 64), (4, 4, 96, 96))
# Region mode (B, R, *S): three nested regions, as KiTS23 and BraTS declare them.
REGION_SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 96, 96, 96), (2, 3, 128, 128, 128), (12, 3, 256, 256),
                                              (12, 3, 512, 512))
QUICK_REGION_SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 32, 32, 32), (4, 3, 64, 64))
# Every member of the family against its counterpart: one 3D and one 2D shape, both modes.
FAMILY_SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 64, 64, 64), (12, 3, 256, 256))
QUICK_FAMILY_SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 16, 16, 16), (2, 3, 32, 32))

REFERENCE = "nnU-Net DC_and_CE_loss"
REGION_REFERENCE = "nnU-Net DC_and_BCE_loss"

# Class frequencies of the synthetic label maps: background dominant, then rarer foreground classes.
_FOREGROUND_FRACTION = 0.1


@dataclass(frozen=True)
class Case:
    """One input configuration: shape (B, C, *S) (C classes, or R regions with ``regions``) and whether
    nnU-Net's deep supervision lists are used."""

    shape: tuple[int, ...]
    deep_supervision: bool = False
    regions: bool = False

    @property
    def label(self) -> str:
        return ("x".join(str(s) for s in self.shape) + (" regions" if self.regions else "")
                + (" DS" if self.deep_supervision else ""))

    @property
    def num_classes(self) -> int:
        return self.shape[1]

    @property
    def spatial_dims(self) -> int:
        return len(self.shape) - 2


def ds_num_outputs(spatial: Sequence[int]) -> int:
    """Deep-supervision outputs nnU-Net's default planner gives an isotropic patch: one per pooling (the
    edge is halved while it stays >= 4), i.e. one per stage but the lowest-resolution one."""
    pools = min(int(math.floor(math.log2(s / 4))) for s in spatial)
    return max(pools, 1)


def nnunet_ds_weights(num_outputs: int) -> list[float]:
    """nnUNetTrainer._build_loss's weights: 1/2^i, the last one 0, normalised to sum 1."""
    weights = [1 / 2**i for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def make_cases(shapes: Sequence[Sequence[int]], deep_supervision: bool = True, regions: bool = False) -> list[Case]:
    cases = [Case(tuple(s), regions=regions) for s in shapes]
    if deep_supervision:
        cases += [Case(tuple(s), True, regions) for s in shapes]
    return cases


def reference(case: Case) -> str:
    """The name of the case's reference: the loss nnUNetTrainer builds for its mode."""
    return REGION_REFERENCE if case.regions else REFERENCE


def _labels(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """int16 (B, 1, *S) label map: smooth random blobs, so classes form regions as in real data; about
    ``_FOREGROUND_FRACTION`` of the voxels are foreground, split unevenly over the foreground classes."""
    b, c, *spatial = shape
    coarse = [max(s // 8, 2) for s in spatial]
    noise = torch.rand((b, 1, *coarse), generator=generator)
    mode = "trilinear" if len(spatial) == 3 else "bilinear"
    field_ = F.interpolate(noise, size=spatial, mode=mode, align_corners=False)
    labels = torch.zeros((b, 1, *spatial), dtype=torch.int16)
    sample = field_.flatten()[:: max(field_.numel() // 100_000, 1)]
    # Foreground classes take nested, shrinking shares: class c >= 1 holds the top fraction/2^(c-1) of the
    # field minus the next class's share.
    for cls in range(1, c):
        labels[field_ >= torch.quantile(sample, 1 - _FOREGROUND_FRACTION / 2 ** (cls - 1))] = cls
    return labels


def _downsample(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(labels.shape[2:]) == tuple(size):
        return labels
    return F.interpolate(labels.float(), size=tuple(size), mode="nearest-exact").to(labels.dtype)


def make_inputs(case: Case, device: torch.device, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Logits (leaf tensors requiring grad) and int16 label maps (bool region masks with ``case.regions``)
    for ``case``: lists (full resolution first) with deep supervision, single tensors otherwise."""
    generator = torch.Generator().manual_seed(seed)
    b, c, *spatial = case.shape
    labels = _labels((b, c + 1, *spatial) if case.regions else case.shape, generator)
    n = ds_num_outputs(spatial) if case.deep_supervision else 1
    sizes = [[max(s // 2**i, 1) for s in spatial] for i in range(n)]
    outputs, targets = [], []
    for size in sizes:
        logits = torch.randn((b, c, *size), generator=generator).to(device=device, dtype=dtype)
        outputs.append(logits.requires_grad_())
        target = _downsample(labels, size)
        if case.regions:  # region k = labels >= k, as nnU-Net's ConvertSegmentationToRegionsTransform gives
            target = target >= torch.arange(1, c + 1, dtype=target.dtype).view(1, c, *([1] * len(size)))
        targets.append(target.to(device))
    if case.deep_supervision:
        return outputs, targets
    return outputs[0], targets[0]


@dataclass
class Candidate:
    """A loss under test. ``build(case)`` returns ``loss(outputs, targets) -> scalar`` for the case's
    inputs (lists with deep supervision), or None where the loss does not apply (e.g. binary-only, or a
    mode the candidate lacks). ``peer``: the name of the candidate it is compared with besides the case's
    reference (its nnU-Net or MONAI counterpart)."""

    name: str
    build: Callable[[Case], Optional[Callable]]
    note: str = ""
    peer: Optional[str] = None


def _batch_dice(case: Case) -> bool:
    # nnU-Net's default plans: batch Dice for 2d, per-sample Dice for 3d_fullres.
    return case.spatial_dims == 2


def _ds_wrap(loss: Callable, case: Case) -> Callable:
    """nnU-Net's DeepSupervisionWrapper around a peer loss (a weighted sum over list pairs)."""
    if not case.deep_supervision:
        return loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    num_outputs = ds_num_outputs(case.shape[2:])
    return DeepSupervisionWrapper(loss, nnunet_ds_weights(num_outputs))


def _nnunet(case: Case):
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    if case.regions:
        loss = DC_and_BCE_loss({}, {"batch_dice": _batch_dice(case), "do_bg": True, "smooth": 1e-5, "ddp": False},
                               use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)
    else:
        loss = DC_and_CE_loss(
            {"batch_dice": _batch_dice(case), "smooth": 1e-5, "do_bg": False, "ddp": False},
            {},
            weight_ce=1,
            weight_dice=1,
            ignore_label=None,
            dice_class=MemoryEfficientSoftDiceLoss,
        )
    return _ds_wrap(loss, case)


def _nnunet_dice(case: Case):
    """nnU-Net's Dice alone, as its compound losses build it (softmax without the background / sigmoid)."""
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1

    loss = MemoryEfficientSoftDiceLoss(apply_nonlin=torch.sigmoid if case.regions else softmax_helper_dim1,
                                       batch_dice=_batch_dice(case), do_bg=case.regions, smooth=1e-5, ddp=False)
    return _ds_wrap(loss, case)


def _nnunet_cross_entropy(case: Case):
    """nnU-Net's cross entropy: RobustCrossEntropyLoss on label maps, BCEWithLogitsLoss on regions (which
    DC_and_BCE_loss feeds a float target)."""
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

    if case.regions:
        bce = torch.nn.BCEWithLogitsLoss()
        return _ds_wrap(lambda x, y: bce(x, y.float()), case)
    return _ds_wrap(RobustCrossEntropyLoss(), case)


def _unifocal(cls_name: str, batch_dice: bool = True, **kwargs):
    def build(case: Case):
        import unifocal.losses as losses

        options = dict(kwargs, multilabel=True) if case.regions else dict(kwargs)
        if batch_dice:
            options["batch_dice"] = _batch_dice(case)
        loss = getattr(losses, cls_name)(**options)
        if case.deep_supervision:
            loss = losses.DeepSupervisionLoss(loss, weights="nnunet")
        return loss

    return build


def _monai(cls_name: str, binary_only: bool = False, probabilities: bool = False, labels_only: bool = False,
           region_options: Optional[dict] = None, **kwargs):
    """A MONAI loss as its documentation sets it up: ``to_onehot_y`` and softmax for label maps; for regions
    the sigmoid options (``region_options``) on the (B, R, *S) masks as a float target."""

    def build(case: Case):
        if (binary_only and case.num_classes != 2) or (labels_only and case.regions):
            return None
        import monai.losses

        if case.regions:
            inner = getattr(monai.losses, cls_name)(**({"sigmoid": True} if region_options is None else region_options))
            return _ds_wrap(lambda x, y: inner(x, y.float()), case)
        inner = getattr(monai.losses, cls_name)(to_onehot_y=True, **kwargs)
        loss = (lambda x, y: inner(torch.softmax(x, 1), y)) if probabilities else inner
        return _ds_wrap(loss, case)

    return build


def _autograd_alone(build: Callable) -> Callable:
    """A unifocal loss whose statistics are formed by autograd alone, as under torch.func (the composed path
    over dense tensors): what the hand-written forward and backward passes save, measured."""

    def wrapped(case: Case):
        from unittest import mock

        from unifocal.losses import _stats

        loss = build(case)

        def call(outputs, targets):
            with mock.patch.object(_stats, "autograd_only", lambda scores: True):
                return loss(outputs, targets)

        return call

    return wrapped


def candidates(compile_unifocal: bool = False, autograd: bool = False) -> list[Candidate]:
    """The losses of the issue's targets: nnU-Net's default for the mode first (the reference), the Unified
    Focal losses and their parts, MONAI's peers (label maps only); with ``autograd`` also the two Unified
    Focal losses on autograd's passes alone, with ``compile_unifocal`` the compiled Asymmetric one."""
    family = [
        Candidate("unifocal AsymmetricUnifiedFocalLoss", _unifocal("AsymmetricUnifiedFocalLoss"),
                  "from logits, defaults"),
        Candidate("unifocal SymmetricUnifiedFocalLoss", _unifocal("SymmetricUnifiedFocalLoss")),
        Candidate("unifocal AsymmetricFocalLoss", _unifocal("AsymmetricFocalLoss", batch_dice=False),
                  "focal part only (lambda=1)"),
        Candidate("unifocal AsymmetricFocalTverskyLoss", _unifocal("AsymmetricFocalTverskyLoss"),
                  "Tversky part only (lambda=0)"),
    ]
    peers = [
        Candidate("MONAI DiceCELoss", _monai("DiceCELoss", labels_only=True, softmax=True), "to_onehot_y, softmax"),
        Candidate("MONAI DiceFocalLoss", _monai("DiceFocalLoss", labels_only=True, softmax=True),
                  "to_onehot_y, softmax"),
        Candidate("MONAI AsymmetricUnifiedFocalLoss", _monai("AsymmetricUnifiedFocalLoss", binary_only=True,
                                                            labels_only=True, probabilities=True),
                  "binary only; softmax applied before it (it takes probabilities)"),
    ]
    rows = [Candidate(REFERENCE, lambda case: None if case.regions else _nnunet(case), "default trainer's loss"),
            Candidate(REGION_REFERENCE, lambda case: _nnunet(case) if case.regions else None,
                      "default trainer's loss for regions (do_bg True)")] + family
    if compile_unifocal:
        base = family[0].build

        def compiled(case: Case):
            return torch.compile(base(case))

        rows.append(Candidate("unifocal AsymmetricUnifiedFocalLoss (torch.compile)", compiled, "inductor"))
    if autograd:
        rows += [Candidate(f"{c.name} (autograd alone)", _autograd_alone(c.build),
                           "no hand-written passes (the path torch.func takes)", peer=c.name) for c in family[:2]]
    return rows + peers


def family_candidates() -> list[Candidate]:
    """Every member of the family next to its counterpart in nnU-Net or MONAI, in both modes.
    Defaults of each library; MONAI's Tversky weights set to ours (alpha 0.3 on FP, beta 0.7 on FN)."""
    tversky = {"alpha": 0.3, "beta": 0.7}
    peers = [
        Candidate("nnU-Net SoftDiceLoss", _nnunet_dice, "MemoryEfficientSoftDiceLoss, as in the compound losses"),
        Candidate("nnU-Net cross entropy", _nnunet_cross_entropy,
                  "RobustCrossEntropyLoss / BCEWithLogitsLoss"),
        Candidate("MONAI DiceLoss", _monai("DiceLoss", softmax=True)),
        Candidate("MONAI GeneralizedDiceLoss", _monai("GeneralizedDiceLoss", softmax=True)),
        Candidate("MONAI TverskyLoss", _monai("TverskyLoss", softmax=True, region_options=dict(tversky, sigmoid=True),
                                              **tversky)),
        Candidate("MONAI FocalLoss", _monai("FocalLoss", use_softmax=True, region_options={})),
        Candidate("MONAI DiceCELoss", _monai("DiceCELoss", softmax=True)),
        Candidate("MONAI HausdorffDTLoss", _monai("HausdorffDTLoss", softmax=True, include_background=True,
                                                  region_options={"sigmoid": True, "include_background": True}),
                  "alpha 2, background kept as ours"),
    ]
    # Members without a namesake in nnU-Net or MONAI are set against the loss of the same kind that those
    # libraries train with: nnU-Net's default (compound), its cross entropy, its Dice, MONAI's generalised Dice
    # (the region loss Kervadec et al. pair the boundary loss with).
    members = [
        ("UnifiedFocalLoss", {}, "nnU-Net default"),
        ("AsymmetricUnifiedFocalLoss", {}, "nnU-Net default"),
        ("SymmetricUnifiedFocalLoss", {}, "nnU-Net default"),
        ("ComboLoss", {}, "nnU-Net default"),
        ("AsymmetricFocalLoss", {"batch_dice": False}, "MONAI FocalLoss"),
        ("SymmetricFocalLoss", {"batch_dice": False}, "MONAI FocalLoss"),
        ("FocalLoss", {"batch_dice": False}, "MONAI FocalLoss"),
        ("CrossEntropyLoss", {"batch_dice": False}, "nnU-Net cross entropy"),
        ("DiceLoss", {}, "nnU-Net SoftDiceLoss"),
        ("JaccardLoss", {}, "MONAI DiceLoss"),
        ("GeneralizedDiceLoss", {}, "MONAI GeneralizedDiceLoss"),
        ("TverskyLoss", {}, "MONAI TverskyLoss"),
        ("FocalTverskyLoss", {}, "MONAI TverskyLoss"),
        ("AsymmetricFocalTverskyLoss", {}, "MONAI TverskyLoss"),
        ("SymmetricFocalTverskyLoss", {}, "MONAI TverskyLoss"),
        ("DiceCELoss", {}, "MONAI DiceCELoss"),
        ("HybridFocalLoss", {}, "nnU-Net default"),
        ("ExponentialLogarithmicLoss", {}, "nnU-Net default"),
        ("WeightedCrossEntropyLoss", {"batch_dice": False}, "nnU-Net cross entropy"),
        ("BalancedCrossEntropyLoss", {"batch_dice": False}, "nnU-Net cross entropy"),
        ("LogCoshDiceLoss", {}, "nnU-Net SoftDiceLoss"),
        ("SensitivitySpecificityLoss", {"batch_dice": False}, "nnU-Net SoftDiceLoss"),
        ("HausdorffDTLoss", {"batch_dice": False}, "MONAI HausdorffDTLoss"),
        ("BoundaryLoss", {"batch_dice": False}, "MONAI GeneralizedDiceLoss"),
        ("DistancePenalizedCELoss", {"batch_dice": False}, "nnU-Net cross entropy"),
        ("ShapeAwareLoss", {"batch_dice": False}, "nnU-Net cross entropy"),
    ]
    rows = [Candidate(REFERENCE, lambda case: None if case.regions else _nnunet(case)),
            Candidate(REGION_REFERENCE, lambda case: _nnunet(case) if case.regions else None)] + peers
    for name, options, peer in members:
        options = dict(options)
        batch_dice = options.pop("batch_dice", True)
        rows.append(Candidate(f"unifocal {name}", _unifocal(name, batch_dice=batch_dice, **options),
                              peer=peer if peer != "nnU-Net default" else None))
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _leaves(outputs) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _step(loss: Callable, outputs, targets, device: torch.device) -> float:
    for x in _leaves(outputs):
        x.grad = None
    value = loss(outputs, targets)
    value.backward()
    _sync(device)
    return float(value.detach())


def peak_extra_memory(loss: Callable, outputs, targets, device: torch.device) -> int:
    """Peak bytes allocated by one forward+backward above the allocation before it (see module docstring)."""
    for x in _leaves(outputs):
        x.grad = None
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _step(loss, outputs, targets, device)
        return torch.cuda.max_memory_allocated(device) - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(loss, outputs, targets, device)
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    records.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for record in records:
        live += record.nbytes()
        peak = max(peak, live)
    return peak


def _compulsory_bytes(outputs, targets, weights: Optional[Sequence[float]]) -> int:
    xs, ys = _leaves(outputs), _leaves(targets)
    weights = weights or [1.0] * len(xs)
    return sum(2 * x.nbytes + y.nbytes for x, y, w in zip(xs, ys, weights) if w != 0)


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def time_case(
    case: Case,
    rows: Sequence[Candidate],
    *,
    repeats: int = 5,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    memory: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict]:
    """Time every applicable candidate on ``case`` (interleaved rounds) and measure its peak extra memory.

    Returns one dict per candidate: name, case, median_ms, q1_ms, q3_ms, ratio (median of per-round ratios
    to the case's reference), the same for CPU time, peak_mib, mem_ratio, loss value, gbps on CUDA, and for
    a candidate with a peer: peer, peer_ratio, peer_cpu_ratio, peer_mem_ratio.
    """
    outputs, targets = make_inputs(case, device, dtype)
    built = [(c, c.build(case)) for c in rows]
    built = [(c, fn) for c, fn in built if fn is not None]
    names = [c.name for c, _ in built]
    ref_name = reference(case)
    if ref_name not in names:
        raise ValueError(f"the reference {ref_name!r} must be among the candidates")
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu_times: dict[str, list[float]] = {n: [] for n in names}
    values: dict[str, float] = {}
    for c, fn in built:  # warm-up (and the value, for the record)
        values[c.name] = _step(fn, outputs, targets, device)
    for r in range(repeats):
        order = built[r % len(built):] + built[: r % len(built)]
        for c, fn in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            _step(fn, outputs, targets, device)
            times[c.name].append(time.perf_counter() - start)
            cpu_times[c.name].append(time.process_time() - cpu_start)
    peaks = {c.name: peak_extra_memory(fn, outputs, targets, device) for c, fn in built} if memory else {}
    weights = nnunet_ds_weights(len(_leaves(outputs))) if case.deep_supervision else None
    compulsory = _compulsory_bytes(outputs, targets, weights)

    def paired(series: dict, name: str, other: str) -> float:
        return statistics.median(t / ref for t, ref in zip(series[name], series[other]))

    results = []
    for c, _ in built:
        q1, med, q3 = _quartiles(times[c.name])
        row = {
            "loss": c.name,
            "case": case.label,
            "shape": list(case.shape),
            "deep_supervision": case.deep_supervision,
            "regions": case.regions,
            "reference": ref_name,
            "note": c.note,
            "median_ms": med * 1e3,
            "q1_ms": q1 * 1e3,
            "q3_ms": q3 * 1e3,
            "ratio": paired(times, c.name, ref_name),
            "cpu_ms": statistics.median(cpu_times[c.name]) * 1e3,
            "cpu_ratio": paired(cpu_times, c.name, ref_name),
            "best_cpu_ms": min(cpu_times[c.name]) * 1e3,
            "best_cpu_ratio": min(cpu_times[c.name]) / max(min(cpu_times[ref_name]), 1e-12),
            "value": values[c.name],
            "repeats": repeats,
        }
        if memory:
            row["peak_mib"] = peaks[c.name] / 2**20
            row["mem_ratio"] = peaks[c.name] / max(peaks[ref_name], 1)
        if c.peer is not None and c.peer in times:
            row.update(peer=c.peer, peer_ratio=paired(times, c.name, c.peer),
                       peer_cpu_ratio=paired(cpu_times, c.name, c.peer))
            if memory:
                row["peer_mem_ratio"] = peaks[c.name] / max(peaks[c.peer], 1)
        if device.type == "cuda":
            row["gbps"] = compulsory / med / 1e9
        results.append(row)
        log(f"  {c.name:45s} {med * 1e3:8.1f} ms x{row['ratio']:5.2f}  cpu {row['cpu_ms']:8.1f} ms x{row['cpu_ratio']:5.2f}"
            f" best x{row['best_cpu_ratio']:5.2f}" + (f"  {row['peak_mib']:8.1f} MiB x{row['mem_ratio']:4.2f}" if memory else "")
            + (f"  vs {c.peer}: cpu x{row['peer_cpu_ratio']:5.2f}" if "peer" in row else ""))
    return results


def run_cases(
    cases: Sequence[Case],
    *,
    repeats: int = 5,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    compile_unifocal: bool = False,
    autograd: bool = False,
    memory: bool = True,
    names: Optional[Sequence[str]] = None,
    family: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict]:
    """:func:`time_case` over ``cases`` with :func:`candidates` (or :func:`family_candidates` with ``family``);
    ``names`` restricts the candidates (the references and named candidates' peers are always kept)."""
    rows = family_candidates() if family else candidates(compile_unifocal, autograd)
    if names is not None:
        keep = set(names) | {REFERENCE, REGION_REFERENCE} | {c.peer for c in rows if c.name in names and c.peer}
        rows = [c for c in rows if c.name in keep]
    results = []
    for case in cases:
        log(f"{case.label}:")
        results += time_case(case, rows, repeats=repeats, device=device, dtype=dtype, memory=memory, log=log)
    return results
