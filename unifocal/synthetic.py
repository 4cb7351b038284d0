"""A seeded, strongly class-imbalanced synthetic 2D segmentation task, written as an nnU-Net raw dataset.

Each case is a ``size x size`` grey-level image of an abdomen-like cross-section:

- background (label 0): air outside an elliptic "body", and body tissue with a smooth intensity field;
- **organ** (label 1): one ellipse inside the body, brighter than the tissue (about 2 % of the pixels);
- **lesion** (label 2): one or two small discs centred inside the organ, darker than the organ, with the
  intensity of body tissue (about 0.3 % of the pixels; roughly 6x rarer than the organ, 300x rarer than
  the background);
- distractors, not labelled: dark lesion-like spots in the tissue outside the organ, and small bright
  organ-like blobs, so that intensity alone does not solve the task and context is needed;
- Gaussian noise and a slight blur.

Foreground is well under 5 % of the pixels. Everything is drawn from ``numpy.random.default_rng(seed)``,
so a seed gives the same dataset on every machine. Cases are written as 8-bit PNG files, which nnU-Net
reads with its ``NaturalImage2DIO``.

A second, easier task serves the trainer tests (``task="disks"``, :func:`disk_case`): a bright disk
("organ") holding a small brighter disk ("lesion") in noise, about 90 % / 9 % / 1 % of the pixels, with no
zero pixel (nnU-Net's crop to the non-zero region then keeps every pixel). :func:`write_nnunet_dataset`
writes either task, with plain labels or nested regions (KiTS23 / BraTS style) and optionally an ignore
label on a band of rows of each training case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "DATASET_NAME",
    "ORGAN",
    "LESION",
    "IGNORE",
    "disk_case",
    "MIN_SIZE",
    "synthetic_case",
    "synthetic_cases",
    "SyntheticDataset",
    "write_nnunet_dataset",
]

CLASS_NAMES = ("background", "organ", "lesion")
DATASET_NAME = "UnifocalSynthetic"
ORGAN, LESION, IGNORE = 1, 2, 3
# Smallest image size in pixels the case generator accepts (its shapes are tuned for 64 and scale with it).
MIN_SIZE = 32

_AIR = 15.0
_TISSUE = 85.0
_ORGAN = 135.0
_LESION = 85.0
_NOISE = 16.0


def _ellipse(shape, center, axes, angle) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dx * cos + dy * sin) / axes[0]
    v = (-dx * sin + dy * cos) / axes[1]
    return u * u + v * v <= 1.0


def _disc(shape, center, radius) -> np.ndarray:
    return _ellipse(shape, center, (radius, radius), 0.0)


def synthetic_case(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One case: ``(image, label)``, both ``uint8`` arrays of shape ``(size, size)``.

    Shapes scale with ``size`` (the defaults are tuned for 64), so the class frequencies stay about the same.
    """
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}; got {size}")
    from scipy.ndimage import gaussian_filter

    shape = (size, size)
    s = size / 64.0
    middle = (size - 1) / 2.0
    body = _ellipse(
        shape,
        (middle + rng.uniform(-2, 2) * s, middle + rng.uniform(-2, 2) * s),
        (rng.uniform(26, 30) * s, rng.uniform(20, 25) * s),
        rng.uniform(-0.2, 0.2),
    )
    field_noise = gaussian_filter(rng.normal(size=shape), sigma=6 * s)
    field_noise /= np.abs(field_noise).max() + 1e-12
    image = np.where(body, _TISSUE + 15.0 * field_noise, _AIR)
    label = np.zeros(shape, dtype=np.uint8)

    # The organ: an ellipse well inside the body.
    inside = np.argwhere(_ellipse(shape, (middle, middle), (14 * s, 10 * s), 0.0))
    center = inside[rng.integers(len(inside))].astype(np.float64)
    axes = (rng.uniform(5.0, 8.0) * s, rng.uniform(3.5, 6.0) * s)
    angle = rng.uniform(0, np.pi)
    organ = _ellipse(shape, center, axes, angle)
    image[organ] = _ORGAN + 8.0 * field_noise[organ]
    label[organ] = 1

    # Distractors outside the organ: dark lesion-like spots and small bright organ-like blobs.
    tissue = np.argwhere(body & ~_ellipse(shape, center, (axes[0] + 4 * s, axes[1] + 4 * s), angle))
    for _ in range(rng.integers(2, 5)):
        spot = _disc(shape, tissue[rng.integers(len(tissue))], rng.uniform(1.2, 2.2) * s) & ~organ
        image[spot] = _LESION - 30.0
    for _ in range(rng.integers(1, 3)):
        blob = _disc(shape, tissue[rng.integers(len(tissue))], rng.uniform(1.5, 2.5) * s) & ~organ
        image[blob] = _ORGAN - 10.0

    # Lesions: one or two small discs centred in the organ.
    for _ in range(1 if rng.uniform() < 0.7 else 2):
        t, r = rng.uniform(0, 2 * np.pi), 0.6 * np.sqrt(rng.uniform())
        u, v = r * np.cos(t) * axes[0], r * np.sin(t) * axes[1]
        lesion_center = (center[0] + u * np.sin(angle) + v * np.cos(angle), center[1] + u * np.cos(angle) - v * np.sin(angle))
        lesion = _disc(shape, lesion_center, rng.uniform(1.3, 2.3) * s)
        image[lesion] = _LESION + 5.0 * rng.normal()
        label[lesion] = 2

    image = gaussian_filter(image, sigma=0.6 * s) + rng.normal(scale=_NOISE, size=shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def disk_case(rng: np.random.Generator, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One case of the easy task: ``(image, label)``, ``uint8`` arrays of shape ``(size, size)``."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    label = np.zeros((size, size), dtype=np.uint8)
    cy, cx = rng.uniform(0.35 * size, 0.65 * size, 2)
    organ_radius = rng.uniform(0.15 * size, 0.2 * size)
    label[(yy - cy) ** 2 + (xx - cx) ** 2 <= organ_radius**2] = ORGAN
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0.2, 0.5) * organ_radius
    ly, lx = cy + offset * np.sin(angle), cx + offset * np.cos(angle)
    lesion_radius = rng.uniform(0.05 * size, 0.08 * size)
    label[((yy - ly) ** 2 + (xx - lx) ** 2 <= lesion_radius**2) & (label == ORGAN)] = LESION
    intensity = np.array([40.0, 120.0, 200.0])[label] + rng.normal(0, 20, label.shape)
    return np.clip(intensity, 1, 255).astype(np.uint8), label


TASKS = {"abdomen": synthetic_case, "disks": disk_case}


def synthetic_cases(
    count: int, seed: int = 0, size: int = 64, task: str = "abdomen"
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` cases from one seeded generator (the same seed gives the same cases)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield TASKS[task](rng, size)


@dataclass(frozen=True)
class SyntheticDataset:
    """What :func:`write_nnunet_dataset` wrote.

    Attributes:
        folder: the dataset folder (``<raw>/Dataset<id>_<name>``).
        dataset_name: ``Dataset<id>_<name>``; dataset_id: the id.
        train_cases / test_cases: case identifiers in ``imagesTr``/``labelsTr`` and ``imagesTs``/``labelsTs``.
        frequencies: pixel frequency per class over the training labels.
    """

    folder: Path
    dataset_name: str
    dataset_id: int
    train_cases: tuple[str, ...]
    test_cases: tuple[str, ...]
    frequencies: tuple[float, ...] = field(default=())

    @property
    def test_images(self) -> Path:
        return self.folder / "imagesTs"

    @property
    def test_labels(self) -> Path:
        return self.folder / "labelsTs"


def write_nnunet_dataset(
    raw_folder: Union[str, Path],
    dataset_id: int = 990,
    name: str = DATASET_NAME,
    num_train: int = 40,
    num_test: int = 20,
    size: int = 64,
    seed: int = 0,
    task: str = "abdomen",
    regions: bool = False,
    ignore: bool = False,
) -> SyntheticDataset:
    """Write a synthetic task as an nnU-Net v2 raw dataset (PNG) in a new folder and return its description.

    Layout: ``imagesTr/case_XXX_0000.png``, ``labelsTr/case_XXX.png``, ``imagesTs/test_XXX_0000.png`` and
    ``labelsTs/test_XXX.png`` for the held-out cases, and ``dataset.json`` (one channel, labels
    background/organ/lesion, ``.png``). Training and held-out cases come from one seeded stream, training
    first. ``regions``: "organ" is the region of labels (1, 2) and "lesion" that of label 2, for sigmoid
    (region) training; ``ignore``: a 6-row band of each training case is the ignore label 3.

    Raises:
        ValueError: a setting out of range; FileExistsError: the dataset folder exists and is not empty.
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in [1, 999]; got {dataset_id}")
    if num_train < 2 or num_test < 1:
        raise ValueError(f"need num_train >= 2 and num_test >= 1; got {num_train}, {num_test}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    from PIL import Image

    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    folder = Path(raw_folder) / dataset_name
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already exists and is not empty; a synthetic dataset is written only "
                              "into a new folder")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    train, test = [], []
    for index in range(num_train + num_test):
        image, label = TASKS[task](rng, size)
        is_train = index < num_train
        case = f"case_{index:03d}" if is_train else f"test_{index - num_train:03d}"
        if ignore and is_train:
            start = int(rng.integers(0, size - 6))
            label[start:start + 6] = IGNORE
        images, labels = ("imagesTr", "labelsTr") if is_train else ("imagesTs", "labelsTs")
        Image.fromarray(image).save(folder / images / f"{case}_0000.png")
        Image.fromarray(label).save(folder / labels / f"{case}.png")
        if is_train:
            counts += np.bincount(label[label != IGNORE], minlength=IGNORE)[:len(CLASS_NAMES)]
            train.append(case)
        else:
            test.append(case)
    (folder / "dataset.json").write_text(json.dumps(_dataset_json(name, num_train, task, size, seed, regions, ignore),
                                                    indent=2) + "\n", encoding="utf-8")
    frequencies = tuple(float(c) for c in counts / counts.sum())
    return SyntheticDataset(folder, dataset_name, dataset_id, tuple(train), tuple(test), frequencies)


def _dataset_json(name: str, num_train: int, task: str, size: int, seed: int, regions: bool, ignore: bool) -> dict:
    if regions:
        labels: dict = {"background": 0, "organ": [ORGAN, LESION], "lesion": [LESION]}
    else:
        labels = {class_name: value for value, class_name in enumerate(CLASS_NAMES)}
    if ignore:
        labels["ignore"] = IGNORE
    meta = {"channel_names": {"0": "synthetic"}, "labels": labels, "numTraining": num_train, "file_ending": ".png",
            "name": name, "description": f"unifocal synthetic imbalanced 2D task ({task}), seed {seed}, {size}x{size}"}
    if regions:
        meta["regions_class_order"] = [ORGAN, LESION]
    return meta
