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
compute the same distances twice); the tests check equality with them. With ``nsd_surface="area"`` NSD weights
each surface element by its area instead of counting boundary voxels (``compute_surface_dice(use_subvoxels=True)``,
DeepMind's ``surface-distance``, the surface Dice KiTS21/23 rank by). A class present in the reference
or the prediction only has NSD 0 and HD95 = the diagonal of the image in mm (the largest distance it
can hold; BraTS uses 373.13 mm, the diagonal of its 240 x 240 x 155 1-mm grid), or NaN on request. A class
absent from both is a 0/0 like the overlap metrics: NSD = ``empty``, HD95 = NaN with ``empty`` NaN and 0
otherwise (the BraTS and KiTS rule: an empty prediction of an empty class is perfect, Dice 1, NSD 1,
HD95 0). Ignored voxels (as above) are removed from the prediction's mask, as MONAI's ``ignore_index``
does.

:data:`CHALLENGES` holds the regions of KiTS19, KiTS21/23 and BraTS with each challenge's tolerances and
rules; :func:`challenge_metrics` scores one case under them, as the challenges' official evaluation code does
(the tests hold that code's numbers), with BraTS's lesion-wise metrics from panoptica (:func:`lesion_metrics`).

Paired tests: a two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) per class and metric between
each method and a baseline, on the cases where both have a value, as in the paper (p < 0.05).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from .validate import check_number

__all__ = [
    "METRICS",
    "SURFACE_METRICS",
    "NSD_SURFACES",
    "BRATS_MISSING_HD95",
    "DEFAULT_NSD_TOLERANCE",
    "Challenge",
    "CHALLENGES",
    "challenge_of",
    "mask_metrics",
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
    "LESION_METRICS",
    "lesion_metrics_available",
    "require_lesion_metrics",
    "lesion_metrics",
    "challenge_metrics",
]

METRICS = ("DSC", "IoU", "recall", "precision")
SURFACE_METRICS = ("HD95", "NSD")
NSD_SURFACES = ("voxels", "area")

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
    """A challenge's evaluated regions (label values of its reference files) and how it scores them.

    Attributes:
        title: the challenge's name.
        names / regions: the evaluated regions and their label values.
        tolerances: NSD tolerance (mm) per region.
        empty: value of a ``0/0`` (e.g. DSC and NSD of a region absent from both files) under the challenge's
            rule; NaN where the official code gives NaN.
        nsd_surface: ``"area"``: the surface Dice of DeepMind's ``surface-distance`` (surface elements weighted
            by their area, the KiTS21/23 measure); ``"voxels"``: boundary voxels counted (MONAI's default).
        hd95_one_empty: HD95 of a region in only one of the two files (``"diagonal"`` or a number).
        lesion_wise: whether the challenge ranks by lesion-wise metrics (:func:`lesion_metrics`).
    """

    title: str
    names: tuple[str, ...]
    regions: tuple[tuple[int, ...], ...]
    tolerances: tuple[float, ...]
    empty: float = math.nan
    nsd_surface: str = "voxels"
    hd95_one_empty: Union[str, float] = "diagonal"
    lesion_wise: bool = False


_KITS23_TOLERANCES = (1.0330772532390826, 1.1328796488598762, 1.1498198361434828)  # kits23 HEC_SD_TOLERANCES_MM
_BRATS_NAMES = ("WT", "TC", "ET")
_NO_TOLERANCE = (DEFAULT_NSD_TOLERANCE,) * 3
# The official BraTS evaluation's HD95 of a missing side: "the diameter of the cube in SRI space" (373 mm;
# the exact diagonal of the 240 x 240 x 155 1-mm grid is 373.13).
BRATS_MISSING_HD95 = 373.0
_BRATS = dict(hd95_one_empty=BRATS_MISSING_HD95, lesion_wise=True)

CHALLENGES = {
    # Labels 1 kidney, 2 tumour; ranked by Dice only (numpy's 0/0 is NaN in the official code), no tolerance.
    "kits19": Challenge("KiTS19", ("kidney + tumour", "tumour"), ((1, 2), (2,)), _NO_TOLERANCE[:2]),
    # Labels 1 kidney, 2 tumour, 3 cyst; KiTS21 and KiTS23 share regions, tolerances and rules: a region absent
    # from both files scores Dice 1 and surface Dice 1.
    "kits23": Challenge("KiTS21/KiTS23", ("kidney + masses", "masses", "tumour"), ((1, 2, 3), (2, 3), (2,)),
                        _KITS23_TOLERANCES, empty=1.0, nsd_surface="area"),
    # nnU-Net's Dataset137_BraTS21 relabelling: 1 edema, 2 necrosis / non-enhancing core, 3 enhancing.
    "brats-nnunet": Challenge("BraTS (nnU-Net labels)", _BRATS_NAMES, ((1, 2, 3), (2, 3), (3,)), _NO_TOLERANCE,
                              **_BRATS),
    # BraTS 2018-2021 files: 1 necrosis / non-enhancing core, 2 edema, 4 enhancing.
    "brats2021": Challenge("BraTS 2018-2021", _BRATS_NAMES, ((1, 2, 4), (1, 4), (4,)), _NO_TOLERANCE, **_BRATS),
    # BraTS 2023 and later (glioma): 1 necrosis / non-enhancing core, 2 edema, 3 enhancing.
    "brats2023": Challenge("BraTS 2023", _BRATS_NAMES, ((1, 2, 3), (1, 3), (3,)), _NO_TOLERANCE, **_BRATS),
    # BraTS 2024/2025 glioma (post-treatment; the official package's GLI): 1 non-enhancing tumour core,
    # 2 surrounding FLAIR hyperintensity, 3 enhancing tissue, 4 resection cavity.
    "brats-gli": Challenge("BraTS 2024/2025 GLI", ("ET", "NETC", "SNFH", "RC", "TC", "WT"),
                           ((3,), (1,), (2,), (4,), (1, 3), (1, 2, 3)), (DEFAULT_NSD_TOLERANCE,) * 6, **_BRATS),
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
        tolerances = [check_number("NSD tolerance", t, 0.0) for t in tolerances]
        if len(tolerances) != num_classes:
            raise ValueError(f"{len(tolerances)} NSD tolerances for {num_classes} classes")
    else:
        tolerances = [check_number("NSD tolerance", tolerances, 0.0)] * num_classes
    if isinstance(one_empty, str):
        if one_empty != "diagonal":
            raise ValueError(f"one_empty must be 'diagonal' or a number; got {one_empty!r}")
    elif isinstance(one_empty, bool) or not isinstance(one_empty, (int, float)):
        raise ValueError(f"one_empty must be 'diagonal' or a number; got {one_empty!r}")
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
    nsd_surface: str = "voxels",
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
        nsd_surface: ``"voxels"`` (boundary voxels counted, MONAI's default) or ``"area"`` (surface elements
            weighted by their area, DeepMind's ``surface-distance`` and KiTS's surface Dice; MONAI's
            ``use_subvoxels``).

    Raises:
        ValueError: on a shape mismatch, a bad spacing, tolerance or ``one_empty``.
        ImportError: without MONAI.
    """
    prediction, reference, members = _pair(prediction, reference, classes)
    spacing = (1.0,) * reference.ndim if spacing is None else tuple(spacing)
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {reference.ndim}D image")
    spacing = tuple(check_number("spacing", v, 0.0, low_open=True) for v in spacing)
    tolerances = surface_settings(len(members), tolerances, one_empty)
    if nsd_surface not in NSD_SURFACES:
        raise ValueError(f"nsd_surface must be one of {NSD_SURFACES}; got {nsd_surface!r}")
    require_surface_metrics()

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
        to_ref, to_pred, _ = _edge_distances(in_pred, in_ref, spacing, subvoxels=False)
        # numpy's default percentile interpolation is torch.quantile's "linear", MONAI's choice, and has no
        # element limit (torch.quantile refuses inputs of more than 2^24 values).
        hd95[k] = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
        if nsd_surface == "area":
            # The surface elements lie between voxels (a finer grid than the boundary voxels of the HD95).
            to_ref, to_pred, (area_pred, area_ref) = _edge_distances(in_pred, in_ref, spacing, subvoxels=True)
            within = area_pred[to_ref <= tolerances[k]].sum() + area_ref[to_pred <= tolerances[k]].sum()
            nsd[k] = within / (area_pred.sum() + area_ref.sum())
        else:
            within = np.count_nonzero(to_ref <= tolerances[k]) + np.count_nonzero(to_pred <= tolerances[k])
            nsd[k] = within / (to_ref.size + to_pred.size)
    return {"HD95": hd95, "NSD": nsd}


def _edge_distances(in_pred: np.ndarray, in_ref: np.ndarray, spacing, subvoxels: bool):
    """MONAI's distances from the prediction's edges to the reference's and back (float64), and with
    ``subvoxels`` the areas of the two surfaces' elements (in the distances' order)."""
    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():
        # MONAI passes its own deprecated argument internally (always_return_as_numpy, MONAI 1.5-1.6).
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        (edges_pred, edges_ref), (to_ref, to_pred), areas = get_edge_surface_distance(
            torch.from_numpy(in_pred), torch.from_numpy(in_ref), spacing=spacing, symmetric=True,
            use_subvoxels=subvoxels, warn_empty=False,
        )
    to_ref, to_pred = to_ref.double().numpy(), to_pred.double().numpy()
    if not subvoxels:
        return to_ref, to_pred, None
    area_pred, area_ref = (a.double().numpy() for a in areas)
    return to_ref, to_pred, (area_pred[edges_pred.numpy()], area_ref[edges_ref.numpy()])


LESION_METRICS = ("lesion DSC", "lesion NSD", "lesion HD95", "lesion F1")


def lesion_metrics_available() -> bool:
    """Whether panoptica, which computes the lesion-wise metrics, is installed."""
    return importlib.util.find_spec("panoptica") is not None


def require_lesion_metrics() -> None:
    """Raise ``ImportError`` with the installation hint when panoptica is missing."""
    if not lesion_metrics_available():
        raise ImportError("lesion-wise metrics need panoptica: pip install 'unifocal[metrics]'")


@functools.lru_cache(maxsize=8)
def _lesion_evaluator(regions: tuple[tuple[int, ...], ...]):
    """panoptica's evaluator with the settings of the official BraTS 2024/2025 evaluation (its GLI
    configuration): lesions are the connected components of each region, matched one to one by the largest
    total Dice (any overlap counts), scored by DSC, NSD and HD95; an unmatched lesion's metrics are 0, 0, inf."""
    # panoptica greets on import and warns that regions share labels (as WT, TC and ET do by design).
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _panoptica_evaluator(regions)


