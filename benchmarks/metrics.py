"""``python -m benchmarks metrics``: time of ``unifocal compare``'s evaluation on KiTS-sized cases.

Writes synthetic KiTS-like case pairs (reference and prediction, 512 x 512 x 200 uint8 NIfTI, gzip, voxel size
0.78 x 0.78 x 2 mm, labels 1 kidney, 2 tumour, 3 cyst: two kidneys, a tumour and a cyst; the prediction is
the reference shifted and eroded, with its tumour shrunk and a false-positive blob) and evaluates them the
way ``unifocal compare --challenge kits23`` does (the three KiTS regions; DSC, IoU, recall, precision, HD95,
NSD at KiTS's tolerances):

1. one pair in this process, timed as a whole and by stage: reading the two files, the overlap metrics,
   the surface metrics (KiTS's area-weighted surface Dice and the HD95); then the whole per-case path of
   ``compare`` (reading, label and geometry checks, all metrics); peak resident memory of the process;
2. ``--pairs`` pairs through :func:`unifocal.report.evaluate` with ``--jobs`` worker processes
   (default: the available cores), wall time and the largest worker's peak resident memory. Only
   ``--distinct`` pairs are written; the others are hard links to them under their own case names, so that
   each case is still read and computed in full (writing 60 gzip volumes would take longer than the run).

3. with ``--brats``, one BraTS-sized pair (240 x 240 x 155, 1 mm, labels 1-3 with several lesions) the way
   ``compare --challenge brats2023`` evaluates it, on one core: overlap, surface and the lesion-wise metrics
   (panoptica; its import and first call timed apart).

Results: printed as Markdown and written to ``--out`` as ``<timestamp>-metrics.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from unifocal.io import read_label, read_spacing
from unifocal.metrics import CHALLENGES, case_metrics, lesion_metrics, surface_metrics
from unifocal.report import Scoring, available_cores, evaluate
from unifocal.report.evaluation import _evaluate_case, _Job

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (512, 512, 200)
SPACING = (0.78, 0.78, 2.0)


def _ellipsoid(label: np.ndarray, centre_mm, radii_mm, value: int, spacing=SPACING) -> None:
    """Set ``value`` inside an axis-aligned ellipsoid (computed on its bounding box only)."""
    lo = [max(0, int((c - r) / s) - 1) for c, r, s in zip(centre_mm, radii_mm, spacing)]
    hi = [min(n, int((c + r) / s) + 2) for c, r, s, n in zip(centre_mm, radii_mm, spacing, label.shape)]
    axes = [(np.arange(a, b) * s - c) / r for a, b, s, c, r in zip(lo, hi, spacing, centre_mm, radii_mm)]
    inside = sum(np.square(g) for g in np.meshgrid(*axes, indexing="ij", sparse=True)) <= 1.0
    box = label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    box[inside] = value


def kits_like_pair(seed: int, shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a prediction label map (uint8) of one synthetic KiTS-like case."""
    rng = np.random.default_rng(seed)
    extent = np.multiply(shape, spacing)
    reference = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    scale = min(1.0, float(extent.min()) / 200.0)  # tiny smoke-test shapes get tiny organs
    for side in (0.35, 0.65):
        centre = extent * np.array([side, 0.55, 0.5]) + rng.normal(0, 3 * scale, 3)
        kidney = np.array([30.0, 25.0, 55.0]) * scale
        _ellipsoid(reference, centre, kidney, 1, spacing)
        # Prediction: shifted by a few mm and slightly smaller.
        _ellipsoid(prediction, centre + rng.normal(0, 1.5 * scale, 3), kidney * 0.95, 1, spacing)
    tumour = extent * np.array([0.35, 0.55, 0.5]) + np.array([18.0, 0.0, 20.0]) * scale
    _ellipsoid(reference, tumour, np.full(3, 20.0 * scale), 2, spacing)
    _ellipsoid(prediction, tumour + 2.0 * scale, np.full(3, 16.0 * scale), 2, spacing)
    cyst = extent * np.array([0.65, 0.55, 0.5]) + np.array([-10.0, 5.0, -25.0]) * scale
    _ellipsoid(reference, cyst, np.full(3, 8.0 * scale), 3, spacing)
    _ellipsoid(prediction, extent * np.array([0.5, 0.3, 0.3]), np.full(3, 6.0 * scale), 2, spacing)  # false positive
    return reference, prediction


