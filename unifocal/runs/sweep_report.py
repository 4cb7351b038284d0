"""A sweep's results: every completed run evaluated on the same cases, summarised over folds.

Cases are keyed ``fold_<f>/<case>`` when there are several folds, so that the comparison (``comparison/``) pairs
every run with the baseline on the same model fold and case; the DSC table, ``sweep.csv`` and ``sweep.png`` give
the mean over folds of each fold's mean DSC, with the standard deviation over folds (over cases when there is
one fold), and the paired Wilcoxon test against the first baseline over every (fold, case) pair. A setting with a fold that did not complete is reported as missing, with its state and log, and
left out of the comparison: never counted as zero.
"""

from __future__ import annotations

import csv
import math
import textwrap
from pathlib import Path

import numpy as np

__all__ = ["collect", "fold_summary", "plot_sweep"]


def _case_key(fold: str, case: str, folds) -> str:
    return f"fold_{fold}/{case}" if len(folds) > 1 else case


def _predictions(spec, data) -> dict:
    """case key -> prediction file of one completed run."""
    from ..io import list_label_files

    if spec.predictions is not None:
        folder = spec.predictions
    else:
        trained = sorted(spec.workspace.results.glob(f"{data.folder.name}/{spec.trainer}__*__{spec.configuration}"))
        folder = trained[0] / f"fold_{spec.fold}" / "validation" if trained else spec.workspace.results / "none"
    if not folder.is_dir():
        raise ValueError(f"{spec.key} completed but its predictions folder {folder} does not exist")
    return list_label_files(folder, data.ending)


def _references(data, folds) -> dict:
    from ..io import list_label_files

    if data.held_out:
        files = list_label_files(data.folder / "labelsTs", data.ending)
    else:
        files = list_label_files(data.workspace.preprocessed / data.folder.name / "gt_segmentations", data.ending)
    return {_case_key(fold, case, folds): path for fold in folds for case, path in files.items()}


def _gather(settings, specs, record, data, folds, report):
    """Predictions of the settings whose every fold completed; the others' missing folds, reported."""
    predictions, missing = {}, {}
    by_label = {}
    for spec in specs:
        by_label.setdefault(spec.label, []).append(spec)
    for setting in settings:
        entries = [(spec, record.jobs.get(spec.key, {})) for spec in by_label[setting.label]]
        lost = [(spec, entry) for spec, entry in entries if entry.get("state") != "COMPLETED"]
        if lost:
            missing[setting.label] = [f"fold {spec.fold} {entry.get('state', 'not run')}" for spec, entry in lost]
            for spec, entry in lost:
                report(f"missing: {spec.key}: {entry.get('state', 'not run')}, log {entry.get('log', '-')}")
            continue
        predictions[setting.label] = {_case_key(spec.fold, case, folds): path for spec, _ in entries
                                      for case, path in _predictions(spec, data).items()}
    return predictions, missing


def collect(args, output: Path, data, settings, specs, record, given: dict, report) -> int:
    """Evaluate what completed, write the comparison, ``sweep.csv`` and ``sweep.png``, print the DSC table.
    Returns 0 when every run completed, else 1 (after reporting what did)."""
    from ..report import evaluate, paired_tests, write_report
    from ..run_settings import read_run_settings

    folds = list(args.folds)
    predictions, missing = _gather(settings, specs, record, data, folds, report)
    predictions = {**{name: files for name, files in given.items()}, **predictions}
    if not predictions:
        report("no run completed: nothing to evaluate")
        return 1
    report("evaluating every completed run on the same cases")
    evaluation = evaluate(predictions, _references(data, folds), data.classes, data.class_names, data.ignore_label)
    baselines = list(given) + [s.label for s in settings if s.loss is None and s.label in predictions]
    grid = [s for s in settings if s.loss is not None]
    evaluation.methods = baselines + [s.label for s in grid if s.label in predictions]
    for spec in specs:
        if spec.label in evaluation.methods and spec.label not in evaluation.settings:
            recorded = read_run_settings(_trainer_folder(spec, data), folds)
            if recorded:
                evaluation.settings[spec.label] = recorded
    schedule = specs[0].schedule if specs else None
    title = (f"loss settings sweep, {data.folder.name}, folds {' '.join(folds)}"
             + (f", {schedule.epochs * schedule.iterations} iterations per run" if schedule else ""))
    _, written = write_report(evaluation, baselines[0] if baselines else None, output / "comparison", title)
    summary = fold_summary(evaluation, folds)
    baseline = baselines[0] if baselines and len(evaluation.methods) > 1 else None
    tests = {key[:2]: test for key, test in paired_tests(evaluation, baseline).items() if key[2] == "DSC"} \
        if baseline else {}
    csv_path = write_sweep_csv(summary, tests, baseline, settings, missing, evaluation.rows(), output / "sweep.csv")
    plot_path = plot_sweep(summary, grid, baselines, evaluation, output / "sweep.png", title)
    print()
    print(dsc_table(summary, tests, baseline, evaluation, [*baselines, *[s.label for s in grid]], missing,
                    len(folds)))
    report(f"done in {report.elapsed() / 60:.1f} min")
    print(f"outputs in {output}:")
    for path in [plot_path, csv_path, *written]:
        print(f"  {path}")
    return 1 if missing else 0


