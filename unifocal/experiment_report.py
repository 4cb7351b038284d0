"""Comparing segmentation methods the way the paper does: per-case, per-class metrics of each method's
predictions against one reference, paired Wilcoxon tests against a baseline, a Markdown/CSV table and box
plots. Used by ``unifocal compare``, ``unifocal demo`` and ``unifocal sweep``.

Where the predictions come from (:func:`resolve_method`):

- a folder of label files (``.nii.gz``, ``.png``, ... see :mod:`unifocal.io`);
- an nnU-Net trainer output folder ``<results>/<Dataset>/<Trainer>__<Plans>__<config>``: the
  cross-validation predictions in ``fold_*/validation`` (all folds, or the chosen ones), with the
  ``dataset.json`` stored there; the reference defaults to
  ``$nnUNet_preprocessed/<Dataset>/gt_segmentations``, which is what nnU-Net itself evaluates against;
- one ``fold_<k>`` folder (its ``validation`` predictions);
- a dataset results folder ``<results>/<Dataset>``: every trainer output folder in it, one method each.

Metric definitions and the empty-class rules: :mod:`unifocal.metrics`: the overlap metrics DSC, IoU,
recall, precision, and, when MONAI is installed, the surface metrics HD95 and NSD on the voxel size of the
reference files (:func:`unifocal.io.read_spacing`). Cases are evaluated one per worker process
(``jobs``), each reading the reference and one prediction at a time. The table reports, per class and
metric, ``mean ± sd`` over the cases where the value is defined, and for each non-baseline method the
two-sided paired Wilcoxon p-value against the baseline (``*`` marks p < 0.05). With more than one class a
``class mean`` row set is added: per case, the mean over the classes that have a value.
"""

from __future__ import annotations

import csv
import math
import os
import re
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .io import find_dataset_json, label_classes, list_label_files, load_dataset_json, read_label, read_spacing
from .metrics import (
    METRICS,
    SURFACE_METRICS,
    ClassSpec,
    WilcoxonOutcome,
    case_metrics,
    default_tolerances,
    nan_summary,
    paired_wilcoxon,
    require_surface_metrics,
    surface_metrics,
    surface_metrics_available,
    surface_settings,
)
from .run_settings import layout_with_settings, read_run_settings

__all__ = [
    "MethodSource",
    "resolve_method",
    "Evaluation",
    "evaluate",
    "paired_tests",
    "summary_rows",
    "markdown_report",
    "write_per_case_csv",
    "write_summary_csv",
    "box_plots",
    "CLASS_MEAN",
    "report_files",
    "write_report",
    "available_cores",
    "print_progress",
    "progress_bar",
    "classes_from_dataset",
    "default_class_names",
]

CLASS_MEAN = "class mean"
SIGNIFICANCE = 0.05
_TRAINER_FOLDER = re.compile(r"^(?P<trainer>.+?)__(?P<plans>.+)__(?P<configuration>[^_].*)$")


@dataclass
class MethodSource:
    """One method's predictions: ``files`` maps case identifiers to label files.

    ``dataset_json`` and ``reference`` are what the source itself suggests (an nnU-Net results folder
    knows both); explicit command line options win over them. ``settings``: the loss settings a unifocal
    trainer recorded in its fold folders (:func:`unifocal.run_settings.read_run_settings`).
    """

    name: str
    files: dict[str, Path]
    origin: Path
    dataset_json: Optional[Path] = None
    reference: Optional[Path] = None
    settings: Optional[str] = None


def _fold_folders(trainer_folder: Path, folds: Optional[Sequence[str]]) -> list[Path]:
    found = sorted(p for p in trainer_folder.glob("fold_*") if p.is_dir())
    if folds is not None:
        wanted = {f"fold_{f}" for f in folds}
        found = [p for p in found if p.name in wanted]
    return found


