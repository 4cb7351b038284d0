"""Decathlon-style data lists with k-fold cross-validation splits, for the MONAI bundles in ``unifocal/bundles``.

:func:`find_cases` reads an nnU-Net raw dataset (``dataset.json``, ``imagesTr/CASE_0000.nii.gz`` with one file
per channel, ``labelsTr/CASE.nii.gz``, optional ``imagesTs/``) or one of the challenge downloads of
:data:`DOWNLOADS`, as they come:

- KiTS19 / KiTS21 / KiTS23: ``case_00000/imaging.nii.gz`` and ``segmentation.nii.gz``, in the folder given or
  in its ``data/`` (the KiTS19 repository) or ``dataset/`` (the KiTS21 / KiTS23 repositories);
- BraTS 2021: ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz``;
- BraTS 2023 and later: ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz`` (also the
  ``MEN``, ``MET``, ``PED`` and ``SSA`` tasks).

Cases without a label file are test cases. BraTS channels are listed in one order for both conventions:
FLAIR (``t2f``), T1 (``t1n``), T1ce (``t1c``), T2 (``t2w``), so a network trained on one reads the other.

:func:`fold_lists` splits the labelled cases into k folds (a seeded shuffle of the sorted case names) and
gives, per fold, ``{"training": other folds, "validation": this fold, "test": test images}``; every path is
relative to the dataset folder, which is the bundles' ``dataset_dir``.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

__all__ = ["Download", "DOWNLOADS", "LAYOUTS", "Cases", "find_cases", "fold_lists", "detect_layout", "case_name",
           "download_labels"]


@dataclass(frozen=True)
class Download:
    """A challenge download: one folder per case holding its image files and, for a training case, its label.

    ``images`` (one per channel) and ``label`` are file names in which ``{case}`` stands for the folder name;
    ``subfolders`` are where the case folders may sit below the folder given (``""``: in it).
    """

    title: str
    case_folder: str  # regular expression of a case folder's name
    images: tuple[str, ...]
    label: str
    subfolders: tuple[str, ...] = ("",)

    def example(self, case: str) -> str:
        """The first image of ``case``, relative to the dataset folder, e.g. ``case_00000/imaging.nii.gz``."""
        return f"{case}/{self.images[0].format(case=case)}"

    def case_folders(self, root: Path) -> list[Path]:
        """The case folders below ``root``, from the first of ``subfolders`` that holds any."""
        for sub in self.subfolders:
            base = root / sub
            folders = sorted(p for p in base.glob("*") if p.is_dir() and re.fullmatch(self.case_folder, p.name)) \
                if base.is_dir() else []
            if folders:
                return folders
        return []


DOWNLOADS = {
    "kits": Download("KiTS19 / KiTS21 / KiTS23", r"case_\d{5}", ("imaging.nii.gz",), "segmentation.nii.gz",
                     ("", "data", "dataset")),
    "brats2021": Download("BraTS 2021", r"BraTS2021_\d{5}",
                          tuple(f"{{case}}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")), "{case}_seg.nii.gz"),
    "brats2023": Download("BraTS 2023+", r"BraTS-[A-Z]+-\d{5}-\d{3}",
                          tuple(f"{{case}}-{m}.nii.gz" for m in ("t2f", "t1n", "t1c", "t2w")), "{case}-seg.nii.gz"),
}
LAYOUTS = ("nnunet", *DOWNLOADS)
_EXAMPLE_CASES = ("case_00000", "BraTS2021_00000", "BraTS-GLI-00000-000")

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
    for layout, download in DOWNLOADS.items():
        if download.case_folders(root):
            return layout
    examples = ", ".join(d.example(case) for d, case in zip(DOWNLOADS.values(), _EXAMPLE_CASES))
    raise ValueError(f"{root} is neither an nnU-Net raw dataset (no dataset.json) nor a challenge download "
                     f"(no case folders such as {examples})")


def case_name(image: Union[str, Path]) -> str:
    """The case an image file belongs to: its folder in the challenge downloads (KiTS names every image
    ``imaging.nii.gz``; BraTS has one file per channel), else the file name without its ending."""
    from .io import split_ending

    path = Path(image)
    if any(re.fullmatch(d.case_folder, path.parent.name) for d in DOWNLOADS.values()):
        return path.parent.name
    return split_ending(path.name)[0]


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _nnunet(root: Path) -> Cases:
    from .io import load_dataset_json

    dataset = load_dataset_json(root / "dataset.json")
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


def _download(root: Path, layout: str) -> Cases:
    download = DOWNLOADS[layout]
    labelled, test = {}, {}
    for case in download.case_folders(root):
        files = [case / name.format(case=case.name) for name in download.images]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{case} lacks {', '.join(missing)}: every {download.title} case needs "
                             f"{', '.join(f.name for f in files)}")
        paths = [_relative(f, root) for f in files]
        image = paths[0] if len(paths) == 1 else paths
        label = case / download.label.format(case=case.name)
        if label.is_file():
            labelled[case.name] = {"image": image, "label": _relative(label, root)}
        else:
            test[case.name] = image
    return Cases(layout, labelled, test)


def download_labels(root: Union[str, Path]) -> Optional[tuple[str, dict[str, Path]]]:
    """``(layout, {case: label file})`` when ``root`` is a challenge download of :data:`DOWNLOADS` (images need
    not be there: the KiTS21 / KiTS23 repositories hold the segmentations before the images are fetched), else
    None."""
    root = Path(root)
    for layout, download in DOWNLOADS.items():
        folders = download.case_folders(root)
        labels = {case.name: case / download.label.format(case=case.name) for case in folders}
        labels = {case: path for case, path in labels.items() if path.is_file()}
        if labels:
            return layout, labels
    return None


def find_cases(root: Union[str, Path], layout: str = "auto") -> Cases:
    """The labelled and test cases of the dataset folder ``root`` (layouts in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    cases = _nnunet(root) if layout == "nnunet" else _download(root, layout)
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
