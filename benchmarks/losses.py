"""Forward+backward time and peak extra memory of segmentation losses, side by side on the same tensors.

Each *case* is one input shape, with or without deep supervision. Every candidate loss of a case gets the
same logits (float32, requiring grad) and the same int16 (B, 1, *S) label maps that nnU-Net's data loader
produces. With deep supervision the inputs are nnU-Net's lists: logits and targets at scales 1, 1/2, ...,
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
    "Case",
    "Candidate",
    "make_cases",
    "make_inputs",
    "candidates",
    "nnunet_ds_weights",
    "ds_num_outputs",
    "time_case",
    "peak_extra_memory",
    "run_cases",
    "REFERENCE",
]

# The shapes: two 3D, two 2D (B, C, *S).
SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 96, 96, 96), (2, 2, 128, 128, 128), (12, 2, 256, 256), (12, 4, 512, 512))
QUICK_SHAPES: tuple[tuple[int, ...], ...] = ((2, 3, 32, 32, 32), (2, 2, 32, 32, 32), (4, 2, 64, 64), (4, 4, 96, 96))

REFERENCE = "nnU-Net DC_and_CE_loss"

# Class frequencies of the synthetic label maps: background dominant, then rarer foreground classes.
_FOREGROUND_FRACTION = 0.1


@dataclass(frozen=True)
class Case:
    """One input configuration: shape (B, C, *S) and whether nnU-Net's deep supervision lists are used."""

    shape: tuple[int, ...]
    deep_supervision: bool = False

    @property
    def label(self) -> str:
        return "x".join(str(s) for s in self.shape) + (" DS" if self.deep_supervision else "")

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


