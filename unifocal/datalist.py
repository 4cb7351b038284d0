"""Decathlon-style data lists with k-fold cross-validation splits, for the MONAI bundles in ``bundles/``.

:func:`find_cases` reads one of three layouts:

- an nnU-Net raw dataset: ``dataset.json``, ``imagesTr/CASE_0000.nii.gz`` (one file per channel),
  ``labelsTr/CASE.nii.gz``, optional ``imagesTs/``;
- the KiTS19 download: ``data/case_00000/imaging.nii.gz`` and ``segmentation.nii.gz`` (the folder given may
  be the repository or its ``data/``); cases without a segmentation are test cases;
- the BraTS 2021 download: ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``; cases without
  a ``_seg`` file are test cases. The modalities are listed in the order FLAIR, T1, T1ce, T2.

:func:`fold_lists` splits the labelled cases into k folds (a seeded shuffle of the sorted case names) and
gives, per fold, ``{"training": other folds, "validation": this fold, "test": test images}``; every path is
relative to the dataset folder, which is the bundles' ``dataset_dir``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Union

__all__ = ["LAYOUTS", "Cases", "find_cases", "fold_lists", "detect_layout"]

LAYOUTS = ("nnunet", "kits19", "brats2021")
BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")

Image = Union[str, list]  # one file, or one file per channel


@dataclass
class Cases:
    """Labelled cases ``{name: {"image": ..., "label": ...}}`` and test images ``{name: image}``."""

    layout: str
    labelled: dict
    test: dict


def detect_layout(root: Path) -> str:
    if (root / "dataset.json").is_file():
        return "nnunet"
    if list(root.glob("case_*/imaging.nii.gz")) or list(root.glob("data/case_*/imaging.nii.gz")):
        return "kits19"
    if list(root.glob("BraTS2021_*/BraTS2021_*_flair.nii.gz")):
        return "brats2021"
    raise ValueError(f"{root} is not an nnU-Net raw dataset (no dataset.json), a KiTS19 download "
                     "(no case_*/imaging.nii.gz) or a BraTS 2021 download (no BraTS2021_*/*_flair.nii.gz)")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _nnunet(root: Path) -> Cases:
    try:
        dataset = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{root / 'dataset.json'} cannot be read as JSON: {error}") from None
    ending = dataset.get("file_ending")
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(ending, str) or not isinstance(channels, dict) or not channels:
        raise ValueError(f"{root / 'dataset.json'} lacks 'file_ending' or 'channel_names'")

    def images(folder: Path, case: str) -> Image:
        files = [folder / f"{case}_{int(c):04d}{ending}" for c in sorted(channels, key=int)]
        for file in files:
            if not file.is_file():
                raise ValueError(f"{file} is missing: case {case} needs one image per channel of dataset.json")
        paths = [_relative(f, root) for f in files]
        return paths[0] if len(paths) == 1 else paths

    labels = sorted(p for p in (root / "labelsTr").glob(f"*{ending}") if p.is_file())
    labelled = {}
    for label in labels:
        case = label.name[: -len(ending)]
        labelled[case] = {"image": images(root / "imagesTr", case), "label": _relative(label, root)}
    test = {}
    for first in sorted((root / "imagesTs").glob(f"*_0000{ending}")):
        case = first.name[: -len(f"_0000{ending}")]
        test[case] = images(root / "imagesTs", case)
    return Cases("nnunet", labelled, test)


def _kits19(root: Path) -> Cases:
    base = root / "data" if (root / "data").is_dir() else root
    labelled, test = {}, {}
    for case in sorted(p for p in base.glob("case_*") if (p / "imaging.nii.gz").is_file()):
        image = _relative(case / "imaging.nii.gz", root)
        if (case / "segmentation.nii.gz").is_file():
            labelled[case.name] = {"image": image, "label": _relative(case / "segmentation.nii.gz", root)}
        else:
            test[case.name] = image
    return Cases("kits19", labelled, test)


def _brats2021(root: Path) -> Cases:
    labelled, test = {}, {}
    for case in sorted(p for p in root.glob("BraTS2021_*") if p.is_dir()):
        files = [case / f"{case.name}_{m}.nii.gz" for m in BRATS_MODALITIES]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{case} lacks {', '.join(missing)}: every BraTS case needs FLAIR, T1, T1ce and T2")
        image = [_relative(f, root) for f in files]
        seg = case / f"{case.name}_seg.nii.gz"
        if seg.is_file():
            labelled[case.name] = {"image": image, "label": _relative(seg, root)}
        else:
            test[case.name] = image
    return Cases("brats2021", labelled, test)


def find_cases(root: Union[str, Path], layout: str = "auto") -> Cases:
    """The labelled and test cases of the dataset folder ``root`` (layouts in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    cases = {"nnunet": _nnunet, "kits19": _kits19, "brats2021": _brats2021}[layout](root)
    if not cases.labelled:
        raise ValueError(f"{root} holds no labelled case in the {layout} layout")
    return cases


def fold_lists(cases: Cases, folds: int, seed: int = 12345) -> list[dict]:
    """One decathlon data list per fold: ``validation`` is fold k, ``training`` the other folds.

    The labelled case names are sorted, shuffled with ``random.Random(seed)`` and dealt into ``folds``
    groups whose sizes differ by at most one; each case is validated in exactly one fold.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an integer of at least 2, got {folds!r}")
    names = sorted(cases.labelled)
    if folds > len(names):
        raise ValueError(f"folds={folds} is more than the {len(names)} labelled cases")
    random.Random(seed).shuffle(names)
    groups = [sorted(names[k::folds]) for k in range(folds)]
    test = [cases.test[name] for name in sorted(cases.test)]
    lists = []
    for k in range(folds):
        held_out = set(groups[k])
        lists.append({
            "training": [cases.labelled[n] for n in sorted(cases.labelled) if n not in held_out],
            "validation": [cases.labelled[n] for n in groups[k]],
            "test": test,
        })
    return lists
