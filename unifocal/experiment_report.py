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

Metric definitions and the empty-class rule: :mod:`unifocal.metrics`. The table reports, per class and
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from .io import find_dataset_json, label_classes, list_label_files, load_dataset_json, read_label
from .metrics import METRICS, ClassSpec, WilcoxonOutcome, case_metrics, nan_summary, paired_wilcoxon
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
    "write_report",
    "print_progress",
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


def evaluate(
    predictions: dict[str, dict[str, Path]],
    reference: dict[str, Path],
    classes: Sequence[ClassSpec],
    class_names: Optional[Sequence[str]] = None,
    ignore_label: Optional[int] = None,
    empty: float = math.nan,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Evaluation:
    """Evaluate every method on the cases that all methods and the reference have.

    Args:
        predictions: method name -> (case -> prediction file).
        reference: case -> reference file.
        classes / class_names: what to evaluate (see :func:`unifocal.metrics.confusion_counts`).
        progress: called as ``progress(done, total)`` after each case.

    Raises:
        ValueError: when no case is common to all methods and the reference, or shapes differ.
    """
    if not predictions:
        raise ValueError("no methods to evaluate")
    classes = list(classes)
    class_names = list(class_names) if class_names is not None else default_class_names(classes)
    if len(class_names) != len(classes):
        raise ValueError("one name per class needed")
    common = set(reference)
    for files in predictions.values():
        common &= set(files)
    cases = sorted(common)
    if not cases:
        raise ValueError("no case is present in the reference and in every method's predictions")
    skipped = {m: sorted(set(reference) - set(files)) for m, files in predictions.items()}
    methods = list(predictions)
    values = {m: {metric: np.empty((len(cases), len(classes))) for metric in METRICS} for m in methods}
    counts = {m: np.empty((len(cases), len(classes), 3), dtype=np.int64) for m in methods}
    for index, case in enumerate(cases):
        truth = read_label(reference[case])
        for method in methods:
            predicted = read_label(predictions[method][case])
            if predicted.shape != truth.shape:
                squeezed = np.squeeze(predicted)
                if squeezed.shape != np.squeeze(truth).shape:
                    raise ValueError(
                        f"{method}, case {case}: prediction shape {predicted.shape} != reference shape {truth.shape}"
                    )
                predicted, truth_for_case = squeezed, np.squeeze(truth)
            else:
                truth_for_case = truth
            result = case_metrics(predicted, truth_for_case, classes, ignore_label, empty)
            for metric in METRICS:
                values[method][metric][index] = result[metric]
            counts[method][index] = result["counts"]
        if progress is not None:
            progress(index + 1, len(cases))
    return Evaluation(methods, cases, class_names, classes, values, counts, empty, skipped)


def paired_tests(evaluation: Evaluation, baseline: str) -> dict[tuple[str, str, str], WilcoxonOutcome]:
    """Wilcoxon outcomes keyed by ``(method, row, metric)`` for every non-baseline method."""
    if baseline not in evaluation.methods:
        raise ValueError(f"baseline {baseline!r} is not one of the methods {evaluation.methods}")
    tests = {}
    for method in evaluation.methods:
        if method == baseline:
            continue
        for row in evaluation.rows():
            for metric in METRICS:
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
            for metric in METRICS:
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


def markdown_report(evaluation: Evaluation, baseline: Optional[str], digits: int = 3) -> str:
    """The paper-style table: one section per class (and the class mean), methods as rows, the four
    metrics as columns, ``mean ± sd`` and, for non-baseline methods, the paired p-value."""
    rows = summary_rows(evaluation, baseline)
    lookup = {(r["method"], r["class"], r["metric"]): r for r in rows}
    lines = []
    lines.append(
        f"{len(evaluation.cases)} cases; mean ± sd over cases where the value is defined "
        f"(0/0 -> {'NaN, left out' if math.isnan(evaluation.empty) else evaluation.empty})."
    )
    if baseline:
        lines.append(
            f"p: two-sided paired Wilcoxon signed-rank test against {baseline}; * p < {SIGNIFICANCE}."
        )
    for row in evaluation.rows():
        spec = evaluation.classes[evaluation.class_names.index(row)] if row != CLASS_MEAN else None
        title = row if spec is None else f"{row} ({_spec_text(spec)})"
        lines += ["", f"### {title}", "", "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for method in evaluation.methods:
            cells = []
            for metric in METRICS:
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
    """Long format: one line per method, case and class with the four metrics and TP/FP/FN."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "case", "class", *METRICS, "TP", "FP", "FN"])
        for method in evaluation.methods:
            for i, case in enumerate(evaluation.cases):
                for k, name in enumerate(evaluation.class_names):
                    metrics = [_csv_number(evaluation.values[method][m][i, k]) for m in METRICS]
                    writer.writerow([method, case, name, *metrics, *evaluation.counts[method][i, k].tolist()])
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
    fig, axes = plt.subplots(len(METRICS), len(rows), figsize=(width, 2.6 * len(METRICS)), squeeze=False,
                             sharey="row")
    rng = np.random.default_rng(0)
    for j, row in enumerate(rows):
        for i, metric in enumerate(METRICS):
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
            ax.set_xticklabels(evaluation.methods if i == len(METRICS) - 1 else [""] * len(data),
                               rotation=30, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(row, fontsize=10)
            if j == 0:
                ax.set_ylabel(metric)
    if title:
        fig.suptitle(textwrap.fill(title, width=int(width * 11)), fontsize=10)
    layout_with_settings(fig, {m: evaluation.settings[m] for m in evaluation.methods if m in evaluation.settings})
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_progress(prefix: str = "evaluated") -> Callable[[int, int], None]:
    """A ``progress`` callback that prints ``prefix done/total`` to stderr about 10 times per run."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {prefix} {done}/{total} cases", file=sys.stderr, flush=True)

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
    """Write ``table.md``, ``summary.csv``, ``per_case.csv`` and (with ``plot``) ``boxplots.png`` into
    ``folder``; returns the Markdown report and the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    baseline = baseline if len(evaluation.methods) > 1 else None
    report = markdown_report(evaluation, baseline)
    if title:
        report = f"## {title}\n\n" + report
    table = folder / "table.md"
    table.write_text(report, encoding="utf-8")
    written = [table, write_summary_csv(evaluation, baseline, folder / "summary.csv"),
               write_per_case_csv(evaluation, folder / "per_case.csv")]
    if plot:
        written.append(box_plots(evaluation, folder / "boxplots.png", title))
    return report, written
