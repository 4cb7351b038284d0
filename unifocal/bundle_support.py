"""Helpers that the MONAI bundles in ``unifocal/bundles`` name in their configs.

Settings checks that run before any data is read (:func:`check_setting_bool`, :func:`check_patch_size`,
:func:`check_deep_supervision`, :func:`check_loss`, :func:`check_et_label`, :func:`resume_checkpoint`), the
names of the written predictions (:class:`PredictionNames`), the challenge regions and their distance
metrics in each image's physical spacing (:func:`label_regions`, :func:`region_metrics`), nnU-Net's gradient
clipping for ignite trainers (:class:`GradientClipping`) and the PIL conversion of the 2D bundle
(:func:`convert_image`). MONAI and ignite are imported inside the functions:
``unifocal`` itself does not depend on them.
"""

from __future__ import annotations

import math
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from .validate import check_bool, check_number

__all__ = [
    "check_setting_bool",
    "check_patch_size",
    "check_deep_supervision",
    "check_loss",
    "check_et_label",
    "PredictionNames",
    "resume_checkpoint",
    "label_regions",
    "PhysicalSpacingMetric",
    "region_metrics",
    "GradientClipping",
    "InferenceWeights",
    "convert_image",
]

_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt")
_BOOL_FIX = ("Write True or False on the command line (a bare true is the string 'true'), true or false in a "
             "JSON file")


def check_setting_bool(setting: str, value: Any) -> bool:
    """:func:`unifocal.validate.check_bool` with the fix for a bundle setting: a string such as ``'false'``
    (python-fire's reading of ``--amp false``) or a number is an error naming ``setting``."""
    return check_bool(setting, value, _BOOL_FIX)


def check_patch_size(patch_size: Any, divisor: Any, setting: str = "patch_size") -> None:
    """Every side of ``patch_size`` must be a positive multiple of the network's downsampling factor along its
    axis (``divisor``: one number, or one per axis, the product of the strides), or the decoder's skip
    connections do not match ("Sizes of tensors must match") once the data is loaded."""
    divisors = [int(d) for d in (divisor if isinstance(divisor, Sequence) else [divisor])]
    if isinstance(patch_size, (str, bytes)) or not isinstance(patch_size, Sequence) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in patch_size):
        raise ValueError(f"{setting} must be a list of positive integers; got {patch_size!r}")
    if len(divisors) == 1:
        divisors = divisors * len(patch_size)
    if len(divisors) != len(patch_size):
        raise ValueError(f"{setting} {list(patch_size)} has {len(patch_size)} sides; the network is "
                         f"{len(divisors)}-dimensional")
    if any(v % d for v, d in zip(patch_size, divisors)):
        fitting = [-(-v // d) * d for v, d in zip(patch_size, divisors)]  # the next multiples up
        raise ValueError(f"{setting} {list(patch_size)} does not fit the network, which downsamples the sides by "
                         f"{divisors}: use multiples of these, e.g. {fitting}")


def check_deep_supervision(weights: Any, num_outputs: int, setting: str = "ds_weights") -> None:
    """The deep-supervision weights ``weights`` (a scheme name or one weight per output) against the network's
    ``num_outputs`` outputs (``deep_supr_num + 1`` for DynUNet)."""
    from .losses import deep_supervision_weights

    try:
        deep_supervision_weights(num_outputs, weights)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{setting}: {error}; give a scheme name ('nnunet', 'exp', 'uniform') or one weight per "
                         f"output ({num_outputs}: deep_supr_num + 1)") from None


def check_loss(loss: torch.nn.Module, num_channels: int, spatial_dims: int, device: Any = "cpu",
               regions: Optional[bool] = None) -> None:
    """Run ``loss`` once on a tiny all-zero input with ``num_channels`` channels, so that settings that do not
    fit the network (a ``gamma`` or class list of the wrong length, a rare class the output lacks) fail here,
    with the loss's own message naming the setting, instead of at the first iteration after caching the data.
    ``device`` is the training device: a loss that all-reduces across ranks (NCCL) needs its tensors there;
    under torchrun every rank runs this check at the same point. ``regions`` is what the bundle's targets are:
    overlapping regions (True: the loss must be ``multilabel``) or label maps (False: it must not be).
    """
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"the number of output channels must be a positive integer, got {num_channels!r}")
    shape = (1, num_channels) + (2,) * spatial_dims
    multilabel = getattr(loss, "options", {}).get("multilabel", False)
    if regions is not None and multilabel is not regions:
        targets = "overlapping regions, one sigmoid channel each" if regions else "label maps, one softmax over classes"
        raise ValueError(f"loss#multilabel is {multilabel!r}, but this bundle's targets are {targets}: set "
                         f"loss#multilabel to {regions}")
    target = torch.zeros(shape if multilabel else (1, 1) + shape[2:], device=device)
    try:
        loss(torch.zeros(shape, device=device), target)
    except (ValueError, TypeError) as error:
        raise ValueError(f"loss settings do not fit the network's {num_channels} output channels: {error}") from error