def _trainer_source(
    name: Optional[str], folder: Path, folds: Optional[Sequence[str]], ending: Optional[str] = None
) -> MethodSource:
    files: dict[str, Path] = {}
    dataset_json = folder / "dataset.json"
    if ending is None and dataset_json.is_file():
        # nnU-Net's --npz leaves probability .npz files next to the predictions: use the dataset's ending.
        ending = load_dataset_json(dataset_json).get("file_ending")
    for fold in _fold_folders(folder, folds):
        validation = fold / "validation"
        if validation.is_dir():
            for case, path in list_label_files(validation, ending).items():
                if case in files:
                    raise ValueError(f"case {case} is predicted in more than one fold of {folder}")
                files[case] = path
    if not files:
        raise ValueError(f"{folder}: no predictions in fold_*/validation (has training finished?)")
    match = _TRAINER_FOLDER.match(folder.name)
    reference = None
    preprocessed = os.environ.get("nnUNet_preprocessed")
    if preprocessed:
        candidate = Path(preprocessed) / folder.parent.name / "gt_segmentations"
        if candidate.is_dir():
            reference = candidate
    return MethodSource(
        name or (match.group("trainer") if match else folder.name),
        files,
        folder,
        dataset_json if dataset_json.is_file() else None,
        reference,
        read_run_settings(folder, folds),
    )


def resolve_method(
    spec: str, folds: Optional[Sequence[str]] = None, ending: Optional[str] = None
) -> list[MethodSource]:
    """Methods from a command line word ``[NAME=]PATH`` (see the module docstring for what PATH may be).

    A dataset results folder expands to one method per trainer folder (NAME is then not allowed).
    """
    if "=" in spec and not Path(spec).exists():
        name, _, path_text = spec.partition("=")
    else:
        name, path_text = "", spec
    name = name.strip() or None
    path = Path(path_text)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder")
    if any(p.is_dir() for p in path.glob("fold_*")):
        return [_trainer_source(name, path, folds, ending)]
    if path.name.startswith("fold_") and (path / "validation").is_dir():
        return [_trainer_source(name, path.parent, [path.name[len("fold_"):]], ending)]
    trainers = sorted(p for p in path.iterdir() if p.is_dir() and _TRAINER_FOLDER.match(p.name)
                      and any(q.is_dir() for q in p.glob("fold_*")))
    if trainers:
        if name:
            raise ValueError(f"{path} holds several trainers; NAME= is only for a single method")
        return [_trainer_source(None, t, folds, ending) for t in trainers]
    dataset_json = find_dataset_json(path, levels=1)
    return [MethodSource(name or path.name, list_label_files(path, ending), path, dataset_json, None)]


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


def default_class_names(classes: Sequence[ClassSpec]) -> list[str]:
    names = []
    for spec in classes:
        if isinstance(spec, (list, tuple)):
            names.append("region " + "+".join(str(v) for v in spec))
        else:
            names.append(f"label {spec}")
    return names


@dataclass(frozen=True)
class _CaseSettings:
    """What every case is evaluated with (sent once per case to the worker processes)."""

    classes: list[ClassSpec]
    ignore_label: Optional[int]
    empty: float
    surface: bool
    tolerances: list[float]
    one_empty: Union[str, float]
    spacing: Optional[tuple[float, ...]]


def _case_spacing(setup: _CaseSettings, path: Path, ndim: int) -> Optional[tuple[float, ...]]:
    """The reference's voxel size: its header's, else the one given for header-less files, else None."""
    spacing = read_spacing(path)
    if spacing is not None and setup.spacing is not None:
        raise ValueError(f"{path} has a voxel size in its header {spacing}; the spacing option is only for "
                         "label files without one")
    spacing = spacing if spacing is not None else setup.spacing
    if spacing is not None and len(spacing) != ndim:
        raise ValueError(f"{path}: voxel size {spacing} has {len(spacing)} values for a {ndim}D label map")
    return spacing


