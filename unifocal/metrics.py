"""Per-case, per-class overlap metrics on hard label maps, and the paired test the paper uses.

For one case and one class ``c`` with prediction mask ``P`` and reference mask ``G`` (Yeung et al. 2022,
Sec. 4; the nnU-Net and MONAI definitions agree):

.. math::

    TP = |P \\cap G|, \\quad FP = |P \\setminus G|, \\quad FN = |G \\setminus P|

    \\mathrm{DSC} = \\frac{2TP}{2TP + FP + FN}, \\quad \\mathrm{IoU} = \\frac{TP}{TP + FP + FN}, \\quad
    \\mathrm{recall} = \\frac{TP}{TP + FN}, \\quad \\mathrm{precision} = \\frac{TP}{TP + FP}

A *class* is one label value (label mode: ``P = {prediction == c}``) or a tuple of label values (region
mode, nnU-Net's ``"labels": {"tumor core": [2, 3]}``: ``P = {prediction in c}``). Voxels whose reference
value is the ignore label, or negative (nnU-Net's "outside the crop" marker), are not counted.

**Empty classes.** A ratio whose denominator is 0 (a ``0/0``) takes the value ``empty``: ``nan`` by default,
the nnU-Net convention. So a class absent from both prediction and reference has DSC = IoU = ``nan``; recall is
``nan`` whenever the class is absent from the reference, precision whenever it is absent from the
prediction. ``nan`` values are left out of means (:func:`nan_summary`) and a case enters a paired test only
when both methods have a value (:func:`paired_wilcoxon`). With ``empty=1.0`` the same cases count as
perfect (the "vacuous truth" convention); the rule is the same for all four metrics.

Paired tests: a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) per class and metric between
each method and a baseline, on the cases where both have a value, as in the paper (p < 0.05).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

__all__ = [
    "METRICS",
    "ClassSpec",
    "confusion_counts",
    "metrics_from_counts",
    "case_metrics",
    "nan_summary",
    "WilcoxonOutcome",
    "paired_wilcoxon",
]

METRICS = ("DSC", "IoU", "recall", "precision")

ClassSpec = Union[int, Sequence[int]]

# Largest label value + 1 for which the joint (reference, prediction) histogram is used.
_JOINT_LIMIT = 1024


def _members(spec: ClassSpec) -> tuple[int, ...]:
    if isinstance(spec, (list, tuple, np.ndarray)):
        members = tuple(int(v) for v in spec)
        if not members:
            raise ValueError("a region must hold at least one label value")
        return members
    return (int(spec),)


def confusion_counts(
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: Sequence[ClassSpec],
    ignore_label: Optional[int] = None,
) -> np.ndarray:
    """TP, FP, FN per class: an int64 array of shape (len(classes), 3).

    Args:
        prediction: hard label map (any shape, integer values >= 0).
        reference: label map of the same shape.
        classes: label values (label mode) or tuples of label values (region mode), see the module docstring.
        ignore_label: reference value whose voxels are not counted.

    Raises:
        ValueError: on a shape mismatch or negative predicted labels.
    """
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    members = [_members(spec) for spec in classes]
    if not members:
        raise ValueError("need at least one class")
    pred = prediction.ravel().astype(np.int64, copy=False)
    ref = reference.ravel().astype(np.int64, copy=False)
    keep = ref >= 0
    if ignore_label is not None:
        keep &= ref != ignore_label
    if not keep.all():
        pred, ref = pred[keep], ref[keep]
    if pred.size and pred.min() < 0:
        raise ValueError(f"predicted label {pred.min()} < 0")
    size = int(max(pred.max(initial=0), ref.max(initial=0), max(max(m) for m in members))) + 1
    counts = np.zeros((len(members), 3), dtype=np.int64)
    if size > _JOINT_LIMIT:
        for index, values in enumerate(members):
            in_pred, in_ref = np.isin(pred, values), np.isin(ref, values)
            tp = int(np.count_nonzero(in_pred & in_ref))
            counts[index] = (tp, np.count_nonzero(in_pred) - tp, np.count_nonzero(in_ref) - tp)
        return counts
    # One pass over the voxels: the joint histogram of (reference value, predicted value).
    joint = np.bincount(ref * size + pred, minlength=size * size).reshape(size, size)
    for index, values in enumerate(members):
        inside = np.zeros(size, dtype=bool)
        inside[[v for v in values if 0 <= v < size]] = True
        tp = joint[np.ix_(inside, inside)].sum()
        counts[index] = (tp, joint[:, inside].sum() - tp, joint[inside, :].sum() - tp)
    return counts


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, float(empty), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def metrics_from_counts(counts: np.ndarray, empty: float = math.nan) -> dict[str, np.ndarray]:
    """DSC, IoU, recall and precision from TP/FP/FN counts (last axis of size 3); ``0/0`` gives ``empty``."""
    counts = np.asarray(counts)
    if counts.shape[-1:] != (3,):
        raise ValueError(f"counts must have a last axis of size 3 (TP, FP, FN); got shape {counts.shape}")
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    return {
        "DSC": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "IoU": _ratio(tp, tp + fp + fn, empty),
        "recall": _ratio(tp, tp + fn, empty),
        "precision": _ratio(tp, tp + fp, empty),
    }


def case_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: Sequence[ClassSpec],
    ignore_label: Optional[int] = None,
    empty: float = math.nan,
) -> dict[str, np.ndarray]:
    """The four metrics per class for one case: ``{metric: array (len(classes),)}``, plus ``"counts"``
    (the (K, 3) TP/FP/FN array they came from)."""
    counts = confusion_counts(prediction, reference, classes, ignore_label)
    result = metrics_from_counts(counts, empty)
    result["counts"] = counts
    return result


def nan_summary(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for a single value) and count of the non-NaN values;
    ``(nan, nan, 0)`` when there are none."""
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[~np.isnan(array)]
    if array.size == 0:
        return math.nan, math.nan, 0
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std, int(array.size)


@dataclass(frozen=True)
class WilcoxonOutcome:
    """Result of :func:`paired_wilcoxon`.

    Attributes:
        statistic: scipy's statistic (the smaller signed-rank sum for the two-sided test).
        p_value: two-sided p-value; 1.0 when every paired difference is 0; nan with no usable pair.
        n: number of pairs used (both values non-NaN).
        mean_difference: mean of ``a - b`` over those pairs.
    """

    statistic: float
    p_value: float
    n: int
    mean_difference: float


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> WilcoxonOutcome:
    """Two-sided Wilcoxon signed-rank test of paired values ``a`` vs ``b`` (same cases, same order).

    Pairs with a NaN on either side are dropped. Zero differences are dropped as in scipy's default
    (``zero_method="wilcox"``); when all differences are zero the test has nothing to rank and the
    result is statistic 0, p = 1.0 (no evidence of a difference) instead of scipy's warning.
    """
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples need the same length; got {x.size} and {y.size}")
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    n = int(x.size)
    if n == 0:
        return WilcoxonOutcome(math.nan, math.nan, 0, math.nan)
    difference = x - y
    mean_difference = float(difference.mean())
    if not np.any(difference != 0):
        return WilcoxonOutcome(0.0, 1.0, n, mean_difference)
    from scipy.stats import wilcoxon

    result = wilcoxon(x, y)
    return WilcoxonOutcome(float(result.statistic), float(result.pvalue), n, mean_difference)
