"""Time of one nnU-Net training iteration (``nnUNetTrainer.train_step``) with nnU-Net's default trainer and
with ``UnifiedFocalTrainer``, on the same plans.

The plans are written here the way nnU-Net's default ``ExperimentPlanner`` would write them for a
one-channel dataset with isotropic 1 mm spacing: ``PlainConvUNet``, pooling and kernel sizes from
nnU-Net's own ``get_pool_and_conv_props`` (feature maps down to 4 voxels), 32 base features doubling
per stage up to 320 (3D) or 512 (2D), two convolutions per stage, instance norm, leaky ReLU, deep
supervision. Each trainer is constructed by hand (plans, configuration, fold, dataset_json, device) and
``initialize()``d as ``nnUNetv2_train`` does it (network, optimizer, loss). The preprocessed-data folder
only holds a placeholder file, because no data is loaded: each iteration gets a random batch of the
plan's patch and batch size, with int16 label maps at every deep-supervision scale (nearest-neighbour,
as nnU-Net's ``DownsampleSegForDSTransform``). Data loading and augmentation, identical for both trainers,
are left out, which makes the comparison stricter (the loss is a larger share of what is timed).

Region-based datasets (KiTS23, BraTS) declare regions in dataset.json; the batch then holds bool (B, R, *S)
region masks, as nnU-Net's ``ConvertSegmentationToRegionsTransform`` produces them.

Both networks start from the same seed; the trainers alternate iteration by iteration. A row reports the
median and interquartile range of ``train_step`` (forward, loss, backward, gradient clipping, SGD step),
and the median of the per-iteration ratios to nnUNetTrainer in wall and process CPU time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["make_plans", "CONFIGURATIONS", "QUICK_CONFIGURATIONS", "run"]

# (name, patch size, batch size, labels, regions): one 3D and one 2D configuration in the spirit of the loss
# shapes, with patches small enough for a CPU run (a 3D iteration at 64^3 takes ~15 s on one core); smaller
# patches make the loss a larger share of the iteration, so the ratio is if anything pessimistic. With
# ``regions`` the dataset declares three nested regions over labels 1-3 as BraTS does (REGIONS), and the
# trainers train on sigmoid channels (nnU-Net: DC_and_BCE_loss; unifocal: multilabel=True).
CONFIGURATIONS = (
    ("3d_fullres", (48, 48, 48), 2, 3, False),
    ("2d", (128, 128), 12, 2, False),
    ("3d_fullres", (48, 48, 48), 2, 4, True),
    ("2d", (128, 128), 12, 4, True),
)
QUICK_CONFIGURATIONS = (("2d", (48, 48), 2, 3, False), ("2d", (48, 48), 2, 4, True))

# Region name -> labels, in the dataset.json form of BraTS (whole tumour, tumour core, enhancing tumour).
REGIONS = {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}

_UNIFOCAL_ENV = ("UNIFOCAL_CONFIG", "UNIFOCAL_WEIGHT", "UNIFOCAL_DELTA", "UNIFOCAL_GAMMA", "UNIFOCAL_RARE_CLASSES",
                 "UNIFOCAL_DS_WEIGHTS", "UNIFOCAL_NUM_EPOCHS", "UNIFOCAL_ITERATIONS_PER_EPOCH",
                 "UNIFOCAL_VAL_ITERATIONS")


def make_plans(configuration: str, patch_size: Sequence[int], batch_size: int) -> dict:
    """An nnU-Net v2 plans dict with one configuration, laid out as the default ExperimentPlanner does."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    dims = len(patch_size)
    spacing = [1.0] * dims
    _, pool_sizes, kernel_sizes, patch, _ = get_pool_and_conv_props(spacing, list(patch_size), 4, 999999)
    stages = len(pool_sizes)
    max_features = 320 if dims == 3 else 512
    conv = "torch.nn.modules.conv.Conv3d" if dims == 3 else "torch.nn.modules.conv.Conv2d"
    norm = "torch.nn.modules.instancenorm.InstanceNorm3d" if dims == 3 else "torch.nn.modules.instancenorm.InstanceNorm2d"
    config = {
        "data_identifier": f"nnUNetPlans_{configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size,
        "patch_size": [int(p) for p in patch],
        "median_image_size_in_voxels": [float(p) for p in patch],
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": stages,
                "features_per_stage": [min(max_features, 32 * 2**i) for i in range(stages)],
                "conv_op": conv,
                "kernel_sizes": [list(k) for k in kernel_sizes],
                "strides": [list(s) for s in pool_sizes],
                "n_conv_per_stage": [2] * stages,
                "n_conv_per_stage_decoder": [2] * (stages - 1),
                "conv_bias": True,
                "norm_op": norm,
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": dims == 2,
    }
    return {
        "dataset_name": "Dataset991_UnifocalBenchmark",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [int(p) for p in patch],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(range(dims)),
        "transpose_backward": list(range(dims)),
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 255.0, "mean": 120.0, "median": 120.0, "min": 0.0, "percentile_00_5": 5.0,
                  "percentile_99_5": 250.0, "std": 40.0}},
        "configurations": {configuration: config},
        "continue_training": False,
    }


def _dataset_json(num_labels: int, regions: bool = False) -> dict:
    """A dataset.json with labels 0..num_labels-1, or with REGIONS (``regions_class_order`` as nnU-Net needs)."""
    if regions:
        labels = {"background": 0, **{name: members if len(members) > 1 else members[0]
                                      for name, members in REGIONS.items()}}
        return {"channel_names": {"0": "image"}, "labels": labels, "regions_class_order": [1, 2, 3],
                "numTraining": 10, "file_ending": ".nii.gz"}
    labels = {"background": 0, **{f"class{i}": i for i in range(1, num_labels)}}
    return {"channel_names": {"0": "image"}, "labels": labels, "numTraining": 10, "file_ending": ".nii.gz"}