def _evaluate_case(setup: _CaseSettings, case: str, reference: Path, predictions: dict[str, Path]) -> dict:
    """Every method's metrics for one case; reads the reference and one prediction at a time."""
    truth = read_label(reference)
    spacing = _case_spacing(setup, reference, truth.ndim) if setup.surface else None
    values, counts = {}, {}
    for method, path in predictions.items():
        predicted = read_label(path)
        truth_for_case, spacing_for_case = truth, spacing
        if predicted.shape != truth.shape:
            squeezed = np.squeeze(predicted)
            if squeezed.shape != np.squeeze(truth).shape:
                raise ValueError(
                    f"{method}, case {case}: prediction shape {predicted.shape} != reference shape {truth.shape}"
                )
            predicted, truth_for_case = squeezed, np.squeeze(truth)
            if spacing is not None:
                spacing_for_case = tuple(v for v, n in zip(spacing, truth.shape) if n != 1)
        result = case_metrics(predicted, truth_for_case, setup.classes, setup.ignore_label, setup.empty)
        counts[method] = result.pop("counts")
        if setup.surface:
            own = read_spacing(path)
            if own is not None and spacing is not None and len(own) == len(spacing) and not np.allclose(
                own, spacing, rtol=1e-3, atol=1e-6
            ):
                raise ValueError(f"{method}, case {case}: prediction voxel size {own} ({path}) differs from the "
                                 f"reference's {spacing} ({reference})")
            result.update(surface_metrics(predicted, truth_for_case, setup.classes, spacing_for_case,
                                          setup.tolerances, setup.ignore_label, setup.empty,
                                          setup.one_empty))
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


def evaluate(
    predictions: dict[str, dict[str, Path]],
    reference: dict[str, Path],
    classes: Sequence[ClassSpec],
    class_names: Optional[Sequence[str]] = None,
    ignore_label: Optional[int] = None,
    empty: float = math.nan,
    progress: Optional[Callable[[int, int], None]] = None,
    surface: Optional[bool] = None,
    tolerances: Optional[Sequence[float]] = None,
    one_empty: Union[str, float] = "diagonal",
    spacing: Optional[Sequence[float]] = None,
    jobs: int = 1,
) -> Evaluation:
    """Evaluate every method on the cases that all methods and the reference have.

    Args:
        predictions: method name -> (case -> prediction file).
        reference: case -> reference file.
        classes / class_names: what to evaluate (see :func:`unifocal.metrics.confusion_counts`).
        progress: called as ``progress(done, total)`` before the first case (``done`` 0) and after each.
        surface: compute HD95 and NSD (True: MONAI required; None: when MONAI is installed).
        tolerances: NSD tolerance (mm) per class (default: :func:`unifocal.metrics.default_tolerances`).
        one_empty: HD95 of a class in only one of prediction and reference (``"diagonal"`` or a number).
        spacing: voxel size (mm per array axis) of reference files whose format stores none.
        jobs: worker processes, one case each at a time (1: evaluate in this process).

    Raises:
        ValueError: when no case is common to all methods and the reference, shapes or voxel sizes differ,
            or a setting is invalid.
        ImportError: with ``surface=True`` and no MONAI.
    """
    if not predictions:
        raise ValueError("no methods to evaluate")
    classes = list(classes)
    class_names = list(class_names) if class_names is not None else default_class_names(classes)
    if len(class_names) != len(classes):
        raise ValueError("one name per class needed")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer; got {jobs!r}")
    surface_note = ""
    if surface is None:
        surface = surface_metrics_available()
        if not surface:
            surface_note = "HD95 and NSD not computed: MONAI is not installed (pip install 'unifocal[monai]')"
    elif surface:
        require_surface_metrics()
    else:
        surface_note = "HD95 and NSD not computed (switched off)"
    tolerances = surface_settings(len(classes), default_tolerances(classes) if tolerances is None else tolerances,
                                  one_empty)
    if spacing is not None:
        spacing = tuple(float(v) for v in spacing)
        if not all(math.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"spacing must hold finite positive numbers; got {spacing}")
    common = set(reference)
    for files in predictions.values():
        common &= set(files)
    cases = sorted(common)
    if not cases:
        raise ValueError("no case is present in the reference and in every method's predictions")
    setup = _CaseSettings(classes, ignore_label, empty, surface, tolerances, one_empty, spacing)
    if surface and spacing is not None:
        _case_spacing(setup, reference[cases[0]], len(spacing))
    skipped = {m: sorted(set(reference) - set(files)) for m, files in predictions.items()}
    methods = list(predictions)
    metrics = list(METRICS) + (list(SURFACE_METRICS) if surface else [])
    values = {m: {metric: np.empty((len(cases), len(classes))) for metric in metrics} for m in methods}
    counts = {m: np.empty((len(cases), len(classes), 3), dtype=np.int64) for m in methods}
    case_spacing = {}

    def store(index: int, result: dict) -> None:
        for method in methods:
            for metric in metrics:
                values[method][metric][index] = result["values"][method][metric]
            counts[method][index] = result["counts"][method]
        case_spacing[cases[index]] = result["spacing"]

    def inputs(case: str):
        return setup, case, reference[case], {m: predictions[m][case] for m in methods}

    if progress is not None:
        progress(0, len(cases))  # the bar shows from the start: a worker's first case includes importing MONAI
    if jobs == 1 or len(cases) == 1:
        for index, case in enumerate(cases):
            store(index, _evaluate_case(*inputs(case)))
            if progress is not None:
                progress(index + 1, len(cases))
    else:
        import multiprocessing

        # spawn: a forked copy of a process that has run torch's OpenMP threads can hang in them.
        with ProcessPoolExecutor(min(jobs, len(cases)), multiprocessing.get_context("spawn"),
                                 initializer=_single_thread_worker if surface else None) as pool:
            futures = {pool.submit(_evaluate_case, *inputs(case)): index for index, case in enumerate(cases)}
            try:
                for done, future in enumerate(as_completed(futures), start=1):
                    store(futures[future], future.result())
                    if progress is not None:
                        progress(done, len(cases))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return Evaluation(methods, cases, class_names, classes, values, counts, empty, skipped, metrics, tolerances,
                      one_empty, case_spacing, surface_note)