def resume_checkpoint(checkpoint_dir: str, resume: bool) -> str:
    """The periodic checkpoint to resume from: ``""`` when ``resume`` is False, else the
    ``checkpoint_epoch=N.pt`` in ``checkpoint_dir`` with the highest N that is a whole file.

    MONAI's CheckpointSaver writes in place (not atomically), so a run killed while saving leaves a truncated
    newest file (a torch checkpoint is a zip archive; a cut one has no central directory): it is skipped with
    a warning and the one before it is used.

    ``resume`` must be a real bool (:func:`check_setting_bool`).
    """
    if not check_setting_bool("resume", resume):
        return ""
    folder = Path(checkpoint_dir)
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint_epoch=*.pt") if (m := _CHECKPOINT.fullmatch(p.name))]
    if not found:
        raise FileNotFoundError(f"resume=True but {folder} holds no checkpoint_epoch=N.pt to resume from")
    for _, path in sorted(found, reverse=True):
        if zipfile.is_zipfile(path):
            return str(path)
        warnings.warn(f"{path} is incomplete (the run was stopped while saving it); resuming from an earlier one")
    raise FileNotFoundError(f"resume=True but every checkpoint_epoch=N.pt in {folder} is incomplete")


def check_et_label(et_label: Any, datalist: Sequence[Mapping], num_files: int = 3) -> None:
    """The BraTS enhancing-tumour label ``et_label`` against the label values of the first ``num_files`` labels
    of ``datalist`` (4 until 2021, 3 from 2023): a label the data does not use would train and score an empty
    ET region (:func:`unifocal.metrics.check_brats_labels`)."""
    import numpy as np

    from .io import read_label
    from .metrics import check_brats_labels

    paths = [item["label"] for item in list(datalist)[:num_files]]
    values = set()
    for path in paths:
        values.update(np.unique(read_label(path)).tolist())
    where = ", ".join(str(Path(p).name) for p in paths)
    check_brats_labels(sorted(values), et_label, where or "the data list", "et_label")


