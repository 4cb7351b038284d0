"""Tiny synthetic data sets in the layouts the MONAI bundles read (decathlon-style datalist JSON).

Each case is a smooth background with one or two ellipsoids whose intensity differs from the
background, so that a few optimiser steps already lower the loss. Volumes carry a non-trivial affine
(LPS axes, anisotropic spacing, an origin offset) so that the inference tests check that predictions
are written back in the input geometry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["AFFINE", "SPACING", "make_kits_like", "make_brats_like", "make_binary2d", "write_datalist"]

SPACING = (1.5, 1.5, 2.0)
# LPS-oriented (the first two axes flipped with respect to RAS), as DICOM-derived NIfTI often are.
AFFINE = np.array(
    [
        [-SPACING[0], 0.0, 0.0, 20.0],
        [0.0, -SPACING[1], 0.0, 10.0],
        [0.0, 0.0, SPACING[2], -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _ellipsoid(shape: Sequence[int], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii))
    return dist <= 1.0


def write_datalist(root: Path, training: list, validation: list, test: list) -> Path:
    """Write ``root/datalist.json`` with decathlon keys "training", "validation" and "test"."""
    path = Path(root) / "datalist.json"
    path.write_text(json.dumps({"training": training, "validation": validation, "test": test}, indent=2))
    return path


def _save_nifti(array: np.ndarray, path: Path, dtype) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(array.astype(dtype), AFFINE)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def make_kits_like(root: Path, num_cases: int = 4, shape: Sequence[int] = (32, 32, 32), seed: int = 0) -> Path:
    """CT-like volumes (HU) with a kidney (label 1, ~150 HU) holding a tumour (label 2, ~40 HU), in the KiTS19 /
    KiTS23 download layout (``case_XXXXX/imaging.nii.gz`` and ``segmentation.nii.gz``: every image has the same
    file name). The last two cases are also the test images."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    shape = tuple(int(s) for s in shape)
    size = min(shape)
    entries = []
    for index in range(num_cases):
        center = rng.uniform(0.4, 0.6, 3) * np.asarray(shape)
        kidney = _ellipsoid(shape, center, (0.3 * size, 0.22 * size, 0.25 * size))
        tumor = _ellipsoid(shape, center + rng.uniform(-2, 2, 3), (0.12 * size,) * 3) & kidney
        label = kidney.astype(np.uint8) + tumor.astype(np.uint8)
        image = np.where(label == 1, 150.0, np.where(label == 2, 40.0, -40.0))
        image = image + rng.normal(0.0, 15.0, shape)
        case = root / f"case_{index:05d}"
        case.mkdir(parents=True, exist_ok=True)
        _save_nifti(image, case / "imaging.nii.gz", np.int16)
        _save_nifti(label, case / "segmentation.nii.gz", np.uint8)
        entries.append({"image": f"{case.name}/imaging.nii.gz", "label": f"{case.name}/segmentation.nii.gz"})
    write_datalist(root, entries[:-1], entries[-1:], [entry["image"] for entry in entries[-2:]])
    return root


BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")


def make_brats_like(root: Path, num_cases: int = 4, size: int = 32, seed: int = 0, et_label: int = 4) -> Path:
    """BraTS-2021-like cases: four modality files per case and a label map with 1 (necrotic core),
    2 (oedema) and ``et_label`` (enhancing tumour), nested oedema > enhancing rim > necrosis."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    shape = (size,) * 3
    entries = []
    for index in range(num_cases):
        name = f"BraTS2021_{index:05d}"
        case_dir = root / name
        case_dir.mkdir(parents=True, exist_ok=True)
        brain = _ellipsoid(shape, (size / 2,) * 3, (0.45 * size,) * 3)
        center = rng.uniform(0.4 * size, 0.6 * size, 3)
        oedema = _ellipsoid(shape, center, (0.3 * size,) * 3) & brain
        enhancing = _ellipsoid(shape, center, (0.18 * size,) * 3) & brain
        necrosis = _ellipsoid(shape, center, (0.09 * size,) * 3) & brain
        label = np.zeros(shape, np.uint8)
        label[oedema] = 2
        label[enhancing] = et_label
        label[necrosis] = 1
        # each modality shows the sub-regions with its own contrast
        contrast = {
            "flair": {0: 300, 1: 500, 2: 900, et_label: 700},
            "t1": {0: 500, 1: 250, 2: 400, et_label: 450},
            "t1ce": {0: 500, 1: 250, 2: 450, et_label: 1200},
            "t2": {0: 400, 1: 900, 2: 1000, et_label: 700},
        }
        files = []
        for modality in BRATS_MODALITIES:
            image = np.zeros(shape, np.float32)
            for value, intensity in contrast[modality].items():
                image[(label == value) & brain] = intensity
            image = np.where(brain, image + rng.normal(0.0, 30.0, shape), 0.0)
            _save_nifti(image, case_dir / f"{name}_{modality}.nii.gz", np.int16)
            files.append(f"{name}/{name}_{modality}.nii.gz")
        _save_nifti(label, case_dir / f"{name}_seg.nii.gz", np.uint8)
        entries.append({"image": files, "label": f"{name}/{name}_seg.nii.gz"})
    training, validation = entries[:-1], entries[-1:]
    write_datalist(root, training, validation, [validation[0]["image"]])
    return root


def make_binary2d(root: Path, num_cases: int = 4, size: tuple[int, int] = (48, 64), seed: int = 0, rgb: bool = True) -> Path:
    """2D images (RGB PNG, one grey TIFF) with a bright disk and a thin curved vessel as foreground;
    masks are PNG with values 0 / 255. The images are not square so that a transposed output shows."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    entries = []
    for index in range(num_cases):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        disk = (rows - cy) ** 2 + (cols - cx) ** 2 <= (0.18 * height) ** 2
        path_row = 0.5 * height + 0.25 * height * np.sin(cols / width * 2 * np.pi + rng.uniform(0, np.pi))
        vessel = np.abs(rows - path_row) <= 1.5
        mask = disk | vessel
        grey = np.where(mask, 200.0, 60.0) + rng.normal(0.0, 12.0, size)
        grey = np.clip(grey, 0, 255).astype(np.uint8)
        # the last case is a grey TIFF: the bundle converts every image to the configured mode
        ext = "tif" if index == num_cases - 1 else "png"
        name = f"img_{index:03d}"
        if rgb and ext == "png":
            Image.fromarray(np.stack([grey, (0.8 * grey).astype(np.uint8), (0.6 * grey).astype(np.uint8)], -1)).save(
                root / "images" / f"{name}.{ext}"
            )
        else:
            Image.fromarray(grey).save(root / "images" / f"{name}.{ext}")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
        entries.append({"image": f"images/{name}.{ext}", "label": f"masks/{name}.png"})
    write_datalist(root, entries[:-1], entries[-1:], [entries[-1]["image"]])
    return root