def paired_tests(evaluation: Evaluation, baseline: str) -> dict[tuple[str, str, str], WilcoxonOutcome]:
    """Wilcoxon outcomes keyed by ``(method, row, metric)`` for every non-baseline method."""
    if baseline not in evaluation.methods:
        raise ValueError(f"baseline {baseline!r} is not one of the methods {evaluation.methods}")
    tests = {}
    for method in evaluation.methods:
        if method == baseline:
            continue
        for row in evaluation.rows():
            for metric in evaluation.metrics:
                tests[(method, row, metric)] = paired_wilcoxon(
                    evaluation.column(method, metric, row), evaluation.column(baseline, metric, row)
                )
    return tests


def summary_rows(evaluation: Evaluation, baseline: Optional[str]) -> list[dict]:
    """One dict per (method, class row, metric): mean, sd, n, and the test against the baseline."""
    tests = paired_tests(evaluation, baseline) if baseline else {}
    rows = []
    for method in evaluation.methods:
        for row in evaluation.rows():
            for metric in evaluation.metrics:
                mean, std, n = nan_summary(evaluation.column(method, metric, row))
                test = tests.get((method, row, metric))
                rows.append(
                    {
                        "method": method,
                        "class": row,
                        "metric": metric,
                        "mean": mean,
                        "sd": std,
                        "n": n,
                        "baseline": baseline if test else "",
                        "mean_difference": test.mean_difference if test else math.nan,
                        "wilcoxon_statistic": test.statistic if test else math.nan,
                        "p_value": test.p_value if test else math.nan,
                        "n_pairs": test.n if test else 0,
                    }
                )
    return rows


def _format_p(p: float) -> str:
    if math.isnan(p):
        return "p=n/a"
    text = f"p={p:.3f}" if p >= 0.001 else "p<0.001"
    return text + ("*" if p < SIGNIFICANCE else "")


def _distance_unit(evaluation: Evaluation) -> str:
    """How the surface distances are measured: mm from the headers, voxel units, or both."""
    without = sum(spacing is None for spacing in evaluation.spacing.values())
    if without == 0:
        return "mm (voxel size from the reference headers)"
    if without == len(evaluation.spacing):
        return "voxel units (the reference files store no voxel size)"
    return f"mm, but voxel units for the {without} cases whose reference file stores no voxel size"