class PredictionNames:
    """``output_name_formatter`` of a bundle's ``SaveImaged``: each prediction is named after its case
    (:func:`unifocal.datalist.case_name`: the case folder of a KiTS or BraTS download, else the image's file
    name), so no two cases write one file, and an existing file is replaced only with ``overwrite``
    (the bundles' ``overwrite_predictions``).

    :meth:`check` runs in ``initialize``, before any image is read: it refuses a data list in which two images
    name one case and predictions that already exist; saving checks again (a file that appeared meanwhile).
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = check_setting_bool("overwrite_predictions", overwrite)

    @staticmethod
    def _image(item: Any) -> str:
        image = item["image"] if isinstance(item, Mapping) else item
        return str(image[0] if isinstance(image, (list, tuple)) else image)

    def _path(self, image: str, saver: Any) -> tuple[str, str]:
        from .datalist import case_name

        case = case_name(image)
        layout = getattr(saver, "saver", saver).folder_layout  # SaveImaged holds a SaveImage
        return case, layout.filename(subject=case)

    def _refuse_existing(self, path: str) -> None:
        if not self.overwrite and Path(path).exists():
            raise FileExistsError(f"{path} exists: move it away, set output_dir to another folder, or set "
                                  "overwrite_predictions to True to replace it")

    def check(self, datalist: Sequence[Any], saver: Any) -> None:
        """Refuse, before any image is read, two images of one case and predictions that exist already; a
        disabled ``saver`` (None) writes nothing."""
        if saver is None:
            return
        seen: dict[str, str] = {}
        for item in datalist:
            image = self._image(item)
            case, path = self._path(image, saver)
            if path in seen:
                raise ValueError(f"{seen[path]} and {image} are both case {case}: their predictions would be one "
                                 f"file, {path}; list each case once")
            seen[path] = image
            self._refuse_existing(path)

    def __call__(self, metadict: Mapping, saver: Any) -> dict:
        case, path = self._path(metadict["filename_or_obj"], saver)
        self._refuse_existing(path)
        return {"subject": case, "idx": None}


def label_regions(label_map: torch.Tensor, regions: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """Channel-first 0/1 region masks ``(R, *S)`` from a label map ``(1, *S)``: region r is the union of its
    labels, e.g. KiTS19 ``{"kidney_and_tumor": [1, 2], "tumor": [2]}``. Keeps a MetaTensor's geometry."""
    if label_map.shape[0] != 1:
        raise ValueError(f"label_regions expects a (1, *spatial) label map, got shape {tuple(label_map.shape)}")
    if not regions:
        raise ValueError("regions is empty: name at least one region and its labels")
    plain = label_map.as_tensor()[0] if hasattr(label_map, "as_tensor") else label_map[0]
    masks = []
    for name, labels in regions.items():
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not labels or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise ValueError(f"region {name!r} must list its integer labels, got {labels!r}")
        masks.append(torch.isin(plain, torch.as_tensor(list(labels), dtype=plain.dtype, device=plain.device)))
    stacked = torch.stack(masks).to(torch.float32)
    if hasattr(label_map, "meta"):  # a MetaTensor: keep its affine (the distance metrics read the spacing)
        return type(label_map)(stacked, meta=label_map.meta, applied_operations=label_map.applied_operations)
    return stacked


