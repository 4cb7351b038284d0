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

**Surface metrics** (:func:`surface_metrics`, computed with MONAI), in millimetres on the voxel size of the
reference image (voxel units for formats without one). ``∂P`` and ``∂G`` are the boundary voxels of the
masks (the voxels that a binary erosion removes), ``d(x, S)`` the Euclidean distance from ``x`` to the
nearest voxel of ``S``:

- HD95 = max(95th percentile of ``d(x, ∂G)`` over ``x`` in ``∂P``, 95th percentile of ``d(y, ∂P)`` over
  ``y`` in ``∂G``), as ``monai.metrics.compute_hausdorff_distance(percentile=95)``;
- NSD at tolerance ``τ`` mm = (boundary voxels of ``∂P`` within ``τ`` of ``∂G`` + those of ``∂G`` within
  ``τ`` of ``∂P``) / (``|∂P| + |∂G|``), as ``monai.metrics.compute_surface_dice``.

Both come from one call of MONAI's ``get_edge_surface_distance`` per class (the two functions above
compute the same distances twice); the tests check equality with them. A class present in the reference
or the prediction only has NSD 0 and HD95 = the diagonal of the image in mm (the largest distance it
can hold; BraTS uses 373.13 mm, the diagonal of its 240 x 240 x 155 1-mm grid), or NaN on request. A class
absent from both is a 0/0 like the overlap metrics: NSD = ``empty``, HD95 = NaN with ``empty`` NaN and 0
otherwise (the BraTS and KiTS rule: an empty prediction of an empty class is perfect, Dice 1, NSD 1,
HD95 0). Ignored voxels (as above) are removed from the prediction's mask, as MONAI's ``ignore_index``
does.

:data:`CHALLENGES` holds the regions of KiTS19, KiTS21/23 and BraTS and the NSD tolerances KiTS21/23
evaluates with.

Paired tests: a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) per class and metric between
each method and a baseline, on the cases where both have a value, as in the paper (p < 0.05).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

__all__ = [
    "METRICS",
    "SURFACE_METRICS",
    "DEFAULT_NSD_TOLERANCE",
    "Challenge",
    "CHALLENGES",
    "challenge_of",
    "BRATS_ET_LABELS",
    "brats_et_label",
    "check_brats_labels",
    "default_tolerances",
    "surface_metrics_available",
    "require_surface_metrics",
    "surface_settings",
    "surface_metrics",
    "ClassSpec",
    "confusion_counts",
    "metrics_from_counts",
    "case_metrics",
    "nan_summary",
    "WilcoxonOutcome",
    "paired_wilcoxon",
]

METRICS = ("DSC", "IoU", "recall", "precision")
SURFACE_METRICS = ("HD95", "NSD")

# NSD tolerance (mm) of a class no challenge publishes one for.
DEFAULT_NSD_TOLERANCE = 1.0

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


def _pair(prediction, reference, classes) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]]]:
    """Both label maps as arrays of one shape, and each class's label values."""
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from reference shape {reference.shape}")
    members = [_members(spec) for spec in classes]
    if not members:
        raise ValueError("need at least one class")
    return prediction, reference, members


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
    prediction, reference, members = _pair(prediction, reference, classes)
    if prediction.size and prediction.min() < 0:
        raise ValueError(f"predicted label {prediction.min()} < 0")
    # Voxels outside the box of the evaluated labels count for no class: a CT volume shrinks to its organs.
    box = _class_box(prediction, reference, members)
    pred = prediction[box].ravel().astype(np.int64, copy=False)
    ref = reference[box].ravel().astype(np.int64, copy=False)
    keep = ref >= 0
    if ignore_label is not None:
        keep &= ref != ignore_label
    if not keep.all():
        pred, ref = pred[keep], ref[keep]
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


@dataclass(frozen=True)
class Challenge:
    """A challenge's evaluated regions (label values of its reference files) and their NSD tolerances (mm)."""

    title: str
    names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...]
    tolerances: tuple[float, ...]


