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
    "MIN_SIZE",
    "synthetic_case",
    "synthetic_cases",
    "SyntheticDataset",
    "write_nnunet_dataset",
]

CLASS_NAMES = ("background", "organ", "lesion")
DATASET_NAME = "UnifocalSynthetic"
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


def synthetic_cases(count: int, seed: int = 0, size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``count`` cases from one seeded generator (the same seed gives the same cases)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield synthetic_case(rng, size)


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
) -> SyntheticDataset:
    """Write the synthetic task as an nnU-Net v2 raw dataset (PNG) and return its description.

    Layout: ``imagesTr/<case>_0000.png``, ``labelsTr/<case>.png``, ``imagesTs``/``labelsTs`` likewise for the
    held-out cases, and ``dataset.json`` (one channel, labels background/organ/lesion, ``.png``).
    Training and test cases come from one seeded stream, training first.
    """
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in [1, 999]; got {dataset_id}")
    if num_train < 2 or num_test < 1:
        raise ValueError(f"need num_train >= 2 and num_test >= 1; got {num_train}, {num_test}")
    from PIL import Image

    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    folder = Path(raw_folder) / dataset_name
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    counts = np.zeros(len(CLASS_NAMES), dtype=np.int64)
    train, test = [], []
    for index, (image, label) in enumerate(synthetic_cases(num_train + num_test, seed, size)):
        is_train = index < num_train
        case = f"synth_{index:04d}"
        images, labels = ("imagesTr", "labelsTr") if is_train else ("imagesTs", "labelsTs")
        Image.fromarray(image).save(folder / images / f"{case}_0000.png")
        Image.fromarray(label).save(folder / labels / f"{case}.png")
        if is_train:
            counts += np.bincount(label.ravel(), minlength=len(CLASS_NAMES))
            train.append(case)
        else:
            test.append(case)
    dataset = {
        "channel_names": {"0": "synthetic"},
        "labels": {name: value for value, name in enumerate(CLASS_NAMES)},
        "numTraining": num_train,
        "file_ending": ".png",
        "name": name,
        "description": f"unifocal synthetic imbalanced 2D task, seed {seed}, {size}x{size}",
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    frequencies = tuple(float(c) for c in counts / counts.sum())
    return SyntheticDataset(folder, dataset_name, dataset_id, tuple(train), tuple(test), frequencies)