class RegionCaseMetric:
    """One metric of one region channel, per case, with :func:`unifocal.metrics.mask_metrics`: the definitions
    and rules of ``unifocal compare`` (``challenge``'s, a key of :data:`unifocal.metrics.CHALLENGES`, or the
    defaults), in each case's physical spacing (``MetaTensor.pixdim``, mm). The ``metric_fn`` of a MONAI
    ``IgniteMetricHandler``: ``aggregate()`` is the mean over the cases that have a value (a 0/0 that the rules
    leave NaN is left out, as ``compare``'s means do)."""

    def __init__(self, metric: str, channel: int, challenge: Optional[str], tolerance: float) -> None:
        self.metric, self.channel, self.challenge, self.tolerance = metric, channel, challenge, tolerance
        self.values: list[float] = []

    def __call__(self, y_pred: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> None:
        from .metrics import mask_metrics

        for pred, label in zip(y_pred, y):
            if not hasattr(label, "pixdim"):
                raise TypeError("RegionCaseMetric needs MetaTensor labels that carry their affine")
            spacing = [float(s) for s in label.pixdim[: label.ndim - 1]]  # 2D images carry a 3D affine
            result = mask_metrics(_numpy(pred[self.channel]), _numpy(label[self.channel]), self.challenge,
                                  self.tolerance, spacing, surface=self.metric != "DSC", lesions=False)
            self.values.append(float(result[self.metric][0]))

    def reset(self) -> None:
        self.values = []

    def aggregate(self) -> torch.Tensor:
        values = torch.tensor(self.values, dtype=torch.float64)
        return values[~values.isnan()].mean() if values.numel() else torch.tensor(math.nan)

    def get_buffer(self) -> torch.Tensor:
        return torch.tensor(self.values, dtype=torch.float64)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    plain = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
    return plain.detach().cpu().numpy()


def region_metrics(regions: Mapping[str, Sequence[int]], nsd_tolerance_mm: Any = None, prefix: str = "val") -> dict:
    """MONAI metric handlers for every region channel: ``{prefix}_{name}_dice``, ``{prefix}_{name}_hd95``
    (95th percentile Hausdorff distance, mm) and ``{prefix}_{name}_nsd`` (normalised surface Dice), the numbers
    ``unifocal compare`` gives (:class:`RegionCaseMetric`): under the rules of the challenge whose regions are
    ``regions`` (``{name: label values}``, channel i is region i; KiTS21/23: area-weighted surface Dice at the
    published tolerances, an empty region scored 1), else the defaults. ``nsd_tolerance_mm`` (one number or
    one per region) replaces the tolerances; None keeps the challenge's (:func:`unifocal.metrics.default_tolerances`)."""
    from monai.handlers import IgniteMetricHandler

    from .metrics import challenge_of, default_tolerances

    names = list(regions)
    labels = [list(v) for v in regions.values()]
    if nsd_tolerance_mm is None:
        tolerances = default_tolerances(labels)
    elif isinstance(nsd_tolerance_mm, (list, tuple)):
        tolerances = list(nsd_tolerance_mm)
    else:
        tolerances = [nsd_tolerance_mm] * len(names)
    if len(tolerances) != len(names):
        raise ValueError(f"nsd_tolerance_mm must be a positive number of millimetres or one per region "
                         f"({len(names)}), got {nsd_tolerance_mm!r}")
    tolerances = [check_number("nsd_tolerance_mm", t, 0.0, low_open=True) for t in tolerances]
    challenge = challenge_of(labels)
    metrics = {}
    for index, (name, tolerance) in enumerate(zip(names, tolerances)):
        for metric, suffix in (("DSC", "dice"), ("HD95", "hd95"), ("NSD", "nsd")):
            metrics[f"{prefix}_{name}_{suffix}"] = IgniteMetricHandler(
                RegionCaseMetric(metric, index, challenge, tolerance), output_transform=_predictions_and_labels)
    return metrics


def _predictions_and_labels(output: Sequence[Mapping]) -> tuple[list, list]:
    return [d["pred"] for d in output], [d["label"] for d in output]


class GradientClipping:
    """Clips the gradient norm of a MONAI ``SupervisedTrainer``'s network after each backward pass, before the
    optimiser step, as nnU-Net does (``clip_grad_norm_(..., 12)``); under AMP the gradients are unscaled first."""

    def __init__(self, max_norm: float) -> None:
        self.max_norm = check_number("max_norm", max_norm, 0.0, low_open=True)

    def attach(self, engine: Any) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.max_norm)


class InferenceWeights:
    """What a best-model or final-model checkpoint saves of a network: its weights without the deep-supervision
    heads of MONAI's DynUNet (``deep_supervision_heads.*`` and the same modules again as ``*.super_head.*``),
    which only the training loss uses. The file then loads strictly into the inference network
    (``deep_supervision=False``, which TorchScript can script) and into ``ckpt_export``. A DDP wrapper is
    unwrapped. Periodic checkpoints keep the heads: they resume training."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network

    def state_dict(self) -> dict:
        network = getattr(self.network, "module", self.network)  # DistributedDataParallel
        return {k: v for k, v in network.state_dict().items()
                if not (k.startswith("deep_supervision_heads.") or ".super_head." in k)}


_HIGH_BIT_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def convert_image(image: Any, mode: str) -> Any:
    """Convert a PIL image to the bundle's ``image_mode``. Greyscale (``"L"``) keeps the values of 16-bit and
    32-bit images (converted to float, ``"F"``) instead of clipping them to 8 bits as PIL's ``convert("L")``
    does; z-scoring follows in the bundle, so the range does not matter."""
    if mode == "L" and image.mode in _HIGH_BIT_DEPTH:
        return image.convert("F") if image.mode in ("I", "F") else image.convert("I").convert("F")
    return image.convert(mode)