def _write(path: Path, array: np.ndarray, spacing) -> None:
    import nibabel

    nibabel.save(nibabel.Nifti1Image(array, np.diag([*spacing, 1.0])), str(path))


def _peak_rss_mib(who: int) -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1.0 if sys.platform.startswith("linux") else 1 / 1024
    return resource.getrusage(who).ru_maxrss * scale / 1024


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_pair(folder: Path, key: str = "kits23") -> dict:
    """Stage times of one pair evaluated in this process (MONAI imported beforehand, as in a worker that
    has evaluated a case already)."""
    import monai.metrics.utils  # noqa: F401

    rules = CHALLENGES[key]
    before = _rss_mib()
    start = time.perf_counter()
    reference = read_label(folder / "ref" / "case000.nii.gz")
    prediction = read_label(folder / "pred" / "case000.nii.gz")
    spacing = read_spacing(folder / "ref" / "case000.nii.gz")
    read = time.perf_counter()
    case_metrics(prediction, reference, rules.regions, empty=rules.empty)
    overlap = time.perf_counter()
    surface_metrics(prediction, reference, rules.regions, spacing, rules.tolerances, empty=rules.empty,
                    one_empty=rules.hd95_one_empty, nsd_surface=rules.nsd_surface)
    done = time.perf_counter()
    job = _Job(list(rules.regions), None, Scoring.of_challenge(key, lesions=False).resolved(rules.regions))
    _evaluate_case(job, "case000", folder / "ref" / "case000.nii.gz", {"method": folder / "pred" / "case000.nii.gz"})
    compare = time.perf_counter()
    return {"read_s": read - start, "overlap_s": overlap - read, "surface_s": done - overlap, "total_s": done - start,
            "compare_case_s": compare - done, "rss_before_mib": before,
            "peak_rss_mib": _peak_rss_mib(resource.RUSAGE_SELF)}


def many_pairs(folder: Path, pairs: int, jobs: int, key: str = "kits23") -> dict:
    rules = CHALLENGES[key]
    references = {f"case{i:03d}": folder / "ref" / f"case{i:03d}.nii.gz" for i in range(pairs)}
    predictions = {"method": {f"case{i:03d}": folder / "pred" / f"case{i:03d}.nii.gz" for i in range(pairs)}}
    start = time.perf_counter()
    evaluation = evaluate(predictions, references, rules.regions, rules.names,
                          scoring=Scoring.of_challenge(key, surface=True), jobs=jobs)
    elapsed = time.perf_counter() - start
    assert len(evaluation.cases) == pairs
    return {"pairs": pairs, "jobs": jobs, "wall_s": elapsed, "per_pair_s": elapsed / pairs,
            "worker_peak_rss_mib": _peak_rss_mib(resource.RUSAGE_CHILDREN) if jobs > 1 else None}


def brats_like_pair(seed: int = 0, shape=(240, 240, 155)) -> tuple[np.ndarray, np.ndarray]:
    """A BraTS 2023-like reference (oedema 2, core 1, enhancing 3; one large tumour and three satellites) and a
    prediction that shifts, shrinks, misses one satellite and adds a false positive."""
    rng = np.random.default_rng(seed)
    reference = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    centres = [np.array([120.0, 110.0, 80.0])] + [rng.uniform([60, 60, 40], [180, 180, 115]) for _ in range(3)]
    for index, centre in enumerate(centres):
        scale = 1.0 if index == 0 else 0.3
        for label, radius in ((2, 30.0), (1, 15.0), (3, 8.0)):
            _ellipsoid(reference, centre, np.full(3, radius * scale), label, (1.0, 1.0, 1.0))
            if index != 3:
                _ellipsoid(prediction, centre + 1.5, np.full(3, radius * scale * 0.9), label, (1.0, 1.0, 1.0))
    _ellipsoid(prediction, np.array([40.0, 200.0, 30.0]), np.full(3, 5.0), 3, (1.0, 1.0, 1.0))
    return reference, prediction


