"""Paired tests and the summary rows of an :class:`~unifocal.report.evaluation.Evaluation`: per method, class
row and metric, ``mean ± sd`` over the cases where the value is defined and the two-sided paired Wilcoxon test
against a baseline (:func:`unifocal.metrics.paired_wilcoxon`)."""

from __future__ import annotations

import math
from typing import Optional

from ..metrics import WilcoxonOutcome, nan_summary, paired_wilcoxon
from .evaluation import Evaluation

__all__ = ["SIGNIFICANCE", "paired_tests", "summary_rows"]

SIGNIFICANCE = 0.05


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
