"""Where the predictions and the reference come from, and which cases and classes are evaluated.

A method is a command line word ``[NAME=]PATH`` (:func:`resolve_method`):

- a folder of label files (``.nii.gz``, ``.png``, ... see :mod:`unifocal.io`);
- an nnU-Net trainer output folder ``<results>/<Dataset>/<Trainer>__<Plans>__<config>``: the
  cross-validation predictions in ``fold_*/validation`` (all folds, or the chosen ones), with the
  ``dataset.json`` stored there; the reference defaults to
  ``$nnUNet_preprocessed/<Dataset>/gt_segmentations``, which is what nnU-Net itself evaluates against;
- one ``fold_<k>`` folder (its ``validation`` predictions);
- a dataset results folder ``<results>/<Dataset>``: every trainer output folder in it, one method each.

:func:`match_cases` pairs every method's cases with the reference's under one of :data:`CASE_SELECTIONS`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..io import find_dataset_json, label_classes, list_label_files, load_dataset_json, printable
from ..metrics import ClassSpec
from ..run_settings import read_run_settings

__all__ = ["MethodSource", "resolve_method", "CASE_SELECTIONS", "match_cases", "classes_from_dataset",
           "dataset_label_values", "default_class_names"]

_TRAINER_FOLDER = re.compile(r"^(?P<trainer>.+?)__(?P<plans>.+)__(?P<configuration>[^_].*)$")

# Which cases are evaluated: "all": the reference and every method hold the same cases (anything else is an
# error); "predicted": the cases the methods predict (the same for all), each needing a reference, which may
# hold more (one fold's validation cases against every training case); "common": the cases that the reference
# and every method share, the others skipped with a warning.
CASE_SELECTIONS = ("all", "predicted", "common")


@dataclass
class MethodSource:
    """One method's predictions: ``files`` maps case identifiers to label files.

    ``dataset_json`` and ``reference`` are what the source itself suggests (an nnU-Net results folder
    knows both); explicit command line options win over them. ``settings``: the loss settings a unifocal
    trainer recorded in its fold folders (:func:`unifocal.run_settings.read_run_settings`).
    """

    name: str
    files: dict[str, Path]
    origin: Path
    dataset_json: Optional[Path] = None
    reference: Optional[Path] = None
    settings: Optional[str] = None


def _fold_folders(trainer_folder: Path, folds: Optional[Sequence[str]]) -> list[Path]:
    found = sorted(p for p in trainer_folder.glob("fold_*") if p.is_dir())
    if folds is not None:
        wanted = {f"fold_{f}" for f in folds}
        found = [p for p in found if p.name in wanted]
    return found


def _trainer_source(
    name: Optional[str], folder: Path, folds: Optional[Sequence[str]], ending: Optional[str] = None
) -> MethodSource:
    files: dict[str, Path] = {}
    dataset_json = folder / "dataset.json"
    if ending is None and dataset_json.is_file():
        # nnU-Net's --npz leaves probability .npz files next to the predictions: use the dataset's ending.
        ending = load_dataset_json(dataset_json).get("file_ending")
    for fold in _fold_folders(folder, folds):
        validation = fold / "validation"
        if validation.is_dir():
            for case, path in list_label_files(validation, ending).items():
                if case in files:
                    raise ValueError(f"case {case} is predicted in more than one fold of {printable(folder)}")
                files[case] = path
    if not files:
        raise ValueError(f"{printable(folder)}: no predictions in fold_*/validation (has training finished?)")
    match = _TRAINER_FOLDER.match(folder.name)
    reference = None
    preprocessed = os.environ.get("nnUNet_preprocessed")
    if preprocessed:
        candidate = Path(preprocessed) / folder.parent.name / "gt_segmentations"
        if candidate.is_dir():
            reference = candidate
    return MethodSource(
        name or (match.group("trainer") if match else printable(folder.name)),
        files,
        folder,
        dataset_json if dataset_json.is_file() else None,
        reference,
        read_run_settings(folder, folds),
    )


def resolve_method(
    spec: str, folds: Optional[Sequence[str]] = None, ending: Optional[str] = None
) -> list[MethodSource]:
    """Methods from a command line word ``[NAME=]PATH`` (see the module docstring for what PATH may be).

    A dataset results folder expands to one method per trainer folder (NAME is then not allowed).
    """
    if "=" in spec and not Path(spec).exists():
        name, _, path_text = spec.partition("=")
    else:
        name, path_text = "", spec
    name = name.strip() or None
    path = Path(path_text)
    if not path.is_dir():
        raise ValueError(f"{printable(path)}: not a folder")
    if any(p.is_dir() for p in path.glob("fold_*")):
        return [_trainer_source(name, path, folds, ending)]
    if path.name.startswith("fold_") and (path / "validation").is_dir():
        return [_trainer_source(name, path.parent, [path.name[len("fold_"):]], ending)]
    trainers = sorted(p for p in path.iterdir() if p.is_dir() and _TRAINER_FOLDER.match(p.name)
                      and any(q.is_dir() for q in p.glob("fold_*")))
    if trainers:
        if name:
            raise ValueError(f"{printable(path)} holds several trainers; NAME= is only for a single method")
        return [_trainer_source(None, t, folds, ending) for t in trainers]
    dataset_json = find_dataset_json(path, levels=1)
    return [MethodSource(name or printable(path.name), list_label_files(path, ending), path, dataset_json, None)]


def match_cases(
    predictions: dict[str, dict[str, Path]], reference: dict[str, Path], selection: str = "common"
) -> tuple[list[str], dict[str, list[str]]]:
    """The cases to evaluate under ``selection`` (:data:`CASE_SELECTIONS`) and, per method, the reference cases
    it does not predict (left out; only with ``"common"``).

    Raises:
        ValueError: naming the method, the case and the selection that would evaluate it.
    """
    if selection not in CASE_SELECTIONS:
        raise ValueError(f"case selection must be one of {CASE_SELECTIONS}; got {selection!r}")
    if not predictions:
        raise ValueError("no methods to evaluate")
    if selection != "common":
        for method, files in predictions.items():
            orphans = sorted(set(files) - set(reference))
            if orphans:
                raise ValueError(f"{method} predicts {len(orphans)} case(s) the reference lacks, e.g. {orphans[0]} "
                                 "(a missing or misnamed reference file); --cases common evaluates the shared ones")
        first, *others = predictions.items()
        for method, files in others:
            differ = sorted(set(files) ^ set(first[1]))
            if differ:
                raise ValueError(f"{method} and {first[0]} predict different cases, e.g. {differ[0]}; "
                                 "--cases common evaluates the shared ones")
        if selection == "all":
            unpredicted = sorted(set(reference) - set(first[1]))
            if unpredicted:
                raise ValueError(f"{len(unpredicted)} reference case(s) have no prediction, e.g. {unpredicted[0]}; "
                                 "--cases predicted evaluates the predicted cases only")
    common = set(reference)
    for files in predictions.values():
        common &= set(files)
    if not common:
        raise ValueError("no case is present in the reference and in every method's predictions")
    return sorted(common), {m: sorted(set(reference) - set(files)) for m, files in predictions.items()}


def default_class_names(classes: Sequence[ClassSpec]) -> list[str]:
    names = []
    for spec in classes:
        if isinstance(spec, (list, tuple)):
            names.append("region " + "+".join(str(v) for v in spec))
        else:
            names.append(f"label {spec}")
    return names


def classes_from_dataset(
    dataset_json: Optional[Path], include_background: bool = False
) -> tuple[list[str], list[ClassSpec], Optional[int]]:
    """Classes to evaluate from an nnU-Net ``dataset.json`` (background dropped unless asked for)."""
    names, classes, ignore_label = label_classes(load_dataset_json(dataset_json), dataset_json)
    keep = [
        i for i, spec in enumerate(classes)
        if include_background or not (spec == 0 or (isinstance(spec, tuple) and spec == (0,)))
    ]
    return [names[i] for i in keep], [classes[i] for i in keep], ignore_label


def dataset_label_values(dataset_json: Path) -> frozenset[int]:
    """Every label value an nnU-Net ``dataset.json`` defines (background and the ignore label included)."""
    _, classes, ignore_label = label_classes(load_dataset_json(dataset_json), dataset_json)
    values = {v for spec in classes for v in (spec if isinstance(spec, tuple) else (spec,))}
    return frozenset(values | {0} | ({ignore_label} if ignore_label is not None else set()))
