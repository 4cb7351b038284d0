"""Per-case, per-class metrics of several methods against one reference, one case per worker process.

Metric definitions and the empty-class rules: :mod:`unifocal.metrics`: the overlap metrics DSC, IoU, recall,
precision, when MONAI is installed the surface metrics HD95 and NSD on the reference's voxel size, and for a
lesion-wise challenge the lesion metrics (panoptica). Each worker reads the reference and one prediction at a
time, brings the prediction to the reference's voxel grid (:mod:`unifocal.report.geometry`) and checks the
label values against the ones the classes come from (:class:`Scoring`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..io import printable, read_geometry, read_label
from ..metrics import (
    BRATS_ET_LABELS, CHALLENGES, LESION_METRICS, METRICS, SURFACE_METRICS, ClassSpec, case_metrics,
    challenge_of, default_tolerances, lesion_metrics, require_lesion_metrics, require_surface_metrics,
    surface_metrics, surface_metrics_available, surface_settings,
)
from ..validate import check_number
from .discovery import default_class_names, match_cases
from .geometry import to_reference_grid, voxel_size

__all__ = ["CLASS_MEAN", "Scoring", "Evaluation", "evaluate", "available_cores"]

CLASS_MEAN = "class mean"


@dataclass(frozen=True)
class Scoring:
    """How every case is scored (the defaults follow the classes: a challenge's regions get its tolerances and
    surface measure, see :func:`unifocal.metrics.default_tolerances`).

    Attributes:
        empty: value of a ``0/0`` metric (:mod:`unifocal.metrics`).
        surface: compute HD95 and NSD (True: MONAI required; None: when MONAI is installed).
        tolerances: NSD tolerance (mm) per class (None: the default for the classes).
        one_empty: HD95 of a class in only one of prediction and reference (``"diagonal"`` or a number).
        nsd_surface: ``"voxels"`` or ``"area"`` (None: ``"area"`` for the KiTS21/23 regions, else ``"voxels"``).
        spacing: voxel size (mm per array axis) of reference files whose format stores none.
        lesions: compute the lesion-wise metrics (panoptica required).
        label_values: every label value the files may hold (None: not checked), and ``label_source``, where
            they are defined (for the error message).
        challenge: the ``--challenge`` key, for the label-convention hint of the BraTS challenges.
    """

    empty: float = math.nan
    surface: Optional[bool] = None
    tolerances: Optional[Sequence[float]] = None
    one_empty: Union[str, float] = "diagonal"
    nsd_surface: Optional[str] = None
    spacing: Optional[Sequence[float]] = None
    lesions: bool = False
    label_values: Optional[frozenset] = None
    label_source: str = ""
    challenge: Optional[str] = None

    @classmethod
    def of_challenge(cls, key: str, **changes) -> "Scoring":
        """The challenge's rules (:data:`unifocal.metrics.CHALLENGES`), ``changes`` applied."""
        rules = CHALLENGES[key]
        scoring = cls(empty=rules.empty, tolerances=rules.tolerances, one_empty=rules.hd95_one_empty,
                      nsd_surface=rules.nsd_surface, lesions=rules.lesion_wise,
                      label_values=frozenset({0, *(v for r in rules.regions for v in r)}),
                      label_source=f"the {rules.title} labels", challenge=key)
        return replace(scoring, **changes)

    def resolved(self, classes: Sequence[ClassSpec]) -> "Scoring":
        """Checked, with every default filled in for ``classes``."""
        surface = surface_metrics_available() if self.surface is None else bool(self.surface)
        if self.surface:
            require_surface_metrics()
        if self.lesions:
            require_lesion_metrics()
        tolerances = default_tolerances(classes) if self.tolerances is None else self.tolerances
        tolerances = tuple(surface_settings(len(classes), tolerances, self.one_empty))
        nsd_surface = self.nsd_surface
        if nsd_surface is None:
            key = challenge_of(classes)
            nsd_surface = CHALLENGES[key].nsd_surface if key else "voxels"
        spacing = self.spacing
        if spacing is not None:
            spacing = tuple(check_number("spacing", v, 0.0, low_open=True) for v in spacing)
        return replace(self, surface=surface, tolerances=tolerances, nsd_surface=nsd_surface, spacing=spacing)

    def metrics(self) -> list[str]:
        """The metrics this scoring computes, in table order."""
        return list(METRICS) + (list(SURFACE_METRICS) if self.surface else []) + (
            list(LESION_METRICS) if self.lesions else [])


