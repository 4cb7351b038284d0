"""The report's tables: the paper-style Markdown table and the summary and per-case CSV files."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Union

from ..metrics import ClassSpec
from .evaluation import CLASS_MEAN, Evaluation
from .statistics import SIGNIFICANCE, summary_rows

__all__ = ["markdown_report", "write_per_case_csv", "write_summary_csv"]


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
    measure = ("surface elements weighted by their area" if evaluation.nsd_surface == "area"
               else "boundary voxels counted")
    lines = [
        f"HD95 and NSD distances in {_distance_unit(evaluation)}; NSD tolerance per class in the section titles, "
        f"{measure}. A class in only one of prediction and reference: NSD 0, HD95 {missing}."
    ]
    if "lesion F1" in evaluation.metrics:
        lines.append("lesion DSC / NSD / HD95: means over the reference's lesions and the unmatched predicted ones "
                     "(panoptica, as the official BraTS evaluation; HD95 in voxels), lesion F1: lesion detection.")
    return lines


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
