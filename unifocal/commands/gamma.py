"""``unifocal gamma``: class frequencies of a dataset's training labels and the proposed per-class gamma and
rare set (:mod:`unifocal.gamma`), with the command lines that use them."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import numpy as np

NAME = "gamma"
HELP = (
    "Scan a dataset's training labels, print class frequencies and the proposed per-class gamma and rare set, "
    "with the command line to use them."
)

EPILOG = """\
SOURCE is one of:
  an nnU-Net raw dataset folder (dataset.json + labelsTr/), or its id/name when $nnUNet_raw is set;
  an nnU-Net preprocessed dataset folder (dataset.json + gt_segmentations/; with --configuration, the
    resampled <plans>_<configuration>/*_seg.b2nd the network trains on);
  a folder of label files (.nii.gz, .nrrd, .mha, .png, .tif, .b2nd, .npy).
Classes and regions come from dataset.json when there is one (regions give one gamma per region),
else from --num-classes, else from the label values that occur, which must be 0..K-1 (gaps and stray
values are reported, with no proposal); masks holding exactly the values 0 and 255 are read as binary
masks (255 = foreground), --label-threshold T reads any mask as binary (foreground above T).
The rule is documented in unifocal.gamma (python -c "import unifocal.gamma as g; help(g)").

examples:
  unifocal gamma $nnUNet_raw/Dataset990_UnifocalSynthetic
  unifocal gamma 990 --rule paper
  unifocal gamma path/to/labels --json
  unifocal gamma masks --label-threshold 127
"""


# Label tables longer than this are cut in the listing of label values without a proposal.
LISTED_VALUES = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("source", help="dataset folder, dataset id/name, or folder of label files")
    parser.add_argument("--rule", choices=("frequency", "paper"), default="frequency",
                        help="frequency: gamma from each class's imbalance (default); paper: 0.5 everywhere")
    parser.add_argument("--configuration", help="with a preprocessed folder: read that configuration's .b2nd labels")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans identifier for --configuration (default: %(default)s)")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--num-classes", type=int, help="number of classes K for a folder without dataset.json: "
                         "labels are 0..K-1, some may be absent (default: the label values that occur)")
    classes.add_argument("--label-threshold", type=float, metavar="T",
                         help="binary masks: foreground (class 1) where the value is above T, background elsewhere, "
                         "as the 2D bundle's label_threshold (127 for 0/255 masks)")
    parser.add_argument("--ignore-label", type=int, help="label value not counted (default: dataset.json's 'ignore')")
    parser.add_argument("--ending", help="file ending to use where the folder holds several")
    parser.add_argument("--json", action="store_true", help="print the proposal as JSON only")


def _resolve_source(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        return path
    raw = os.environ.get("nnUNet_raw")
    if raw and Path(raw).is_dir():
        wanted = text
        if text.isdigit():
            wanted = f"Dataset{int(text):03d}_"
        for candidate in sorted(Path(raw).iterdir()):
            if candidate.is_dir() and (candidate.name == text or candidate.name.startswith(wanted)):
                return candidate
    raise SystemExit(f"unifocal gamma: {text}: no such folder (nor a dataset in $nnUNet_raw)")


def _label_folder(source: Path, args) -> tuple[Path, Optional[dict], Optional[Path], str]:
    """(folder of label files, dataset.json content or None, its path, what the files are)."""
    from ..io import load_dataset_json

    own_json = source / "dataset.json"
    dataset_json = own_json if own_json.is_file() else None
    parent_json = source.parent / "dataset.json"
    is_dataset = args.configuration or (source / "labelsTr").is_dir() or (source / "gt_segmentations").is_dir()
    if dataset_json is None and not is_dataset and parent_json.is_file():
        dataset_json = parent_json  # a label folder inside a dataset (labelsTs, gt_segmentations)
    dataset = load_dataset_json(dataset_json) if dataset_json is not None else None
    if args.configuration:
        plans_file = source / f"{args.plans}.json"
        identifier = f"{args.plans}_{args.configuration}"
        if plans_file.is_file():
            plans = load_dataset_json(plans_file)
            config = plans.get("configurations", {}).get(args.configuration)
            if config is None:
                raise SystemExit(f"unifocal gamma: {plans_file} has no configuration {args.configuration!r}")
            identifier = config.get("data_identifier", identifier)
        folder = source / identifier
        if not folder.is_dir():
            raise SystemExit(f"unifocal gamma: {folder}: no such folder (run nnUNetv2_plan_and_preprocess?)")
        return folder, dataset, dataset_json, f"preprocessed labels ({identifier})"
    if (source / "labelsTr").is_dir():
        return source / "labelsTr", dataset, dataset_json, "training labels (labelsTr)"
    if (source / "gt_segmentations").is_dir():
        return source / "gt_segmentations", dataset, dataset_json, "training labels (gt_segmentations)"
    return source, dataset, dataset_json, "label files"


@dataclass
class Counts:
    """What was counted: one entry per class (per region in region mode)."""

    names: list
    labels: list  # the label value(s) of each class, as printed
    counts: "np.ndarray"  # voxel counts
    multilabel: bool = False
    regions: Optional[list] = None
    ignore_label: Optional[int] = None
    total: int = 0  # counted voxels (the frequencies' denominator)
    warnings: list = field(default_factory=list)
    proposable: bool = True


def _absent_warnings(counted: Counts, files: int) -> None:
    """Warn about classes that never occur; without any foreground voxel there is nothing to propose."""
    foreground = range(0 if counted.multilabel else 1, len(counted.names))
    absent = [k for k in foreground if counted.counts[k] == 0]
    if len(absent) == len(foreground):
        what = "region" if counted.multilabel else "foreground class"
        counted.warnings.append(f"no {what} occurs in the {files} files (every counted voxel is background): "
                                "nothing to propose a gamma for; is this the right folder?")
        counted.proposable = False
        return
    for k in absent:
        counted.warnings.append(f"class {counted.names[k]!r} (label {counted.labels[k]}) does not occur in the {files} "
                                "files: the rule gives it the cap 0.9, which no data supports")


def _count(files: dict, dataset: Optional[dict], dataset_json: Optional[Path], args) -> Counts:
    import numpy as np

    from ..gamma import count_label_values, count_regions
    from ..io import iter_labels, label_classes

    paths = list(files.values())
    ignore_label = args.ignore_label
    names = None
    if dataset is not None:
        names, classes, found_ignore = label_classes(dataset, dataset_json)
        if ignore_label is None:
            ignore_label = found_ignore
        regions = [c for c in classes if isinstance(c, tuple)]
        if regions:
            if args.label_threshold is not None or args.num_classes is not None:
                raise SystemExit(f"unifocal gamma: {dataset_json} defines regions: --label-threshold and "
                                 "--num-classes apply to label maps only")
            foreground = [(n, c) for n, c in zip(names, classes) if c != (0,)]
            counts, total = count_regions(iter_labels(paths), [c for _, c in foreground], ignore_label)
            if total == 0:
                raise SystemExit("unifocal gamma: no labelled voxels were counted")
            counted = Counts([n for n, _ in foreground], [",".join(map(str, c)) for _, c in foreground], counts,
                             True, [c for _, c in foreground], ignore_label, total)
            _absent_warnings(counted, len(paths))
            return counted
        order = np.argsort(classes)
        if [classes[i] for i in order] != list(range(len(classes))):
            raise SystemExit(f"unifocal gamma: {dataset_json}: labels must be 0..K-1; got {classes}")
        names = [names[i] for i in order]
        if args.num_classes is not None and args.num_classes != len(names):
            raise SystemExit(f"unifocal gamma: --num-classes {args.num_classes} contradicts {dataset_json} "
                             f"({len(names)} classes)")
    elif args.num_classes is not None:
        names = [f"label {k}" for k in range(args.num_classes)]

    if args.label_threshold is not None:
        if names is not None and len(names) != 2:
            raise SystemExit(f"unifocal gamma: --label-threshold reads binary masks, but {dataset_json} defines "
                             f"{len(names)} classes")
        threshold = args.label_threshold
        counts = np.zeros(2, dtype=np.int64)
        for label in iter_labels(paths):
            values = label[label >= 0] if ignore_label is None else label[(label >= 0) & (label != ignore_label)]
            above = int(np.count_nonzero(values > threshold))
            counts += (values.size - above, above)
        counted = Counts(names or ["background", "foreground"], [f"<={threshold:g}", f">{threshold:g}"], counts,
                         ignore_label=ignore_label, total=int(counts.sum()))
        _absent_warnings(counted, len(paths))
        return counted

    found = count_label_values(iter_labels(paths), ignore_label)
    if not found.counts:
        raise SystemExit("unifocal gamma: no labelled voxels were counted")
    values = found.values
    if values == [0, 255] and (names is None or len(names) == 2):
        # Binary masks stored as 0/255 (the 2D bundle's): only this exact value set in a binary context.
        counts = np.array([found.counts[0], found.counts[255]], dtype=np.int64)
        counted = Counts(names or ["background", "foreground"], ["0", "255"], counts, ignore_label=ignore_label,
                         total=int(counts.sum()))
        counted.warnings.append("the label values are exactly 0 and 255: read as binary masks, 255 = foreground "
                                "(class 1), as the 2D bundle reads them; --label-threshold T reads other masks so")
        return counted
    if names is not None:
        outside = [v for v in values if v >= len(names)]
        if outside:
            origin = str(dataset_json) if dataset is not None else "--num-classes"
            hint = "--label-threshold T reads binary masks" if len(names) == 2 else \
                f"--ignore-label {outside[0]} leaves it out of the count"
            raise SystemExit(f"unifocal gamma: {paths[found.first_seen[outside[0]]]}: label value {outside[0]} is "
                             f"not a class ({origin}: 0..{len(names) - 1}); {hint}")
    elif values == list(range(len(values))):
        names = [f"label {k}" for k in values]
    else:
        return _not_consecutive(found, paths, ignore_label)
    counts = found.dense(len(names))
    counted = Counts(names, [str(k) for k in range(len(names))], counts, ignore_label=ignore_label,
                     total=int(counts.sum()))
    _absent_warnings(counted, len(paths))
    return counted


def _not_consecutive(found, paths: list, ignore_label: Optional[int]) -> Counts:
    """Label values that are not 0..K-1: report them, propose nothing (the loss and nnU-Net need 0..K-1)."""
    import numpy as np

    values = found.values
    if values == [0]:
        counted = Counts(["label 0"], ["0"], np.array([found.counts[0]]), ignore_label=ignore_label,
                         total=found.counts[0], proposable=False)
        counted.warnings.append(f"only label 0 occurs in the {len(paths)} files (every counted voxel is background): "
                                "nothing to propose a gamma for; is this the right folder?")
        return counted
    present = set(values)
    first_gap = next(k for k in range(values[-1] + 1) if k not in present)
    missing = values[-1] + 1 - len(values)
    strays = [v for v in values if v > first_gap]
    counted = Counts([f"label {v}" for v in values], [str(v) for v in values],
                     np.array([found.counts[v] for v in values], dtype=np.int64), ignore_label=ignore_label,
                     total=sum(found.counts.values()), proposable=False)
    counted.warnings.append(
        f"the label values are not 0..K-1: {missing} of the values 0..{values[-1]} never occur (the first is "
        f"{first_gap}); the loss and nnU-Net number classes 0..K-1, so nothing is proposed")
    for value in strays[:3]:
        counted.warnings.append(f"label value {value}: {found.counts[value]} voxels, first in "
                                f"{paths[found.first_seen[value]]}")
    hints = []
    if len(strays) == 1:
        hints.append(f"--ignore-label {strays[0]} leaves a stray value out")
    hints.append("--num-classes K if the classes are 0..K-1 and some do not occur here")
    if 255 in present:
        hints.append("--label-threshold T for binary masks")
    counted.warnings.append("; ".join(hints))
    return counted


def _print_values(counted: Counts) -> None:
    """The counted label values as a table (no proposal)."""
    rows = list(zip(counted.labels, counted.counts))
    print(f"{counted.total} counted voxels")
    print(f"{'label':>10}  {'voxels':>12}  {'frequency':>10}")
    for label, count in rows[:LISTED_VALUES]:
        print(f"{label:>10}  {int(count):>12}  {count / max(counted.total, 1):>10.5f}")
    if len(rows) > LISTED_VALUES:
        print(f"... and {len(rows) - LISTED_VALUES} more label values")


def run(args: argparse.Namespace) -> int:
    from ..gamma import propose_gamma
    from ..io import list_label_files

    if args.num_classes is not None and args.num_classes < 2:
        raise SystemExit(f"unifocal gamma: --num-classes must be >= 2; got {args.num_classes}")
    source = _resolve_source(args.source)
    folder, dataset, dataset_json, kind = _label_folder(source, args)
    try:
        files = list_label_files(folder, args.ending)
    except ValueError as error:
        print(f"unifocal gamma: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"scanning {len(files)} {kind} in {folder} ...", file=sys.stderr, flush=True)
    counted = _count(files, dataset, dataset_json, args)
    for warning in counted.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not counted.proposable:
        if args.json:
            print(json.dumps({"source": str(folder), "num_files": len(files), "label_values": counted.labels,
                              "voxel_counts": [int(c) for c in counted.counts], "ignore_label": counted.ignore_label,
                              "gamma": None, "warnings": counted.warnings}, indent=2))
        else:
            _print_values(counted)
        return 1
    frequencies = counted.counts / max(counted.total, 1)
    try:
        proposal = propose_gamma(frequencies, rule=args.rule, multilabel=counted.multilabel)
    except ValueError as error:
        print(f"unifocal gamma: {error}", file=sys.stderr)
        return 2
    multilabel, names, counts, regions = counted.multilabel, counted.names, counted.counts, counted.regions

    gamma_text = ",".join(f"{g:.3g}" for g in proposal.gamma)
    if args.json:
        out = proposal.to_dict()
        out.update(class_names=names, label_values=counted.labels, voxel_counts=[int(c) for c in counts],
                   source=str(folder), num_files=len(files), regions=[list(r) for r in regions] if regions else None,
                   ignore_label=counted.ignore_label, UNIFOCAL_GAMMA=gamma_text, warnings=counted.warnings)
        if not multilabel:
            out["UNIFOCAL_RARE_CLASSES"] = ",".join(str(c) for c in proposal.rare_classes)
        print(json.dumps(out, indent=2))
        return 0

    if multilabel:
        print(f"{len(files)} files, region mode: one binary problem per region "
              "(frequency = region voxels / counted voxels)")
    else:
        print(f"{len(files)} files, {counted.total} counted voxels")
    width = max(len(n) for n in names + ["class"])
    header = f"{'class':<{width}}  {'label(s)':<10}  {'voxels':>12}  {'frequency':>10}  {'gamma':>6}  role"
    print(header)
    print("-" * len(header))
    for index, name in enumerate(names):
        if multilabel:
            role = "region (rare channel)"
        else:
            role = "rare" if index in proposal.rare_classes else "common"
        print(f"{name:<{width}}  {counted.labels[index]:<10}  {int(counts[index]):>12}  "
              f"{proposal.frequencies[index]:>10.5f}  {proposal.gamma[index]:>6.3f}  {role}")
    print(f"rule: {proposal.rule} (see unifocal.gamma)")
    if not multilabel:
        print(f"rare classes: {list(proposal.rare_classes)}; common classes: {list(proposal.common_classes)}")
    from nnunet_trainers.config import Settings
    from nnunet_trainers.variants import variant_name

    rare = None if multilabel else tuple(proposal.rare_classes)
    trainer = variant_name("UnifiedFocalTrainer", Settings(gamma=tuple(float(g) for g in gamma_text.split(",")),
                                                           rare_classes=rare))
    dataset_arg = shlex.quote(source.name) if (source / "dataset.json").is_file() else "DATASET"
    print()
    print("nnU-Net (a trainer name that carries the settings gets its own results folder):")
    print('  export nnUNet_extTrainer="$(unifocal nnunet-path)"')
    print(f"  nnUNetv2_train {dataset_arg} CONFIGURATION FOLD -tr {trainer}")
    print("  (or -tr UnifiedFocalTrainer_auto: the trainer derives the same rule from its fold's training cases)")
    print("Python:")
    loss_kwargs = proposal.loss_kwargs()
    loss_kwargs["gamma"] = [float(f"{g:.3g}") for g in loss_kwargs["gamma"]]
    kwargs = ", ".join(f"{k}={v}" for k, v in loss_kwargs.items())
    print(f"  UnifiedFocalLoss({kwargs})")
    print("MONAI bundles (command-line overrides of the loss config):")
    overrides = " ".join(f"--loss#{k} {shlex.quote(str(v))}" for k, v in loss_kwargs.items() if k != "multilabel")
    print(f"  python -m monai.bundle run --config_file configs/train.json {overrides}")
    return 0
