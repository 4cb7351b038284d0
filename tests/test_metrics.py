"""Per-case, per-class metrics (unifocal.metrics): hand-computed values, region mode, the empty-class rule,
ignore handling, and the paired Wilcoxon test against scipy."""

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from unifocal.metrics import (
    METRICS,
    case_metrics,
    confusion_counts,
    metrics_from_counts,
    nan_summary,
    paired_wilcoxon,
)

# Six voxels. Class 1: predicted {1, 2}, reference {1} -> TP 1, FP 1, FN 0.
# Class 2: predicted {3, 4}, reference {2, 3} -> TP 1, FP 1, FN 1.
PRED = np.array([0, 1, 1, 2, 2, 0])
REF = np.array([0, 1, 2, 2, 0, 0])


def test_hand_computed_label_mode():
    counts = confusion_counts(PRED, REF, [1, 2])
    assert counts.tolist() == [[1, 1, 0], [1, 1, 1]]
    result = case_metrics(PRED, REF, [1, 2])
    assert result["DSC"] == pytest.approx([2 / 3, 2 / 4])
    assert result["IoU"] == pytest.approx([1 / 2, 1 / 3])
    assert result["recall"] == pytest.approx([1.0, 1 / 2])
    assert result["precision"] == pytest.approx([1 / 2, 1 / 2])
    background = case_metrics(PRED, REF, [0])
    # Background: predicted {0, 5}, reference {0, 4, 5} -> TP 2, FP 0, FN 1.
    assert background["counts"].tolist() == [[2, 0, 1]]
    assert background["DSC"] == pytest.approx([4 / 5])
    assert background["recall"] == pytest.approx([2 / 3])
    assert background["precision"] == pytest.approx([1.0])


def test_hand_computed_region_mode():
    # Region {1, 2}: predicted {1, 2, 3, 4}, reference {1, 2, 3} -> TP 3, FP 1, FN 0.
    result = case_metrics(PRED, REF, [(1, 2), (2,)])
    assert result["counts"].tolist() == [[3, 1, 0], [1, 1, 1]]
    assert result["DSC"] == pytest.approx([6 / 7, 1 / 2])
    assert result["IoU"] == pytest.approx([3 / 4, 1 / 3])
    assert result["recall"] == pytest.approx([1.0, 1 / 2])
    assert result["precision"] == pytest.approx([3 / 4, 1 / 2])


def test_empty_class_rule_nan_default():
    pred = np.array([0, 3, 3, 3, 0])
    ref = np.array([0, 0, 0, 0, 4])
    result = case_metrics(pred, ref, [1, 3, 4])
    # Class 1: absent from both -> every metric is 0/0 -> NaN.
    assert all(math.isnan(result[m][0]) for m in METRICS)
    # Class 3: only predicted -> DSC = IoU = precision = 0, recall 0/0 -> NaN.
    assert result["DSC"][1] == 0 and result["IoU"][1] == 0 and result["precision"][1] == 0
    assert math.isnan(result["recall"][1])
    # Class 4: only in the reference -> DSC = IoU = recall = 0, precision 0/0 -> NaN.
    assert result["DSC"][2] == 0 and result["IoU"][2] == 0 and result["recall"][2] == 0
    assert math.isnan(result["precision"][2])


def test_empty_class_rule_one():
    pred = np.array([0, 3, 3, 3, 0])
    ref = np.array([0, 0, 0, 0, 4])
    result = case_metrics(pred, ref, [1, 3, 4], empty=1.0)
    assert [result[m][0] for m in METRICS] == [1.0, 1.0, 1.0, 1.0]
    assert result["recall"][1] == 1.0 and result["DSC"][1] == 0.0
    assert result["precision"][2] == 1.0 and result["DSC"][2] == 0.0


def test_ignore_label_and_negative_reference_are_not_counted():
    pred = np.array([1, 1, 1, 0, 1])
    ref = np.array([1, 9, -1, 0, 0])
    # Voxels 1 (ignore 9) and 2 (-1) drop out: class 1 TP 1 (voxel 0), FP 1 (voxel 4), FN 0.
    assert confusion_counts(pred, ref, [1], ignore_label=9).tolist() == [[1, 1, 0]]
    # Without the ignore label, 9 is just another reference value: voxel 1 becomes a false positive.
    assert confusion_counts(pred, ref, [1]).tolist() == [[1, 2, 0]]