@contextlib.contextmanager
def _nnunet_environment(root: Path):
    """nnU-Net's folders under ``root`` (the preprocessed one with a placeholder), compile off on CPU, and
    no UNIFOCAL_* settings (the trainers' defaults)."""
    saved = dict(os.environ)
    os.environ.update({"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
                       "nnUNet_results": str(root / "results")})
    for name in _UNIFOCAL_ENV:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _make_trainer(cls, plans: dict, configuration: str, dataset_json: dict, device: torch.device, root: Path):
    data = root / "preprocessed" / plans["dataset_name"] / plans["configurations"][configuration]["data_identifier"]
    data.mkdir(parents=True, exist_ok=True)
    (data / "placeholder.b2nd").touch()  # lets initialize() infer a dataset class; nothing is loaded
    with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net's banner and the trainers' logs
        trainer = cls(plans=copy.deepcopy(plans), configuration=configuration, fold=0, dataset_json=dataset_json,
                      device=device)
        torch.manual_seed(0)
        trainer.initialize()
    return trainer


def _batch(trainer, num_labels: int, seed: int, regions: bool = False) -> dict:
    cm = trainer.configuration_manager
    patch, batch_size = list(cm.patch_size), cm.batch_size
    g = torch.Generator().manual_seed(seed)
    data = torch.randn((batch_size, 1, *patch), generator=g)
    coarse = torch.rand((batch_size, 1, *[max(p // 8, 2) for p in patch]), generator=g)
    field = F.interpolate(coarse, size=patch, mode="trilinear" if len(patch) == 3 else "bilinear")
    labels = torch.zeros((batch_size, 1, *patch), dtype=torch.int16)
    for cls in range(1, num_labels):
        labels[field >= torch.quantile(field.flatten()[::97], 1 - 0.1 / 2 ** (cls - 1))] = cls
    targets = []
    for scale in trainer._get_deep_supervision_scales():
        size = [int(round(p * s)) for p, s in zip(patch, scale)]
        target = F.interpolate(labels.float(), size=size, mode="nearest-exact").to(torch.int16)
        if regions:  # bool (B, R, *S), as nnU-Net's ConvertSegmentationToRegionsTransform gives
            target = torch.cat([torch.isin(target, torch.tensor(members, dtype=target.dtype))
                                for members in REGIONS.values()], 1)
        targets.append(target)
    return {"data": data, "target": targets}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(
    quick: bool = False,
    device: torch.device = torch.device("cpu"),
    repeats: Optional[int] = None,
    configurations=None,
    log: Callable[[str], None] = lambda s: None,
) -> list[dict]:
    """Time ``train_step`` of nnUNetTrainer and UnifiedFocalTrainer on each configuration; rows with the
    median, quartiles and the paired ratio to nnUNetTrainer."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_trainers.trainers import UnifiedFocalTrainer

    configurations = configurations or (QUICK_CONFIGURATIONS if quick else CONFIGURATIONS)
    repeats = repeats or (3 if quick else 5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="unifocal-bench-") as tmp, _nnunet_environment(Path(tmp)):
        for name, patch, batch_size, num_labels, regions in configurations:
            plans = make_plans(name, patch, batch_size)
            dataset_json = _dataset_json(num_labels, regions)
            trainers = {cls.__name__: _make_trainer(cls, plans, name, dataset_json, device, Path(tmp))
                        for cls in (nnUNetTrainer, UnifiedFocalTrainer)}
            batch = _batch(trainers["nnUNetTrainer"], num_labels, seed=1, regions=regions)
            times = {k: [] for k in trainers}
            cpu_times = {k: [] for k in trainers}
            for trainer in trainers.values():  # warm-up
                trainer.network.train()
                trainer.train_step(batch)
            for r in range(repeats):
                for key in (list(trainers) if r % 2 == 0 else list(trainers)[::-1]):
                    _sync(device)
                    start, cpu_start = time.perf_counter(), time.process_time()
                    trainers[key].train_step(batch)
                    _sync(device)
                    times[key].append(time.perf_counter() - start)
                    cpu_times[key].append(time.process_time() - cpu_start)
            cm = trainers["nnUNetTrainer"].configuration_manager
            what = f"{len(REGIONS)} regions" if regions else f"{num_labels} labels"
            label = f"{name} patch {'x'.join(map(str, cm.patch_size))} batch {cm.batch_size}, {what}"
            for key, values in times.items():
                q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
                ratio = statistics.median(t / ref for t, ref in zip(values, times["nnUNetTrainer"]))
                cpu_ratio = statistics.median(t / ref for t, ref in zip(cpu_times[key], cpu_times["nnUNetTrainer"]))
                rows.append({"configuration": label, "trainer": key, "regions": regions, "median_ms": med * 1e3,
                             "q1_ms": q1 * 1e3, "q3_ms": q3 * 1e3, "ratio": ratio,
                             "cpu_ms": statistics.median(cpu_times[key]) * 1e3, "cpu_ratio": cpu_ratio,
                             "repeats": repeats, "ds_outputs": len(batch["target"])})
                log(f"  {label:55s} {key:22s} {med * 1e3:9.1f} ms  x{ratio:6.3f}  cpu x{cpu_ratio:6.3f}")
            del trainers
    return rows