_KITS23_TOLERANCES = (1.0330772532390826, 1.1328796488598762, 1.1498198361434828)  # kits23 HEC_SD_TOLERANCES_MM
_BRATS_NAMES = ("WT", "TC", "ET")
_NO_TOLERANCE = (DEFAULT_NSD_TOLERANCE,) * 3

CHALLENGES = {
    # Labels 1 kidney, 2 tumour; ranked by Dice only, so no published tolerance.
    "kits19": Challenge("KiTS19", ("kidney + tumour", "tumour"), ((1, 2), (2,)), _NO_TOLERANCE[:2]),
    # Labels 1 kidney, 2 tumour, 3 cyst; KiTS21 and KiTS23 share regions and tolerances.
    "kits23": Challenge("KiTS21/KiTS23", ("kidney + masses", "masses", "tumour"), ((1, 2, 3), (2, 3), (2,)),
                        _KITS23_TOLERANCES),
    # nnU-Net's Dataset137_BraTS21 relabelling: 1 edema, 2 necrosis / non-enhancing core, 3 enhancing.
    "brats-nnunet": Challenge("BraTS (nnU-Net labels)", _BRATS_NAMES, ((1, 2, 3), (2, 3), (3,)), _NO_TOLERANCE),
    # BraTS 2018-2021 files: 1 necrosis / non-enhancing core, 2 edema, 4 enhancing.
    "brats2021": Challenge("BraTS 2018-2021", _BRATS_NAMES, ((1, 2, 4), (1, 4), (4,)), _NO_TOLERANCE),
    # BraTS 2023 and later (glioma): 1 necrosis / non-enhancing core, 2 edema, 3 enhancing.
    "brats2023": Challenge("BraTS 2023", _BRATS_NAMES, ((1, 2, 3), (1, 3), (3,)), _NO_TOLERANCE),
}


def challenge_of(classes: Sequence[ClassSpec]) -> Optional[str]:
    """The key of :data:`CHALLENGES` whose regions are exactly ``classes`` (in any order), or None."""
    wanted = sorted(tuple(sorted(_members(spec))) for spec in classes)
    for key, challenge in CHALLENGES.items():
        if sorted(tuple(sorted(r)) for r in challenge.regions) == wanted:
            return key
    return None


# The enhancing-tumour label of the BraTS downloads: 4 in 2018-2021, 3 from 2023 on (the other labels are 1
# necrosis / non-enhancing core and 2 oedema in both); the key of CHALLENGES each value belongs to.
BRATS_ET_LABELS = {4: "brats2021", 3: "brats2023"}
_BRATS_OTHER_LABELS = (0, 1, 2)


def brats_et_label(values) -> Optional[int]:
    """The enhancing-tumour label of BraTS label maps holding the label ``values`` (the union over the files
    looked at): 4 (BraTS 2018-2021) or 3 (BraTS 2023+), None when neither occurs (cases without enhancing
    tumour cannot tell the conventions apart).

    Raises:
        ValueError: when both 3 and 4 occur, or a value outside {0, 1, 2, 3, 4}.
    """
    found = {int(v) for v in values}
    unknown = sorted(found - set(_BRATS_OTHER_LABELS) - set(BRATS_ET_LABELS))
    if unknown:
        raise ValueError(f"label values {unknown} are not BraTS labels (0, 1, 2 and 4 until 2021, 3 from 2023)")
    both = sorted(found & set(BRATS_ET_LABELS))
    if len(both) > 1:
        raise ValueError(f"both 3 and 4 occur: BraTS files have one enhancing-tumour label (4 until 2021, 3 from "
                         "2023), so these are not BraTS label maps")
    return both[0] if both else None