def _surface_lines(evaluation: Evaluation) -> list[str]:
    if "HD95" not in evaluation.metrics:
        return [evaluation.surface_note + "."] if evaluation.surface_note else []
    missing = ("the image diagonal" if evaluation.one_empty == "diagonal"
               else f"{evaluation.one_empty} ({'left out' if math.isnan(evaluation.one_empty) else 'fixed'})")
    return [
        f"HD95 and NSD distances in {_distance_unit(evaluation)}; NSD tolerance per class in the section titles. "
        f"A class in only one of prediction and reference: NSD 0, HD95 {missing}."
    ]


def markdown_report(evaluation: Evaluation, baseline: Optional[str], digits: int = 3) -> str:
    """The paper-style table: one section per class (and the class mean), methods as rows, the metrics as
    columns, ``mean ± sd`` and, for non-baseline methods, the paired p-value."""
    rows = summary_rows(evaluation, baseline)
    lookup = {(r["method"], r["class"], r["metric"]): r for r in rows}
    metrics = evaluation.metrics
    lines = []
    lines.append(
        f"{len(evaluation.cases)} cases; mean ± sd over cases where the value is defined "
        f"(0/0 -> {'NaN, left out' if math.isnan(evaluation.empty) else evaluation.empty})."
    )
    lines += _surface_lines(evaluation)
    if baseline:
        lines.append(
            f"p: two-sided paired Wilcoxon signed-rank test against {baseline}; * p < {SIGNIFICANCE}."
        )
    for row in evaluation.rows():
        if row == CLASS_MEAN:
            title = row
        else:
            index = evaluation.class_names.index(row)
            title = f"{row} ({_spec_text(evaluation.classes[index])}"
            if "NSD" in metrics:
                title += f"; NSD tolerance {evaluation.tolerances[index]:.3g}"
            title += ")"
        lines += ["", f"### {title}", "", "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for method in evaluation.methods:
            cells = []
            for metric in metrics:
                r = lookup[(method, row, metric)]
                cell = "n/a" if r["n"] == 0 else f"{r['mean']:.{digits}f} ± {r['sd']:.{digits}f}"
                if baseline and method != baseline:
                    cell += f" ({_format_p(r['p_value'])})"
                cells.append(cell)
            label = f"{method} (baseline)" if method == baseline else method
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if evaluation.settings:
        lines += ["", "### loss settings (unifocal_loss.json)", "", "| method | settings |", "|---|---|"]
        lines += [f"| {method} | {evaluation.settings[method]} |" for method in evaluation.methods
                  if method in evaluation.settings]
    return "\n".join(lines) + "\n"


def _spec_text(spec: ClassSpec) -> str:
    if isinstance(spec, (list, tuple)):
        return "labels " + ", ".join(str(v) for v in spec)
    return f"label {spec}"


def write_per_case_csv(evaluation: Evaluation, path: Union[str, Path]) -> Path:
    """Long format: one line per method, case and class with the metrics, TP/FP/FN and, with the surface
    metrics, the reference's voxel size (``x``-separated mm per array axis; empty: voxel units)."""
    path = Path(path)
    surface = "HD95" in evaluation.metrics
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "case", "class", *evaluation.metrics, "TP", "FP", "FN"]
                        + (["spacing"] if surface else []))
        for method in evaluation.methods:
            for i, case in enumerate(evaluation.cases):
                spacing = evaluation.spacing.get(case)
                extra = ["" if spacing is None else "x".join(f"{v:g}" for v in spacing)] if surface else []
                for k, name in enumerate(evaluation.class_names):
                    metrics = [_csv_number(evaluation.values[method][m][i, k]) for m in evaluation.metrics]
                    writer.writerow([method, case, name, *metrics, *evaluation.counts[method][i, k].tolist(), *extra])
    return path


def write_summary_csv(evaluation: Evaluation, baseline: Optional[str], path: Union[str, Path]) -> Path:
    path = Path(path)
    rows = summary_rows(evaluation, baseline)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_number(v) if isinstance(v, float) else v for k, v in row.items()})
    return path