def _panoptica_evaluator(regions: tuple[tuple[int, ...], ...]):
    from panoptica import ConnectedComponentsInstanceApproximator, InputType, MaxBipartiteMatching, Metric
    from panoptica import Panoptica_Evaluator
    from panoptica.utils import EdgeCaseHandler, EdgeCaseResult, SegmentationClassGroups
    from panoptica.utils.edge_case_handling import MetricZeroTPEdgeCaseHandling
    from panoptica.utils.label_group import LabelGroup, LabelMergeGroup

    def zero_tp(result):
        return MetricZeroTPEdgeCaseHandling(empty_prediction_result=result, empty_reference_result=result,
                                            no_instances_result=EdgeCaseResult.NAN, normal=result)

    groups = {f"r{index}": (LabelMergeGroup if len(values) > 1 else LabelGroup)(list(values), single_instance=False)
              for index, values in enumerate(regions)}
    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=MaxBipartiteMatching(matching_metric=Metric.DSC, matching_threshold=1e-6),
        edge_case_handler=EdgeCaseHandler(
            {Metric.DSC: zero_tp(EdgeCaseResult.ZERO), Metric.NSD: zero_tp(EdgeCaseResult.ZERO),
             Metric.HD95: zero_tp(EdgeCaseResult.INF)}, empty_list_std=EdgeCaseResult.NAN),
        segmentation_class_groups=SegmentationClassGroups(groups),
        instance_metrics=[Metric.DSC, Metric.NSD, Metric.HD95],
        global_metrics=[Metric.DSC],
    )