def make_cases(shapes: Sequence[Sequence[int]], deep_supervision: bool = True) -> list[Case]:
    cases = [Case(tuple(s)) for s in shapes]
    if deep_supervision:
        cases += [Case(tuple(s), True) for s in shapes]
    return cases


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
    """Logits (leaf tensors requiring grad) and int16 label maps for ``case``: lists (full resolution
    first) with deep supervision, single tensors otherwise."""
    generator = torch.Generator().manual_seed(seed)
    labels = _labels(case.shape, generator)
    b, c, *spatial = case.shape
    n = ds_num_outputs(spatial) if case.deep_supervision else 1
    sizes = [[max(s // 2**i, 1) for s in spatial] for i in range(n)]
    outputs, targets = [], []
    for size in sizes:
        logits = torch.randn((b, c, *size), generator=generator).to(device=device, dtype=dtype)
        outputs.append(logits.requires_grad_())
        targets.append(_downsample(labels, size).to(device))
    if case.deep_supervision:
        return outputs, targets
    return outputs[0], targets[0]


@dataclass
class Candidate:
    """A loss under test. ``build(case)`` returns ``loss(outputs, targets) -> scalar`` for the case's
    inputs (lists with deep supervision), or None where the loss does not apply (e.g. binary-only)."""

    name: str
    build: Callable[[Case], Optional[Callable]]
    note: str = ""


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
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    loss = DC_and_CE_loss(
        {"batch_dice": _batch_dice(case), "smooth": 1e-5, "do_bg": False, "ddp": False},
        {},
        weight_ce=1,
        weight_dice=1,
        ignore_label=None,
        dice_class=MemoryEfficientSoftDiceLoss,
    )
    return _ds_wrap(loss, case)


def _unifocal(cls_name: str, **kwargs):
    def build(case: Case):
        import unifocal.losses as losses

        loss = getattr(losses, cls_name)(batch_dice=_batch_dice(case), **kwargs)
        if case.deep_supervision:
            loss = losses.DeepSupervisionLoss(loss, weights="nnunet")
        return loss

    return build


def _monai(cls_name: str, binary_only: bool = False, probabilities: bool = False, **kwargs):
    def build(case: Case):
        if binary_only and case.num_classes != 2:
            return None
        import monai.losses

        inner = getattr(monai.losses, cls_name)(to_onehot_y=True, **kwargs)
        loss = (lambda x, y: inner(torch.softmax(x, 1), y)) if probabilities else inner
        return _ds_wrap(loss, case)

    return build


def candidates(compile_unifocal: bool = False) -> list[Candidate]:
    """The losses compared: nnU-Net's default first (the reference), the Unified Focal family, MONAI's peers."""
    family = [
        Candidate("unifocal AsymmetricUnifiedFocalLoss", _unifocal("AsymmetricUnifiedFocalLoss"),
                  "multi-class, from logits, defaults"),
        Candidate("unifocal SymmetricUnifiedFocalLoss", _unifocal("SymmetricUnifiedFocalLoss")),
        Candidate("unifocal AsymmetricFocalLoss", _unifocal("AsymmetricFocalLoss"), "focal part only (lambda=1)"),
        Candidate("unifocal AsymmetricFocalTverskyLoss", _unifocal("AsymmetricFocalTverskyLoss"),
                  "Tversky part only (lambda=0)"),
    ]
    peers = [
        Candidate("MONAI DiceCELoss", _monai("DiceCELoss", softmax=True), "to_onehot_y, softmax"),
        Candidate("MONAI DiceFocalLoss", _monai("DiceFocalLoss", softmax=True), "to_onehot_y, softmax"),
        Candidate("MONAI AsymmetricUnifiedFocalLoss", _monai("AsymmetricUnifiedFocalLoss", binary_only=True,
                                                            probabilities=True),
                  "binary only; softmax applied before it (it takes probabilities)"),
    ]
    rows = [Candidate(REFERENCE, _nnunet, "default trainer's loss")] + family
    if compile_unifocal:
        base = family[0].build

        def compiled(case: Case):
            return torch.compile(base(case))

        rows.append(Candidate("unifocal AsymmetricUnifiedFocalLoss (torch.compile)", compiled, "inductor"))
    return rows + peers


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
    to the reference), peak_mib, mem_ratio, loss value, and gbps on CUDA.
    """
    outputs, targets = make_inputs(case, device, dtype)
    built = [(c, c.build(case)) for c in rows]
    built = [(c, fn) for c, fn in built if fn is not None]
    names = [c.name for c, _ in built]
    if REFERENCE not in names:
        raise ValueError(f"the reference {REFERENCE!r} must be among the candidates")
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
    ref_times = times[REFERENCE]
    results = []
    for c, _ in built:
        q1, med, q3 = _quartiles(times[c.name])
        paired = statistics.median(t / ref for t, ref in zip(times[c.name], ref_times))
        cpu_paired = statistics.median(t / ref for t, ref in zip(cpu_times[c.name], cpu_times[REFERENCE]))
        row = {
            "loss": c.name,
            "case": case.label,
            "shape": list(case.shape),
            "deep_supervision": case.deep_supervision,
            "note": c.note,
            "median_ms": med * 1e3,
            "q1_ms": q1 * 1e3,
            "q3_ms": q3 * 1e3,
            "ratio": paired,
            "cpu_ms": statistics.median(cpu_times[c.name]) * 1e3,
            "cpu_ratio": cpu_paired,
            "best_cpu_ms": min(cpu_times[c.name]) * 1e3,
            "best_cpu_ratio": min(cpu_times[c.name]) / max(min(cpu_times[REFERENCE]), 1e-12),
            "value": values[c.name],
            "repeats": repeats,
        }
        if memory:
            row["peak_mib"] = peaks[c.name] / 2**20
            row["mem_ratio"] = peaks[c.name] / max(peaks[REFERENCE], 1)
        if device.type == "cuda":
            row["gbps"] = compulsory / med / 1e9
        results.append(row)
        log(f"  {c.name:45s} {med * 1e3:8.1f} ms x{paired:5.2f}  cpu {row['cpu_ms']:8.1f} ms x{cpu_paired:5.2f}"
            f" best x{row['best_cpu_ratio']:5.2f}" + (f"  {row['peak_mib']:8.1f} MiB x{row['mem_ratio']:4.2f}" if memory else ""))
    return results


def run_cases(
    cases: Sequence[Case],
    *,
    repeats: int = 5,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    compile_unifocal: bool = False,
    memory: bool = True,
    names: Optional[Sequence[str]] = None,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict]:
    """:func:`time_case` over ``cases``; ``names`` restricts the candidates (the reference is always kept)."""
    rows = candidates(compile_unifocal)
    if names is not None:
        rows = [c for c in rows if c.name == REFERENCE or c.name in names]
    results = []
    for case in cases:
        log(f"{case.label}:")
        results += time_case(case, rows, repeats=repeats, device=device, dtype=dtype, memory=memory, log=log)
    return results