@dataclass
class Evaluation:
    """Per-case, per-class metrics of several methods on the same cases.

    Attributes:
        methods: method names, in table order.
        cases: case identifiers evaluated (present for every method and in the reference).
        class_names / classes: the evaluated classes (label values or regions).
        values: ``values[method][metric]`` is a float array (cases, classes).
        counts: ``counts[method]`` is an int array (cases, classes, 3) of TP, FP, FN.
        empty: the value used for ``0/0`` (see :mod:`unifocal.metrics`).
        skipped: per method, cases of the reference it has no prediction for.
        metrics: the metrics in ``values``, in table order (the surface metrics only when computed).
        tolerances: NSD tolerance (mm) per class.
        one_empty: HD95 of a class in only one of prediction and reference (see
            :func:`unifocal.metrics.surface_metrics`).
        spacing: per case, the reference's voxel size in mm (None: no voxel size, distances in voxels).
        surface_note: why the surface metrics are missing, when they are.
        settings: per method, the loss settings its training recorded (shown in the table and plots).
        nsd_surface: how NSD measures the surfaces (``"voxels"`` or ``"area"``).
    """

    methods: list[str]
    cases: list[str]
    class_names: list[str]
    classes: list[ClassSpec]
    values: dict[str, dict[str, np.ndarray]]
    counts: dict[str, np.ndarray]
    empty: float = math.nan
    skipped: dict[str, list[str]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    tolerances: list[float] = field(default_factory=list)
    one_empty: Union[str, float] = "diagonal"
    spacing: dict[str, Optional[tuple[float, ...]]] = field(default_factory=dict)
    surface_note: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    nsd_surface: str = "voxels"

    def rows(self) -> list[str]:
        """Class names plus ``CLASS_MEAN`` when there is more than one class."""
        return self.class_names + ([CLASS_MEAN] if len(self.class_names) > 1 else [])

    def column(self, method: str, metric: str, row: str) -> np.ndarray:
        """Per-case values of one method, metric and class name (or ``CLASS_MEAN``)."""
        table = self.values[method][metric]
        if row == CLASS_MEAN:
            return _nanmean_rows(table)
        return table[:, self.class_names.index(row)]


def _nanmean_rows(table: np.ndarray) -> np.ndarray:
    defined = ~np.isnan(table)
    count = defined.sum(axis=1)
    total = np.where(defined, table, 0.0).sum(axis=1)
    out = np.full(table.shape[0], math.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


@dataclass(frozen=True)
class _Job:
    """What every case is evaluated with (sent once per case to the worker processes)."""

    classes: list[ClassSpec]
    ignore_label: Optional[int]
    scoring: Scoring


def _unknown_values(labels: np.ndarray, allowed: set[int], is_reference: bool) -> list[int]:
    """The values of ``labels`` outside ``allowed`` (negative reference values, nnU-Net's outside-the-crop
    marker, allowed too). Only the values between the minimum and the maximum that are not allowed are looked
    for, without a copy of the volume (nibabel's arrays are Fortran-ordered: a ravel copies)."""
    if labels.size == 0:
        return []
    low, high = int(labels.min()), int(labels.max())
    if is_reference:
        low = max(low, 0)
    candidates = [v for v in range(low, high + 1) if v not in allowed] if high - low <= 64 else None
    if candidates is None or len(candidates) > 8:
        values = np.unique(labels)
        return [int(v) for v in values if int(v) not in allowed and not (is_reference and v < 0)]
    return [v for v in candidates if (labels == v).any()]


def _check_labels(labels: np.ndarray, path: Path, job: _Job, is_reference: bool) -> None:
    """Every value of ``labels`` is one the classes' source defines (negative reference values are nnU-Net's
    outside-the-crop marker)."""
    allowed = job.scoring.label_values
    if allowed is None:
        return
    known = set(allowed) | ({job.ignore_label} if job.ignore_label is not None else set())
    unknown = _unknown_values(labels, known, is_reference)
    if not unknown:
        return
    hint = ""
    own = {challenge: et for et, challenge in BRATS_ET_LABELS.items()}.get(job.scoring.challenge)
    if own is not None and len(unknown) == 1 and unknown[0] in BRATS_ET_LABELS and not (labels == own).any():
        # The other convention's enhancing-tumour label, and never this one's: the files' convention is known.
        other = BRATS_ET_LABELS[unknown[0]]
        hint = f": these are {CHALLENGES[other].title} labels, use --challenge {other}"
    raise ValueError(f"{printable(path)}: label values {unknown} are not among {job.scoring.label_source} "
                     f"({sorted(allowed)}){hint or '; evaluate this file with the classes it was made with'}")


def _case_spacing(job: _Job, path: Path, affine: Optional[np.ndarray], ndim: int) -> Optional[tuple[float, ...]]:
    """The reference's voxel size: its header's, else the one given for header-less files, else None."""
    spacing = voxel_size(affine)[:ndim] if affine is not None else None  # a 2D NIfTI holds a 3D affine
    if spacing is not None and job.scoring.spacing is not None:
        raise ValueError(f"{printable(path)} has a voxel size in its header {spacing}; the spacing option is only "
                         "for label files without one")
    spacing = spacing if spacing is not None else job.scoring.spacing
    if spacing is not None and len(spacing) != ndim:
        raise ValueError(f"{printable(path)}: voxel size {spacing} has {len(spacing)} values for a {ndim}D label map")
    return spacing


def _score(job: _Job, predicted: np.ndarray, truth: np.ndarray, spacing) -> dict:
    scoring = job.scoring
    result = case_metrics(predicted, truth, job.classes, job.ignore_label, scoring.empty)
    if scoring.surface:
        result.update(surface_metrics(predicted, truth, job.classes, spacing, scoring.tolerances, job.ignore_label,
                                      scoring.empty, scoring.one_empty, scoring.nsd_surface))
    if scoring.lesions:
        result.update(lesion_metrics(predicted, truth, job.classes))
    return result


def _evaluate_case(job: _Job, case: str, reference: Path, predictions: dict[str, Path]) -> dict:
    """Every method's metrics for one case; reads the reference and one prediction at a time."""
    truth = read_label(reference)
    _check_labels(truth, reference, job, is_reference=True)
    reference_affine = read_geometry(reference)
    spacing = _case_spacing(job, reference, reference_affine, truth.ndim) if job.scoring.surface else None
    values, counts = {}, {}
    for method, path in predictions.items():
        predicted = read_label(path)
        _check_labels(predicted, path, job, is_reference=False)
        predicted, compared = to_reference_grid(predicted, read_geometry(path), truth, reference_affine, case,
                                                path, reference)
        case_spacing = spacing
        if spacing is not None and compared.ndim != truth.ndim:  # axes of length 1 dropped
            case_spacing = tuple(v for v, n in zip(spacing, truth.shape) if n != 1)
        result = _score(job, predicted, compared, case_spacing)
        counts[method] = result.pop("counts")
        values[method] = result
    return {"values": values, "counts": counts, "spacing": spacing}


def _single_thread_worker() -> None:
    # Each worker evaluates one case; torch's intra-op threads would only compete with the other workers.
    import torch

    torch.set_num_threads(1)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _in_workers(work, cases, jobs, store, progress, surface) -> None:
    import multiprocessing

    # spawn: a forked copy of a process that has run torch's OpenMP threads can hang in them.
    with ProcessPoolExecutor(min(jobs, len(cases)), multiprocessing.get_context("spawn"),
                             initializer=_single_thread_worker if surface else None) as pool:
        futures = {pool.submit(_evaluate_case, *work(case)): index for index, case in enumerate(cases)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                store(futures[future], future.result())
                if progress is not None:
                    progress(done, len(cases))
        except BrokenProcessPool:
            pool.shutdown(wait=True, cancel_futures=True)
            raise ChildProcessError(f"a worker process ended while evaluating cases (killed, e.g. for want of "
                                    f"memory); rerun with fewer jobs than {jobs}") from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def evaluate(
    predictions: dict[str, dict[str, Path]],
    reference: dict[str, Path],
    classes: Sequence[ClassSpec],
    class_names: Optional[Sequence[str]] = None,
    ignore_label: Optional[int] = None,
    *,
    scoring: Optional[Scoring] = None,
    cases: str = "common",
    progress: Optional[Callable[[int, int], None]] = None,
    jobs: int = 1,
) -> Evaluation:
    """Evaluate every method against the reference.

    Args:
        predictions: method name -> (case -> prediction file).
        reference: case -> reference file.
        classes / class_names: what to evaluate (see :func:`unifocal.metrics.confusion_counts`).
        ignore_label: reference value whose voxels are not counted.
        scoring: how (:class:`Scoring`; default: its defaults).
        cases: which cases (:data:`unifocal.report.discovery.CASE_SELECTIONS`).
        progress: called as ``progress(done, total)`` before the first case (``done`` 0) and after each.
        jobs: worker processes, one case each at a time (1: evaluate in this process).

    Raises:
        ValueError: when cases do not match, files differ in geometry or hold unknown labels, or a setting is
            invalid. ChildProcessError: a worker process was killed. ImportError: a required library is missing.
    """
    classes = list(classes)
    class_names = list(class_names) if class_names is not None else default_class_names(classes)
    if len(class_names) != len(classes):
        raise ValueError("one name per class needed")
    check_number("jobs", jobs, 1, integer=True)
    requested = (scoring or Scoring()).surface
    scoring = (scoring or Scoring()).resolved(classes)
    surface_note = "" if scoring.surface else (
        "HD95 and NSD not computed (switched off)" if requested is False
        else "HD95 and NSD not computed: MONAI is not installed (pip install 'unifocal[monai]')")
    case_list, skipped = match_cases(predictions, reference, cases)
    job = _Job(classes, ignore_label, scoring)
    if scoring.surface and scoring.spacing is not None:
        _case_spacing(job, reference[case_list[0]], read_geometry(reference[case_list[0]]), len(scoring.spacing))
    methods = list(predictions)
    metrics = scoring.metrics()
    values = {m: {metric: np.empty((len(case_list), len(classes))) for metric in metrics} for m in methods}
    counts = {m: np.empty((len(case_list), len(classes), 3), dtype=np.int64) for m in methods}
    case_spacing = {}

    def store(index: int, result: dict) -> None:
        for method in methods:
            for metric in metrics:
                values[method][metric][index] = result["values"][method][metric]
            counts[method][index] = result["counts"][method]
        case_spacing[case_list[index]] = result["spacing"]

    def work(case: str):
        return job, case, reference[case], {m: predictions[m][case] for m in methods}

    if progress is not None:
        progress(0, len(case_list))  # the bar shows from the start: a worker's first case includes importing MONAI
    if jobs == 1 or len(case_list) == 1:
        for index, case in enumerate(case_list):
            store(index, _evaluate_case(*work(case)))
            if progress is not None:
                progress(index + 1, len(case_list))
    else:
        _in_workers(work, case_list, jobs, store, progress, scoring.surface)
    return Evaluation(methods, case_list, class_names, classes, values, counts, scoring.empty, skipped, metrics,
                      list(scoring.tolerances), scoring.one_empty, case_spacing, surface_note, {},
                      scoring.nsd_surface)