def _lesion_means(result: dict) -> tuple[float, float, float, float]:
    """DSC, NSD, HD95 means over a region's lesions and the detection F1, from panoptica's result of one
    region: every reference lesion counts (unmatched: DSC 0, NSD 0, HD95 :data:`BRATS_MISSING_HD95`), and so
    does every unmatched predicted lesion (the same values); NaN when the reference holds no lesion. These are
    the official package's ``lesionwise_*_mean`` (its lesion-wise report, with no lesion below a size
    threshold) and ``all_instance_f1`` (panoptica's recognition quality)."""
    f1 = float(result["rq"]) if result.get("rq") is not None else math.nan
    if not result.get("n_ref_instances"):
        return math.nan, math.nan, math.nan, f1
    dsc, nsd, hd95 = [], [], []
    for lesion in result["reference_instances"]:
        matched = lesion.get("is_matched") == 1
        dsc.append(lesion["sq_dsc"] if matched else 0.0)
        nsd.append(lesion["sq_nsd"] if matched else 0.0)
        hd95.append(lesion["sq_hd95"] if matched else BRATS_MISSING_HD95)
    unmatched_predicted = int(result.get("fp") or 0)
    dsc += [0.0] * unmatched_predicted
    nsd += [0.0] * unmatched_predicted
    hd95 += [BRATS_MISSING_HD95] * unmatched_predicted
    finite = [v for v in hd95 if v is not None and not math.isinf(v)]
    return (float(np.mean(dsc)), float(np.mean(nsd)), float(np.mean(finite)) if finite else BRATS_MISSING_HD95,
            f1)


