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
  a KiTS19/21/23 or BraTS 2021/2023+ download as it comes (case_*/segmentation.nii.gz, in the folder or in
    its data/ or dataset/; BraTS2021_*/*_seg.nii.gz; BraTS-GLI-*/*-seg.nii.gz): BraTS counts its regions
    TC, WT, ET (the BraTS bundle's channel order);
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
  unifocal gamma /data/kits23/dataset
  unifocal gamma /data/ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData
  unifocal gamma masks --label-threshold 127
"""


# Label tables longer than this are cut in the listing of label values without a proposal.
LISTED_VALUES = 30
# The BraTS bundle's channel order: its gamma list follows it.
BRATS_CHANNELS = ("TC", "WT", "ET")


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


@dataclass
class LabelSource:
    """The label files to count (by case) and what describes their classes."""

    files: dict
    folder: Path
    kind: str  # what the files are, for the progress line
    dataset: Optional[dict] = None  # dataset.json's content
    dataset_json: Optional[Path] = None
    regions: Optional[list] = None  # [(name, label values)] of a challenge download counted in region mode


def _preprocessed(source: Path, args) -> tuple[Path, str]:
    """The folder of a configuration's resampled labels in an nnU-Net preprocessed dataset."""
    from ..io import load_dataset_json

    plans_file = source / f"{args.plans}.json"
    identifier = f"{args.plans}_{args.configuration}"
    if plans_file.is_file():
        config = load_dataset_json(plans_file).get("configurations", {}).get(args.configuration)
        if config is None:
            raise SystemExit(f"unifocal gamma: {plans_file} has no configuration {args.configuration!r}")
        identifier = config.get("data_identifier", identifier)
    folder = source / identifier
    if not folder.is_dir():
        raise SystemExit(f"unifocal gamma: {folder}: no such folder (run nnUNetv2_plan_and_preprocess?)")
    return folder, f"preprocessed labels ({identifier})"


def _download(source: Path) -> Optional[LabelSource]:
    """A KiTS or BraTS download as it comes: its segmentation files; BraTS in region mode, with the regions
    in the order of the BraTS bundle's channels (TC, WT, ET) and the year's enhancing-tumour label."""
    from ..datalist import DOWNLOADS, download_labels
    from ..metrics import CHALLENGES

    found = download_labels(source)
    if found is None:
        return None
    layout, files = found
    regions = None
    if layout in CHALLENGES:  # the BraTS downloads: their challenge's regions
        by_name = dict(zip(CHALLENGES[layout].names, CHALLENGES[layout].regions))
        regions = [(name, by_name[name]) for name in BRATS_CHANNELS]
    return LabelSource(files, source, f"segmentations of a {DOWNLOADS[layout].title} download", regions=regions)


def _label_source(source: Path, args) -> LabelSource:
    """The label files of ``source`` and its dataset.json (or a challenge download's regions)."""
    from ..io import list_label_files, load_dataset_json

    own_json = source / "dataset.json"
    dataset_json = own_json if own_json.is_file() else None
    parent_json = source.parent / "dataset.json"
    is_dataset = args.configuration or (source / "labelsTr").is_dir() or (source / "gt_segmentations").is_dir()
    if dataset_json is None and not is_dataset:
        if parent_json.is_file():
            dataset_json = parent_json  # a label folder inside a dataset (labelsTs, gt_segmentations)
        elif (download := _download(source)) is not None:
            return download
    dataset = load_dataset_json(dataset_json) if dataset_json is not None else None
    if args.configuration:
        folder, kind = _preprocessed(source, args)
    elif (source / "labelsTr").is_dir():
        folder, kind = source / "labelsTr", "training labels (labelsTr)"
    elif (source / "gt_segmentations").is_dir():
        folder, kind = source / "gt_segmentations", "training labels (gt_segmentations)"
    else:
        folder, kind = source, "label files"
    return LabelSource(list_label_files(folder, args.ending), folder, kind, dataset, dataset_json)


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


def _classes(source: LabelSource, args) -> tuple[Optional[list], Optional[list], Optional[int]]:
    """(class names or None, regions [(name, labels)] or None, ignore label) from dataset.json, a challenge
    download or --num-classes."""
    import numpy as np

    from ..io import label_classes

    ignore_label = args.ignore_label
    if source.dataset is None:
        if source.regions is not None and (args.label_threshold is not None or args.num_classes is not None):
            raise SystemExit("unifocal gamma: a BraTS download is counted by its regions: --label-threshold and "
                             "--num-classes apply to label maps only")
        names = [f"label {k}" for k in range(args.num_classes)] if args.num_classes is not None else None
        return names, source.regions, ignore_label
    names, classes, found_ignore = label_classes(source.dataset, source.dataset_json)
    ignore_label = found_ignore if ignore_label is None else ignore_label
    if any(isinstance(c, tuple) for c in classes):
        if args.label_threshold is not None or args.num_classes is not None:
            raise SystemExit(f"unifocal gamma: {source.dataset_json} defines regions: --label-threshold and "
                             "--num-classes apply to label maps only")
        return None, [(n, c) for n, c in zip(names, classes) if isinstance(c, tuple) and c != (0,)], ignore_label
    order = np.argsort(classes)
    if [classes[i] for i in order] != list(range(len(classes))):
        raise SystemExit(f"unifocal gamma: {source.dataset_json}: labels must be 0..K-1; got {classes}")
    if args.num_classes is not None and args.num_classes != len(names):
        raise SystemExit(f"unifocal gamma: --num-classes {args.num_classes} contradicts {source.dataset_json} "
                         f"({len(names)} classes)")
    return [names[i] for i in order], None, ignore_label


def _count(source: LabelSource, args) -> Counts:
    names, regions, ignore_label = _classes(source, args)
    paths = list(source.files.values())
    if regions:
        return _count_regions(paths, regions, ignore_label)
    if args.label_threshold is not None:
        if names is not None and len(names) != 2:
            raise SystemExit(f"unifocal gamma: --label-threshold reads binary masks, but {source.dataset_json} "
                             f"defines {len(names)} classes")
        return _count_above(paths, names, ignore_label, args.label_threshold)
    origin = str(source.dataset_json) if source.dataset is not None else "--num-classes"
    return _count_values(paths, names, ignore_label, origin)


def _count_regions(paths: list, regions: list, ignore_label: Optional[int]) -> Counts:
    from ..gamma import count_regions
    from ..io import iter_labels

    counts, total = count_regions(iter_labels(paths), [labels for _, labels in regions], ignore_label)
    if total == 0:
        raise SystemExit("unifocal gamma: no labelled voxels were counted")
    counted = Counts([name for name, _ in regions], [",".join(map(str, labels)) for _, labels in regions], counts,
                     True, [labels for _, labels in regions], ignore_label, total)
    _absent_warnings(counted, len(paths))
    return counted


def _count_above(paths: list, names: Optional[list], ignore_label: Optional[int], threshold: float) -> Counts:
    """Binary masks: foreground where the value is above ``threshold``."""
    import numpy as np

    from ..io import iter_labels

    counts = np.zeros(2, dtype=np.int64)
    for label in iter_labels(paths):
        values = label[label >= 0] if ignore_label is None else label[(label >= 0) & (label != ignore_label)]
        above = int(np.count_nonzero(values > threshold))
        counts += (values.size - above, above)
    counted = Counts(names or ["background", "foreground"], [f"<={threshold:g}", f">{threshold:g}"], counts,
                     ignore_label=ignore_label, total=int(counts.sum()))
    _absent_warnings(counted, len(paths))
    return counted


def _count_values(paths: list, names: Optional[list], ignore_label: Optional[int], origin: str) -> Counts:
    """Label maps: one class per label value 0..K-1 (K from ``names``, else from the values found)."""
    import numpy as np

    from ..gamma import count_label_values
    from ..io import iter_labels

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


def _print_json(counted: Counts, source: LabelSource, proposal) -> None:
    """The proposal (or, without one, the counted values) as JSON."""
    common = {"source": str(source.folder), "num_files": len(source.files), "ignore_label": counted.ignore_label,
              "warnings": counted.warnings}
    if proposal is None:
        print(json.dumps({**common, "label_values": counted.labels, "voxel_counts": [int(c) for c in counted.counts],
                          "gamma": None}, indent=2))
        return
    out = proposal.to_dict()
    out.update(class_names=counted.names, label_values=counted.labels, voxel_counts=[int(c) for c in counted.counts],
               regions=[list(r) for r in counted.regions] if counted.regions else None,
               UNIFOCAL_GAMMA=_gamma_text(proposal), **common)
    if not counted.multilabel:
        out["UNIFOCAL_RARE_CLASSES"] = ",".join(str(c) for c in proposal.rare_classes)
    print(json.dumps(out, indent=2))


def _gamma_text(proposal) -> str:
    return ",".join(f"{g:.3g}" for g in proposal.gamma)


def _print_table(counted: Counts, proposal, num_files: int) -> None:
    if counted.multilabel:
        print(f"{num_files} files, region mode: one binary problem per region "
              "(frequency = region voxels / counted voxels)")
    else:
        print(f"{num_files} files, {counted.total} counted voxels")
    width = max(len(n) for n in counted.names + ["class"])
    header = f"{'class':<{width}}  {'label(s)':<10}  {'voxels':>12}  {'frequency':>10}  {'gamma':>6}  role"
    print(header)
    print("-" * len(header))
    for index, name in enumerate(counted.names):
        if counted.multilabel:
            role = "region (rare channel)"
        else:
            role = "rare" if index in proposal.rare_classes else "common"
        print(f"{name:<{width}}  {counted.labels[index]:<10}  {int(counted.counts[index]):>12}  "
              f"{proposal.frequencies[index]:>10.5f}  {proposal.gamma[index]:>6.3f}  {role}")
    print(f"rule: {proposal.rule} (see unifocal.gamma)")
    if not counted.multilabel:
        print(f"rare classes: {list(proposal.rare_classes)}; common classes: {list(proposal.common_classes)}")


def _print_commands(counted: Counts, proposal, source: Path) -> None:
    """The nnU-Net trainer, the Python call and the MONAI bundle overrides that use the proposal."""
    from nnunet_trainers.config import Settings
    from nnunet_trainers.variants import variant_name

    gamma_text = _gamma_text(proposal)
    rare = None if counted.multilabel else tuple(proposal.rare_classes)
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


def run(args: argparse.Namespace) -> int:
    from ..gamma import propose_gamma

    if args.num_classes is not None and args.num_classes < 2:
        raise SystemExit(f"unifocal gamma: --num-classes must be >= 2; got {args.num_classes}")
    source = _resolve_source(args.source)
    labels = _label_source(source, args)
    if not args.json:
        print(f"scanning {len(labels.files)} {labels.kind} in {labels.folder} ...", file=sys.stderr, flush=True)
    counted = _count(labels, args)
    for warning in counted.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not counted.proposable:
        if args.json:
            _print_json(counted, labels, None)
        else:
            _print_values(counted)
        return 1
    proposal = propose_gamma(counted.counts / max(counted.total, 1), rule=args.rule, multilabel=counted.multilabel)
    if args.json:
        _print_json(counted, labels, proposal)
        return 0
    _print_table(counted, proposal, len(labels.files))
    _print_commands(counted, proposal, source)
    return 0
