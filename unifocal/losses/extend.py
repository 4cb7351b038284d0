"""The building blocks for writing a loss of the family: everything a loss module imports, in one place.

A loss is a :class:`SegmentationLoss` subclass (or a :class:`RegionLoss` one, for a loss of the soft
confusion sums TP/FP/FN): its ``__init__`` takes explicit keyword-only hyperparameters, checks each once
(the ``check_*`` functions: a message naming the argument, values never coerced) and stores it as an
attribute; its ``compute(batch)`` writes the formula once, over the :class:`Prepared` record of the
validated input, and returns a :class:`BatchLoss`. Validation, preparation and the reduction happen in
``SegmentationLoss.forward``, the same for every loss. The guide, with a complete example: docs/losses.md,
"Writing a loss".

Under ``ddp=True`` a rank holds its share of a batch split over ``torch.distributed`` ranks. The blocks here
are correct under it by construction: every batch-level sum goes through :func:`batch_total` (directly, or
via :func:`confusion_sums`, ``RegionLoss.confusion`` and ``RegionLoss.batch_sums``), which all-reduces it
and sums the ranks' gradients in the backward; the means (:func:`class_mean`, :func:`voxel_mean`,
:func:`counted_mean`) divide by the global counts. A loss built from them needs no collective of its own;
one that sums over the batch axis itself (``values.sum(0)``) would be wrong under DDP.

Blocks:

- the base classes and their hooks: :class:`SegmentationLoss` (``compute``), :class:`RegionLoss`
  (``classes``, ``confusion``, ``batch_sums``, ``per_class``, ``dice_distance``), :func:`functional` (the
  snake-case functional twin of a loss class);
- the input record: :class:`Prepared` (``scores``, ``prob``, ``log_prob``, ``target``, ``mask``,
  ``num_classes``, ``num_problems``, ...), made by :func:`prepare`;
- per-class statistics: :func:`class_statistics` (:class:`ClassStatistics`: predicted and actual volumes,
  true positives, focal cross entropy; one fused pass for label maps), :func:`confusion_sums`
  (:class:`ConfusionSums`), :func:`batch_total`, :func:`counted_voxels`;
- classes: :func:`region_classes`, :func:`selected_values`, :func:`class_roles`, :func:`role_weights`,
  :func:`per_class`;
- formulas and reductions: :func:`tversky_distance`, :func:`safe_pow`, :class:`BatchLoss`,
  :func:`class_mean`, :func:`voxel_mean`, :func:`counted_mean`, :func:`weighted_sum`;
- checks: :func:`check_bool`, :func:`check_number`, :func:`check_numbers`, :func:`check_unit_interval`,
  :func:`check_label`, :func:`check_classes`, :func:`check_smooth`.

A new loss lives in its own module of :mod:`unifocal.losses` and lists its public names in ``__all__``:
the package collects them (see :mod:`unifocal.losses`), so nothing else changes.
"""

from ._base import (
    SegmentationLoss,
    check_bool,
    check_classes,
    check_label,
    check_number,
    check_numbers,
    check_unit_interval,
    functional,
)
from ._inputs import Prepared, prepare
from ._stats import (
    BatchLoss,
    ClassStatistics,
    ConfusionSums,
    batch_total,
    class_mean,
    class_roles,
    class_statistics,
    confusion_sums,
    counted_mean,
    counted_voxels,
    per_class,
    region_classes,
    role_weights,
    safe_pow,
    selected_values,
    tversky_distance,
    voxel_mean,
    weighted_sum,
)
from .region import RegionLoss, check_smooth

__all__ = [
    "SegmentationLoss", "RegionLoss", "functional", "Prepared", "prepare", "ClassStatistics", "ConfusionSums",
    "BatchLoss", "class_statistics", "confusion_sums", "batch_total", "counted_voxels", "region_classes",
    "selected_values", "class_roles", "role_weights", "per_class", "tversky_distance", "safe_pow", "class_mean",
    "voxel_mean", "counted_mean", "weighted_sum", "check_bool", "check_number", "check_numbers",
    "check_unit_interval", "check_label", "check_classes", "check_smooth",
]