def lesion_metrics(prediction: np.ndarray, reference: np.ndarray,
                   classes: Sequence[ClassSpec]) -> dict[str, np.ndarray]:
    """Lesion-wise DSC, NSD, HD95 and detection F1 per class for one case, computed with panoptica as the
    official BraTS 2023-2025 evaluation does (see :func:`_lesion_means`); ``{metric: array (K,)}`` with the
    keys of :data:`LESION_METRICS`. Distances in voxel units and an NSD tolerance of 0.5 voxel, as panoptica
    uses them without a voxel size (the official evaluation gives none; BraTS images are 1 mm isotropic).

    Raises:
        ValueError: on a shape mismatch. ImportError: without panoptica.
    """
    prediction, reference, members = _pair(prediction, reference, classes)
    require_lesion_metrics()
    evaluator = _lesion_evaluator(tuple(members))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # panoptica warns that 0.5 voxel is its default NSD tolerance, and that regions share labels.
        warnings.simplefilter("ignore")
        results = evaluator.evaluate(np.ascontiguousarray(prediction), np.ascontiguousarray(reference),
                                     verbose=False)
    table = np.array([_lesion_means(results[f"r{k}"].to_dict(True)) for k in range(len(members))])
    return {name: table[:, column] for column, name in enumerate(LESION_METRICS)}


def challenge_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    challenge: str,
    spacing: Optional[Sequence[float]] = None,
    surface: bool = True,
    lesions: bool = True,
) -> dict[str, np.ndarray]:
    """Every metric ``unifocal compare --challenge`` reports for one case, with the challenge's regions,
    tolerances and rules (:data:`CHALLENGES`): DSC, IoU, recall, precision, with ``surface`` HD95 and NSD, with
    ``lesions`` and a lesion-wise challenge the :data:`LESION_METRICS`; ``{metric: array (regions,)}`` in the
    order of the challenge's regions. The one definition that ``compare`` and the bundles' validation share.

    Raises:
        KeyError: an unknown challenge. ValueError: as :func:`case_metrics` and :func:`surface_metrics`.
    """
    rules = CHALLENGES[challenge]
    return _under_rules(prediction, reference, rules.regions, rules, rules.tolerances, spacing, surface, lesions)


def _under_rules(prediction, reference, classes, rules: Challenge, tolerances, spacing, surface, lesions) -> dict:
    result = case_metrics(prediction, reference, classes, empty=rules.empty)
    del result["counts"]
    if surface:
        result.update(surface_metrics(prediction, reference, classes, spacing, tolerances, empty=rules.empty,
                                      one_empty=rules.hd95_one_empty, nsd_surface=rules.nsd_surface))
    if lesions and rules.lesion_wise:
        result.update(lesion_metrics(prediction, reference, classes))
    return result


# The rules of a region no challenge defines: 0/0 is NaN, boundary voxels counted, HD95 of a missing side the
# image diagonal (compare's defaults).
_NO_CHALLENGE = Challenge("", (), (), ())


def mask_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    challenge: Optional[str],
    tolerance: float,
    spacing: Optional[Sequence[float]] = None,
    surface: bool = True,
    lesions: bool = True,
) -> dict[str, np.ndarray]:
    """The metrics of one region given as two masks (nonzero = inside), under ``challenge``'s rules (a key of
    :data:`CHALLENGES`, or None for the defaults of a region no challenge defines) at NSD ``tolerance`` mm:
    ``{metric: array (1,)}``. The bundles' validation metrics call it per case and region, so that they are
    :func:`challenge_metrics`' numbers."""
    rules = _NO_CHALLENGE if challenge is None else CHALLENGES[challenge]
    prediction = np.asarray(np.asarray(prediction) != 0, np.uint8)
    reference = np.asarray(np.asarray(reference) != 0, np.uint8)
    return _under_rules(prediction, reference, [1], rules, tolerance, spacing, surface, lesions)
