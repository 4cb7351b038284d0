"""Tiny synthetic nnU-Net datasets (2D PNG) for tests, demos and a first try of the trainers.

Each case is a noisy 48 x 48 grey image with a large bright disk ("organ", label 1) that holds a small,
brighter disk ("lesion", label 2): a miniature kidney / tumour problem with a strong class imbalance
(roughly 90 % background, 9 % organ, 1 % lesion). The same label maps serve two layouts:

- ``regions=False``: plain labels (KiTS19 style, softmax training).
- ``regions=True``: nested regions (KiTS23 / BraTS style, sigmoid training): "organ" = labels (1, 2),
  "lesion" = label 2, with ``regions_class_order`` (1, 2).

``ignore=True`` adds an ignore label (value 3, the highest, as nnU-Net requires) on a band of rows in
each training case: the voxels that a sparse annotation would leave unlabelled.

Writes only under ``raw_root``; needs numpy and Pillow (both dependencies of nnU-Net).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["make_toy_dataset", "ORGAN", "LESION", "IGNORE"]

ORGAN, LESION, IGNORE = 1, 2, 3


def _case(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    labels = np.zeros((size, size), dtype=np.uint8)
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, 2)
    organ_radius = rng.uniform(0.15 * size, 0.2 * size)
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= organ_radius**2] = ORGAN
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0.2, 0.5) * organ_radius
    ly, lx = cy + offset * np.sin(angle), cx + offset * np.cos(angle)
    lesion_radius = rng.uniform(0.05 * size, 0.08 * size)
    labels[((yy - ly) ** 2 + (xx - lx) ** 2 <= lesion_radius**2) & (labels == ORGAN)] = LESION
    intensity = np.array([40.0, 120.0, 200.0])[labels] + rng.normal(0, 20, labels.shape)
    # no zero pixels: nnU-Net's crop-to-nonzero then keeps every pixel, so the preprocessed labels equal the raw ones
    return np.clip(intensity, 1, 255).astype(np.uint8), labels


def make_toy_dataset(
    raw_root: Union[str, Path],
    dataset_id: int = 990,
    name: str = "UnifocalToy",
    num_cases: int = 10,
    num_test: int = 2,
    size: int = 48,
    regions: bool = False,
    ignore: bool = False,
    seed: int = 0,
) -> Path:
    """Write ``Dataset{id:03d}_{name}`` under ``raw_root`` and return its folder.

    Layout: ``imagesTr/case_XXX_0000.png``, ``labelsTr/case_XXX.png``, ``imagesTs/test_XXX_0000.png``
    (test labels in ``labelsTs``) and ``dataset.json``. Deterministic for a given ``seed``.
    """
    from PIL import Image

    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(num_cases + num_test):
        image, labels = _case(rng, size)
        training = index < num_cases
        case = f"case_{index:03d}" if training else f"test_{index - num_cases:03d}"
        if ignore and training:
            start = int(rng.integers(0, size - 6))
            labels[start:start + 6] = IGNORE
        images, segs = ("imagesTr", "labelsTr") if training else ("imagesTs", "labelsTs")
        Image.fromarray(image).save(folder / images / f"{case}_0000.png")
        Image.fromarray(labels).save(folder / segs / f"{case}.png")

    if regions:
        label_dict: dict = {"background": 0, "organ": [ORGAN, LESION], "lesion": [LESION]}
    else:
        label_dict = {"background": 0, "organ": ORGAN, "lesion": LESION}
    if ignore:
        label_dict["ignore"] = IGNORE
    dataset_json = {
        "channel_names": {"0": "grey"},
        "labels": label_dict,
        "numTraining": num_cases,
        "file_ending": ".png",
        "name": name,
        "description": "Synthetic organ/lesion disks for unifocal's nnU-Net tests (see nnunet_trainers.toy_data)",
    }
    if regions:
        dataset_json["regions_class_order"] = [ORGAN, LESION]
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