def _trainer_folder(spec, data) -> Path:
    found = sorted(spec.workspace.results.glob(f"{data.folder.name}/{spec.trainer}__*__{spec.configuration}"))
    return found[0] if found else spec.workspace.results


def fold_summary(evaluation, folds) -> dict:
    """``(method, row) -> (mean, sd, n)`` of DSC: the mean over folds of each fold's mean and the sd over folds
    (``n`` folds); with one fold, the mean and sd over cases (``n`` cases)."""
    from ..metrics import nan_summary

    summary = {}
    for method in evaluation.methods:
        for row in evaluation.rows():
            values = evaluation.column(method, "DSC", row)
            if len(folds) == 1:
                summary[(method, row)] = nan_summary(values)
                continue
            fold_of = [case.split("/", 1)[0] for case in evaluation.cases]
            means = [nan_summary(values[[f == f"fold_{fold}" for f in fold_of]])[0] for fold in folds]
            summary[(method, row)] = nan_summary(means)
    return summary


def write_sweep_csv(summary, tests, baseline, settings, missing, rows, path: Path) -> Path:
    """One line per setting and class: its gamma/delta/weight, mean DSC, sd, n, the paired test against the
    baseline (p, number of pairs) and the folds that are missing."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "gamma", "delta", "weight", "class", "metric", "mean", "sd", "n", "baseline",
                         "p_value", "n_pairs", "missing"])
        labels = [name for name, _ in summary if all(name != s.label for s in settings)]
        for label in dict.fromkeys(labels + [s.label for s in settings]):
            setting = next((s for s in settings if s.label == label), None)
            values = [getattr(setting, k, None) for k in ("gamma", "delta", "weight")]
            for row in rows:
                mean, sd, n = summary.get((label, row), (math.nan, math.nan, 0))
                test = tests.get((label, row))
                writer.writerow([label, *("" if v is None else f"{v:g}" for v in values), row, "DSC",
                                 _number(mean), _number(sd), n, baseline if test else "",
                                 _number(test.p_value) if test else "", test.n if test else "",
                                 "; ".join(missing.get(label, []))])
    return path


def _number(value: float) -> str:
    return "" if math.isnan(value) else repr(value)


def dsc_table(summary, tests, baseline, evaluation, labels, missing, num_folds: int) -> str:
    rows = evaluation.rows()
    spread = "sd over folds" if num_folds > 1 else "sd over cases"
    pairs = "every fold and case" if num_folds > 1 else "every case"
    tested = f"; p: paired Wilcoxon test against {baseline} over {pairs}" if baseline else ""
    lines = [f"mean DSC +- {spread}{tested}", "", "| run | " + " | ".join(rows) + " | loss settings |",
             "|---" * (len(rows) + 2) + "|"]
    for label in labels:
        if label in missing:
            lines.append(f"| {label} | " + " | ".join("missing" for _ in rows) + f" | {'; '.join(missing[label])} |")
            continue
        cells = [f"{summary[(label, row)][0]:.3f} +- {summary[(label, row)][1]:.3f}"
                 + (f" (p {tests[(label, row)].p_value:.3g})" if (label, row) in tests else "") for row in rows]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {evaluation.settings.get(label, '')} |")
    return "\n".join(lines) + "\n"


def plot_sweep(summary, grid, baselines, evaluation, path: Path, title: str = "") -> Path:
    """Mean DSC against gamma, one panel per class (and the class mean), one line per delta/weight
    combination, the band +- one sd; baselines are dashed horizontal lines. Missing settings are gaps."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..run_settings import layout_with_settings

    rows = evaluation.rows()
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows) + 0.8, 3.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    lines = {}
    for setting in grid:
        lines.setdefault((setting.delta, setting.weight), []).append(setting)
    for ax, row in zip(axes[0], rows):
        for k, ((delta, weight), members) in enumerate(lines.items()):
            members = sorted(members, key=lambda s: s.gamma)
            stats = np.array([summary.get((s.label, row), (math.nan, math.nan, 0))[:2] for s in members])
            x = np.array([s.gamma for s in members])
            name = members[0].trainer + "".join(f", {n} {v:g}" for n, v in (("delta", delta), ("weight", weight))
                                                if v is not None)
            ax.plot(x, stats[:, 0], "o-", color="black" if len(lines) == 1 else colours[k % len(colours)], label=name)
            ax.fill_between(x, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], alpha=0.15, linewidth=0,
                            color="black" if len(lines) == 1 else colours[k % len(colours)])
        for k, name in enumerate(baselines):
            ax.axhline(summary[(name, row)][0], linestyle="--", color=colours[(k + len(lines)) % len(colours)],
                       label=name)
        ax.set_title(row)
        ax.set_xlabel("gamma")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean DSC")
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(textwrap.fill(title, width=int((3.6 * len(rows) + 0.8) * 11)), fontsize=10)
    layout_with_settings(fig, evaluation.settings)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