def brats_pair() -> dict:
    """One BraTS-sized pair on one core, by stage, as ``compare --challenge brats2023`` evaluates it."""
    import torch

    torch.set_num_threads(1)
    rules = CHALLENGES["brats2023"]
    reference, prediction = brats_like_pair()
    start = time.perf_counter()
    lesion_metrics(prediction[:16, :16, :16], reference[:16, :16, :16], rules.regions)  # import, first call
    warm = time.perf_counter()
    case_metrics(prediction, reference, rules.regions, empty=rules.empty)
    overlap = time.perf_counter()
    surface_metrics(prediction, reference, rules.regions, (1.0, 1.0, 1.0), rules.tolerances, empty=rules.empty,
                    one_empty=rules.hd95_one_empty, nsd_surface=rules.nsd_surface)
    surface = time.perf_counter()
    lesion_metrics(prediction, reference, rules.regions)
    done = time.perf_counter()
    return {"panoptica_import_and_first_call_s": warm - start, "overlap_s": overlap - warm,
            "surface_s": surface - overlap, "lesion_s": done - surface, "total_s": done - warm}


def _prepare(folder: Path, pairs: int, distinct: int, shape, spacing) -> float:
    start = time.perf_counter()
    for sub in ("ref", "pred"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(min(distinct, pairs)):
        reference, prediction = kits_like_pair(i, shape, spacing)
        _write(folder / "ref" / f"case{i:03d}.nii.gz", reference, spacing)
        _write(folder / "pred" / f"case{i:03d}.nii.gz", prediction, spacing)
    for i in range(distinct, pairs):
        for sub in ("ref", "pred"):
            os.link(folder / sub / f"case{i % distinct:03d}.nii.gz", folder / sub / f"case{i:03d}.nii.gz")
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=",".join(map(str, SHAPE)), help="volume shape X,Y,Z (default %(default)s)")
    parser.add_argument("--pairs", type=int, default=60, help="pairs of the parallel run (default %(default)s; 0: skip)")
    parser.add_argument("--distinct", type=int, default=4, help="pairs actually written (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: the available cores)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the volumes (default: a temporary one)")
    parser.add_argument("--brats", action="store_true", help="also time one BraTS-sized pair with lesion-wise metrics")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 3 or min(shape) < 8 or args.pairs < 0 or args.distinct < 1:
        parser.error("--shape needs three sizes >= 8, --pairs >= 0, --distinct >= 1")
    jobs = args.jobs or available_cores()
    info = {"cpu_count": os.cpu_count(), "available_cores": available_cores(), "loadavg_start": list(os.getloadavg()),
            "shape": shape, "spacing": SPACING, "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        folder = Path(work)
        written = _prepare(folder, max(args.pairs, 1), args.distinct, shape, SPACING)
        print(f"wrote {min(args.distinct, max(args.pairs, 1))} distinct pairs in {written:.1f} s", flush=True)
        single = one_pair(folder)
        print("one pair, in process: " + ", ".join(f"{k} {v:.2f}" for k, v in single.items()), flush=True)
        parallel = many_pairs(folder, args.pairs, jobs) if args.pairs else None
    brats = brats_pair() if args.brats else None
    info["loadavg_end"] = list(os.getloadavg())
    lines = ["| volume | stage | time |", "|---|---|---|"]
    size = "x".join(map(str, shape))
    for key in ("read_s", "overlap_s", "surface_s", "total_s", "compare_case_s"):
        lines.append(f"| {size} | one pair: {key[:-2]} | {single[key]:.2f} s |")
    lines.append(f"| {size} | one pair: RSS before / peak | {single['rss_before_mib']:.0f} / "
                 f"{single['peak_rss_mib']:.0f} MiB |")
    if parallel:
        lines.append(f"| {size} | {parallel['pairs']} pairs, -j {parallel['jobs']} | {parallel['wall_s']:.1f} s "
                     f"({parallel['per_pair_s']:.2f} s per pair) |")
        if parallel["worker_peak_rss_mib"] is not None:
            lines.append(f"| {size} | largest worker's peak RSS | {parallel['worker_peak_rss_mib']:.0f} MiB |")
    if brats:
        lines += [f"| 240x240x155 BraTS, one core | {key[:-2]} | {value:.2f} s |" for key, value in brats.items()]
    table = "\n".join(lines)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}-metrics.json"
    path.write_text(json.dumps({"machine": info, "one_pair": single, "parallel": parallel, "brats": brats,
                                "table": table}, indent=1))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