def _csv_number(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def box_plots(evaluation: Evaluation, path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Box plots of the per-case values: one panel per metric (rows) and class (columns), one box per
    method, the cases as dots. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = evaluation.rows()
    width = max(5.0, 2.2 + 1.1 * len(evaluation.methods) * len(rows))
    metrics = evaluation.metrics
    fig, axes = plt.subplots(len(metrics), len(rows), figsize=(width, 2.6 * len(metrics)), squeeze=False,
                             sharey="row")
    rng = np.random.default_rng(0)
    for j, row in enumerate(rows):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            data = []
            for method in evaluation.methods:
                column = evaluation.column(method, metric, row)
                data.append(column[~np.isnan(column)])
            positions = np.arange(1, len(data) + 1)
            ax.boxplot([d if d.size else [math.nan] for d in data], positions=positions, widths=0.6,
                       showfliers=False)
            for x, d in zip(positions, data):
                ax.plot(x + rng.uniform(-0.15, 0.15, d.size), d, ".", ms=3, alpha=0.5, color="tab:blue")
            ax.set_xticks(positions)
            ax.set_xticklabels(evaluation.methods if i == len(metrics) - 1 else [""] * len(data),
                               rotation=30, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(row, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{metric} ({_axis_unit(evaluation)})" if metric == "HD95" else metric)
    if title:
        fig.suptitle(textwrap.fill(title, width=int(width * 11)), fontsize=10)
    layout_with_settings(fig, {m: evaluation.settings[m] for m in evaluation.methods if m in evaluation.settings})
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _axis_unit(evaluation: Evaluation) -> str:
    return "voxels" if all(spacing is None for spacing in evaluation.spacing.values()) else "mm"


def print_progress(prefix: str = "evaluated") -> Callable[[int, int], None]:
    """A ``progress`` callback that prints ``prefix done/total`` to stderr about 10 times per run."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {prefix} {done}/{total} cases", file=sys.stderr, flush=True)

    return report


def progress_bar(prefix: str = "evaluated") -> Callable[[int, int], None]:
    """A ``progress`` callback: a tqdm bar on an interactive terminal when tqdm is installed, else
    :func:`print_progress`'s lines (which read well in log files)."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return print_progress(prefix)
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=prefix, unit="case", file=sys.stderr)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return report


def classes_from_dataset(
    dataset_json: Optional[Path], include_background: bool = False
) -> tuple[list[str], list[ClassSpec], Optional[int]]:
    """Classes to evaluate from an nnU-Net ``dataset.json`` (background dropped unless asked for)."""
    names, classes, ignore_label = label_classes(load_dataset_json(dataset_json), dataset_json)
    keep = [
        i for i, spec in enumerate(classes)
        if include_background or not (spec == 0 or (isinstance(spec, tuple) and spec == (0,)))
    ]
    return [names[i] for i in keep], [classes[i] for i in keep], ignore_label


def write_report(
    evaluation: Evaluation,
    baseline: Optional[str],
    folder: Union[str, Path],
    title: Optional[str] = None,
    plot: bool = True,
) -> tuple[str, list[Path]]:
    """Write the :func:`report_files` (``table.md``, ``summary.csv``, ``per_case.csv`` and, with ``plot``,
    ``boxplots.png``) into ``folder``; returns the Markdown report and the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, summary, per_case, *plot_path = report_files(folder, plot)
    baseline = baseline if len(evaluation.methods) > 1 else None
    report = markdown_report(evaluation, baseline)
    if title:
        report = f"## {title}\n\n" + report
    table.write_text(report, encoding="utf-8")
    written = [table, write_summary_csv(evaluation, baseline, summary), write_per_case_csv(evaluation, per_case)]
    if plot_path:
        written.append(box_plots(evaluation, plot_path[0], title))
    return report, written


def report_files(folder: Union[str, Path], plot: bool = True) -> list[Path]:
    """The files :func:`write_report` writes into ``folder`` (to check before a run that none exists)."""
    folder = Path(folder)
    names = ["table.md", "summary.csv", "per_case.csv"] + (["boxplots.png"] if plot else [])
    return [folder / name for name in names]
