"""The tiny nnU-Net dataset of the trainer tests and of the first try in docs/nnunet.md.

It is :func:`unifocal.synthetic.write_nnunet_dataset`'s easy task (``task="disks"``: a bright organ disk holding
a small lesion disk, about 90 % / 9 % / 1 % of the pixels) at 48 x 48 pixels, with plain labels or nested
regions and an optional ignore label; see there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from unifocal.synthetic import IGNORE, LESION, ORGAN, write_nnunet_dataset

__all__ = ["make_toy_dataset", "ORGAN", "LESION", "IGNORE"]


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
    """Write ``Dataset{id:03d}_{name}`` under ``raw_root`` (``case_XXX`` training, ``test_XXX`` held-out cases)
    and return its folder."""
    return write_nnunet_dataset(raw_root, dataset_id, name, num_cases, num_test, size, seed, task="disks",
                                regions=regions, ignore=ignore).folder
