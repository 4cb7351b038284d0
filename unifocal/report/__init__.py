"""Comparing segmentation methods the way the paper does: per-case, per-class metrics of each method's
predictions against one reference, paired Wilcoxon tests against a baseline, a Markdown/CSV table and box
plots. Used by ``unifocal compare``, ``unifocal demo`` and ``unifocal sweep``.

One job per module:

- :mod:`~unifocal.report.discovery`: where predictions, reference, cases and classes come from;
- :mod:`~unifocal.report.geometry`: prediction and reference in one voxel grid;
- :mod:`~unifocal.report.evaluation`: the per-case metrics, in worker processes;
- :mod:`~unifocal.report.statistics`: means and paired Wilcoxon tests;
- :mod:`~unifocal.report.tables` and :mod:`~unifocal.report.plots`: Markdown, CSV and box plots;
- :mod:`~unifocal.report.folder`: the output folder, checked, locked and written atomically;
- :mod:`~unifocal.report.progress`: progress lines or a bar.

The table reports, per class and metric, ``mean ± sd`` over the cases where the value is defined, and for each
non-baseline method the two-sided paired Wilcoxon p-value against the baseline (``*`` marks p < 0.05). With
more than one class a ``class mean`` row set is added: per case, the mean over the classes that have a value.
"""

from .discovery import (
    CASE_SELECTIONS, MethodSource, classes_from_dataset, dataset_label_values, default_class_names, match_cases,
    resolve_method,
)
from .evaluation import CLASS_MEAN, Evaluation, Scoring, available_cores, evaluate
from .folder import REPORT_NAMES, ReportFolder, report_files, write_report
from .plots import box_plots
from .progress import print_progress, progress_bar
from .statistics import SIGNIFICANCE, paired_tests, summary_rows
from .tables import markdown_report, write_per_case_csv, write_summary_csv

__all__ = [
    "CASE_SELECTIONS", "MethodSource", "classes_from_dataset", "dataset_label_values", "default_class_names",
    "match_cases", "resolve_method", "CLASS_MEAN", "Evaluation", "Scoring", "available_cores", "evaluate",
    "REPORT_NAMES", "ReportFolder", "report_files", "write_report", "box_plots", "print_progress", "progress_bar",
    "SIGNIFICANCE", "paired_tests", "summary_rows", "markdown_report", "write_per_case_csv", "write_summary_csv",
]