def test_matches_mask_counting_on_random_volumes():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(7, 9, 11))
    ref = rng.integers(0, 5, size=(7, 9, 11))
    classes = [0, 1, 2, 3, 4, (1, 2, 3), (2, 3), (4, 7)]
    counts = confusion_counts(pred, ref, classes)
    for k, spec in enumerate(classes):
        values = spec if isinstance(spec, tuple) else (spec,)
        p, g = np.isin(pred, values), np.isin(ref, values)
        assert counts[k].tolist() == [np.sum(p & g), np.sum(p & ~g), np.sum(~p & g)]
    # Large label values take the per-class path; the numbers must agree with the joint histogram path.
    big = confusion_counts(pred * 1000, ref * 1000, [0, 1000, (2000, 3000)])
    assert big.tolist() == confusion_counts(pred, ref, [0, 1, (2, 3)]).tolist()


def test_metrics_from_counts_batch_shape():
    counts = np.array([[[3, 1, 0], [0, 0, 0]], [[0, 2, 2], [5, 0, 5]]])
    result = metrics_from_counts(counts)
    assert result["DSC"].shape == (2, 2)
    assert result["DSC"][0, 0] == pytest.approx(6 / 7)
    assert math.isnan(result["DSC"][0, 1])
    assert result["DSC"][1, 0] == 0.0
    assert result["DSC"][1, 1] == pytest.approx(10 / 15)
    assert result["recall"][1, 1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="last axis"):
        metrics_from_counts(np.zeros((2, 2)))


def test_validation_errors():
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((2, 3)), np.zeros((3, 2)), [1])
    with pytest.raises(ValueError, match="< 0"):
        confusion_counts(np.array([-1, 0]), np.array([0, 0]), [1])
    with pytest.raises(ValueError, match="at least one class"):
        confusion_counts(PRED, REF, [])


def test_nan_summary():
    mean, std, n = nan_summary([0.5, math.nan, 0.7, 0.9])
    assert (mean, n) == (pytest.approx(0.7), 3)
    assert std == pytest.approx(0.2)  # sample sd of 0.5, 0.7, 0.9
    assert nan_summary([0.4]) == (0.4, 0.0, 1)
    mean, std, n = nan_summary([math.nan])
    assert math.isnan(mean) and math.isnan(std) and n == 0


def test_paired_wilcoxon_matches_scipy():
    a = [0.81, 0.75, 0.92, 0.66, 0.88, 0.79, 0.85, 0.71]
    b = [0.78, 0.76, 0.85, 0.60, 0.80, 0.79, 0.82, 0.65]
    outcome = paired_wilcoxon(a, b)
    expected = wilcoxon(a, b)
    assert outcome.statistic == pytest.approx(expected.statistic)
    assert outcome.p_value == pytest.approx(expected.pvalue)
    assert outcome.n == 8
    assert outcome.mean_difference == pytest.approx(np.mean(np.subtract(a, b)))
    # Differences: +.03, -.01, +.07, +.06, +.08, 0, +.03, +.06 -> the zero drops out, 7 ranked, the only
    # negative difference has rank 1: statistic 1, exact two-sided p = 2 * 2/128.
    assert outcome.statistic == 1.0
    assert outcome.p_value == pytest.approx(4 / 128)


def test_paired_wilcoxon_drops_nan_pairs_and_handles_ties():
    a = [0.5, math.nan, 0.7, 0.9, 0.6, 0.4]
    b = [0.4, 0.3, math.nan, 0.8, 0.5, 0.2]
    outcome = paired_wilcoxon(a, b)
    expected = wilcoxon([0.5, 0.9, 0.6, 0.4], [0.4, 0.8, 0.5, 0.2])
    assert outcome.n == 4
    assert outcome.p_value == pytest.approx(expected.pvalue)
    same = paired_wilcoxon([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same.statistic, same.p_value, same.n, same.mean_difference) == (0.0, 1.0, 3, 0.0)
    nothing = paired_wilcoxon([math.nan], [0.5])
    assert nothing.n == 0 and math.isnan(nothing.p_value)
    with pytest.raises(ValueError, match="same length"):
        paired_wilcoxon([1, 2], [1])