def check_brats_labels(values, et_label: int, where: str, setting: str) -> None:
    """Check that label maps holding ``values`` use enhancing-tumour label ``et_label``.

    An ET label that never occurs is accepted only when no other ET label does (some cases have no
    enhancing tumour); otherwise the error names ``where`` (the files), ``setting`` (the option to change)
    and the label the data uses, instead of an empty ET region scored as perfect.

    Raises:
        ValueError: a value that is not a BraTS label, or the other convention's ET label.
    """
    integer = isinstance(et_label, (int, np.integer)) and not isinstance(et_label, bool)
    if not integer or et_label not in BRATS_ET_LABELS:
        raise ValueError(f"{setting} must be 4 (BraTS 2018-2021) or 3 (BraTS 2023+); got {et_label!r}")
    try:
        found = brats_et_label(values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if found is not None and found != et_label:
        raise ValueError(
            f"{where}: the enhancing-tumour label {et_label} never occurs but {found} does: these are "
            f"{CHALLENGES[BRATS_ET_LABELS[found]].title} labels; set {setting} to {found}")


def default_tolerances(classes: Sequence[ClassSpec]) -> list[float]:
    """NSD tolerances (mm) per class: the challenge's when ``classes`` are its regions, else
    :data:`DEFAULT_NSD_TOLERANCE`."""
    key = challenge_of(classes)
    if key is None:
        return [DEFAULT_NSD_TOLERANCE] * len(classes)
    challenge = CHALLENGES[key]
    by_region = {tuple(sorted(r)): t for r, t in zip(challenge.regions, challenge.tolerances)}
    return [by_region[tuple(sorted(_members(spec)))] for spec in classes]


def surface_metrics_available() -> bool:
    """Whether MONAI, which computes the surface distances, is installed."""
    return importlib.util.find_spec("monai") is not None


def require_surface_metrics() -> None:
    """Raise ``ImportError`` with the installation hint when MONAI is missing."""
    if not surface_metrics_available():
        raise ImportError("HD95 and NSD need MONAI: pip install 'unifocal[monai]'")


def _check_number(name: str, value, minimum: float, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be finite and {relation} {minimum:g}; got {value!r}")
    return value


def _class_box(
    prediction: np.ndarray, reference: np.ndarray, members: Sequence[tuple[int, ...]], margin: int = 0
) -> tuple[slice, ...]:
    """Bounding box (one pass over the volume) of the voxels whose predicted or reference label belongs to
    any of the classes, ``margin`` voxels wider."""
    every = np.unique(np.concatenate([np.asarray(m) for m in members]))
    return _bounding_box(_in_labels(reference, every) | _in_labels(prediction, every), margin)


def _in_labels(array: np.ndarray, values) -> np.ndarray:
    """``np.isin(array, values)``; for a few values a chain of comparisons, some 30 times faster on a CT
    volume than np.isin's sort-based path."""
    if len(values) > 8:
        return np.isin(array, values)
    mask = array == values[0]
    for value in values[1:]:
        mask |= array == value
    return mask


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel, ``margin`` voxels wider (clipped to the array);
    an empty box when the mask is all False."""
    box = []
    for axis in range(mask.ndim):
        along = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if along.size == 0:
            return tuple(slice(0, 0) for _ in range(mask.ndim))
        box.append(slice(max(0, along[0] - margin), along[-1] + 1 + margin))
    return tuple(box)


def surface_settings(
    num_classes: int, tolerances: Union[float, Sequence[float]], one_empty: Union[str, float] = "diagonal"
) -> list[float]:
    """Check the NSD tolerances (one for all classes or one per class, finite, >= 0) and ``one_empty``
    (``"diagonal"`` or a number) of :func:`surface_metrics`; returns one tolerance per class."""
    if isinstance(tolerances, (list, tuple, np.ndarray)):
        tolerances = [_check_number("NSD tolerance", t, 0.0, strict=False) for t in tolerances]
        if len(tolerances) != num_classes:
            raise ValueError(f"{len(tolerances)} NSD tolerances for {num_classes} classes")
    else:
        tolerances = [_check_number("NSD tolerance", tolerances, 0.0, strict=False)] * num_classes
    if isinstance(one_empty, str):
        if one_empty != "diagonal":
            raise ValueError(f"one_empty must be 'diagonal' or a number; got {one_empty!r}")
    elif isinstance(one_empty, bool) or not isinstance(one_empty, (int, float)):
        raise TypeError(f"one_empty must be 'diagonal' or a number; got {one_empty!r}")
    return tolerances


def surface_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    classes: Sequence[ClassSpec],
    spacing: Optional[Sequence[float]] = None,
    tolerances: Union[float, Sequence[float]] = DEFAULT_NSD_TOLERANCE,
    ignore_label: Optional[int] = None,
    empty: float = math.nan,
    one_empty: Union[str, float] = "diagonal",
) -> dict[str, np.ndarray]:
    """HD95 and NSD per class for one case: ``{"HD95": array (K,), "NSD": array (K,)}``.

    Args:
        prediction, reference: label maps of the same shape; axes of length 1 are dropped (a 2D slice
            stored as a 3D volume is measured in 2D).
        classes: label values or regions, as in :func:`confusion_counts`.
        spacing: voxel size in mm per array axis (None: 1 per axis, distances in voxel units).
        tolerances: NSD tolerance in mm, one for all classes or one per class.
        ignore_label: reference value whose voxels (like negative reference values) are removed from the
            prediction's masks.
        empty: NSD of a class absent from both; HD95 there is NaN when ``empty`` is NaN, else 0.
        one_empty: HD95 of a class present in only one of them: ``"diagonal"`` (the image diagonal in mm)
            or a number (e.g. NaN to leave such cases out).

    Raises:
        ValueError / TypeError: on a shape mismatch, a bad spacing, tolerance or ``one_empty``.
        ImportError: without MONAI.
    """
    prediction, reference, members = _pair(prediction, reference, classes)
    spacing = (1.0,) * reference.ndim if spacing is None else tuple(spacing)
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {reference.ndim}D image")
    spacing = tuple(_check_number("spacing", v, 0.0, strict=True) for v in spacing)
    tolerances = surface_settings(len(members), tolerances, one_empty)
    require_surface_metrics()
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    # Axes of length 1 carry no surface: erosion across them would make every voxel a boundary voxel.
    axes = tuple(i for i, n in enumerate(reference.shape) if n > 1) or (0,)
    drop = tuple(i for i in range(reference.ndim) if i not in axes)
    prediction, reference = prediction.squeeze(drop), reference.squeeze(drop)
    spacing = tuple(spacing[i] for i in axes)
    diagonal = float(np.linalg.norm(np.multiply(reference.shape, spacing)))
    missing = diagonal if one_empty == "diagonal" else float(one_empty)
    # The box around every evaluated label in either map, one voxel wider so that the erosion sees the
    # background around a mask: distances do not change (every mask voxel is inside), and the per-class
    # work runs on the box only (a few percent of a CT volume for a kidney).
    box = _class_box(prediction, reference, members, margin=1)
    prediction, reference = prediction[box], reference[box]
    counted = reference >= 0
    if ignore_label is not None:
        counted &= reference != ignore_label
    hd95 = np.empty(len(members))
    nsd = np.empty(len(members))
    for k, values in enumerate(members):
        in_pred = _in_labels(prediction, values) & counted
        in_ref = _in_labels(reference, values) & counted
        has_pred, has_ref = bool(in_pred.any()), bool(in_ref.any())
        if not (has_pred or has_ref):
            hd95[k], nsd[k] = (math.nan if math.isnan(empty) else 0.0), float(empty)
            continue
        if not (has_pred and has_ref):
            hd95[k], nsd[k] = missing, 0.0
            continue
        with warnings.catch_warnings():
            # MONAI passes its own deprecated argument internally (always_return_as_numpy, MONAI 1.5-1.6).
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
            _, (to_ref, to_pred), _ = get_edge_surface_distance(
                torch.from_numpy(in_pred), torch.from_numpy(in_ref), spacing=spacing, symmetric=True,
                warn_empty=False,
            )
        to_ref, to_pred = to_ref.double().numpy(), to_pred.double().numpy()
        # numpy's default percentile interpolation is torch.quantile's "linear", MONAI's choice, and has no
        # element limit (torch.quantile refuses inputs of more than 2^24 values).
        hd95[k] = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
        within = np.count_nonzero(to_ref <= tolerances[k]) + np.count_nonzero(to_pred <= tolerances[k])
        nsd[k] = within / (to_ref.size + to_pred.size)
    return {"HD95": hd95, "NSD": nsd}
