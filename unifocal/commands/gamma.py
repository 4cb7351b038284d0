"""``unifocal gamma``: class frequencies of a dataset's training labels and the proposed per-class gamma and
rare set (:mod:`unifocal.gamma`), with the command lines that use them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

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
Classes and regions come from dataset.json when there is one (regions give one gamma per region).
The rule is documented in unifocal.gamma (python -c "import unifocal.gamma as g; help(g)").

examples:
  unifocal gamma $nnUNet_raw/Dataset990_UnifocalSynthetic
  unifocal gamma 990 --rule paper
  unifocal gamma path/to/labels --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("source", help="dataset folder, dataset id/name, or folder of label files")
    parser.add_argument("--rule", choices=("frequency", "paper"), default="frequency",
                        help="frequency: gamma from each class's imbalance (default); paper: 0.5 everywhere")
    parser.add_argument("--configuration", help="with a preprocessed folder: read that configuration's .b2nd labels")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans identifier for --configuration (default: %(default)s)")
    parser.add_argument("--num-classes", type=int, help="number of classes for a folder without dataset.json "
                        "(default: the largest label value found + 1)")
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


def _label_folder(source: Path, args) -> tuple[Path, dict | None, str]:
    from ..io import load_dataset_json

    dataset_json = source / "dataset.json"
    dataset = load_dataset_json(dataset_json) if dataset_json.is_file() else None
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
        return folder, dataset, f"preprocessed labels ({identifier})"
    if (source / "labelsTr").is_dir():
        return source / "labelsTr", dataset, "training labels (labelsTr)"
    if (source / "gt_segmentations").is_dir():
        return source / "gt_segmentations", dataset, "training labels (gt_segmentations)"
    parent_json = source.parent / "dataset.json"
    if dataset is None and parent_json.is_file():
        dataset = load_dataset_json(parent_json)
    return source, dataset, "label files"


def _count(files, dataset, args):
    """(names, frequencies, counts, multilabel, ignore_label, regions)."""
    import numpy as np

    from ..gamma import count_labels, count_regions
    from ..io import iter_labels, label_classes

    ignore_label = args.ignore_label
    if dataset is not None:
        names, classes, found_ignore = label_classes(dataset)
        if ignore_label is None:
            ignore_label = found_ignore
        regions = [c for c in classes if isinstance(c, tuple)]
        if regions:
            foreground = [(n, c) for n, c in zip(names, classes) if c != 0 and c != (0,)]
            counts, total = count_regions(iter_labels(files), [c for _, c in foreground], ignore_label)
            if total == 0:
                raise SystemExit("unifocal gamma: no labelled voxels were counted")
            return [n for n, _ in foreground], counts / total, counts, True, ignore_label, [c for _, c in foreground]
        order = np.argsort(classes)
        if [classes[i] for i in order] != list(range(len(classes))):
            raise SystemExit(f"unifocal gamma: dataset.json labels must be 0..K-1; got {classes}")
        counts = count_labels(iter_labels(files), len(classes), ignore_label)
        return [names[i] for i in order], counts / max(counts.sum(), 1), counts, False, ignore_label, None
    if args.num_classes:
        counts = count_labels(iter_labels(files), args.num_classes, ignore_label)
    else:
        # No class list: count each file with its own range and add up (one read per file).
        counts = np.zeros(0, dtype=np.int64)
        for label in iter_labels(files):
            valid = label[(label >= 0) & (label != (ignore_label if ignore_label is not None else -1))]
            size = int(valid.max()) + 1 if valid.size else 1
            file_counts = count_labels([label], max(size, counts.size, 2), ignore_label)
            counts = np.pad(counts, (0, file_counts.size - counts.size)) + file_counts
    names = [f"label {k}" for k in range(counts.size)]
    return names, counts / max(counts.sum(), 1), counts, False, ignore_label, None


def run(args: argparse.Namespace) -> int:
    from ..gamma import propose_gamma
    from ..io import list_label_files

    source = _resolve_source(args.source)
    folder, dataset, kind = _label_folder(source, args)
    try:
        files = list_label_files(folder, args.ending)
    except ValueError as error:
        print(f"unifocal gamma: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"scanning {len(files)} {kind} in {folder} ...", file=sys.stderr, flush=True)
    names, frequencies, counts, multilabel, ignore_label, regions = _count(files.values(), dataset, args)
    try:
        proposal = propose_gamma(frequencies, rule=args.rule, multilabel=multilabel)
    except ValueError as error:
        print(f"unifocal gamma: {error}", file=sys.stderr)
        return 2

    gamma_text = ",".join(f"{g:.3g}" for g in proposal.gamma)
    if args.json:
        out = proposal.to_dict()
        out.update(class_names=names, voxel_counts=[int(c) for c in counts], source=str(folder),
                   num_files=len(files), regions=[list(r) for r in regions] if regions else None,
                   ignore_label=ignore_label, UNIFOCAL_GAMMA=gamma_text)
        if not multilabel:
            out["UNIFOCAL_RARE_CLASSES"] = ",".join(str(c) for c in proposal.rare_classes)
        print(json.dumps(out, indent=2))
        return 0

    if multilabel:
        print(f"{len(files)} files, region mode: one binary problem per region "
              "(frequency = region voxels / counted voxels)")
    else:
        print(f"{len(files)} files, {int(counts.sum())} counted voxels")
    width = max(len(n) for n in names + ["class"])
    header = f"{'class':<{width}}  {'label(s)':<10}  {'voxels':>12}  {'frequency':>10}  {'gamma':>6}  role"
    print(header)
    print("-" * len(header))
    for index, name in enumerate(names):
        labels = ",".join(str(v) for v in regions[index]) if regions else str(index)
        if multilabel:
            role = "region (rare channel)"
        else:
            role = "rare" if index in proposal.rare_classes else "common"
        print(f"{name:<{width}}  {labels:<10}  {int(counts[index]):>12}  {proposal.frequencies[index]:>10.5f}  "
              f"{proposal.gamma[index]:>6.3f}  {role}")
    print(f"rule: {proposal.rule} (see unifocal.gamma)")
    if not multilabel:
        print(f"rare classes: {list(proposal.rare_classes)}; common classes: {list(proposal.common_classes)}")
    env = f"UNIFOCAL_GAMMA={gamma_text}"
    if not multilabel:
        env += f" UNIFOCAL_RARE_CLASSES={','.join(str(c) for c in proposal.rare_classes)}"
    dataset_arg = source.name if (source / "dataset.json").is_file() else "DATASET"
    print()
    print("nnU-Net (the unifocal trainers read these environment variables):")
    print('  export nnUNet_extTrainer="$(unifocal nnunet-path)"')
    print(f"  {env} nnUNetv2_train {dataset_arg} CONFIGURATION FOLD -tr UnifiedFocalTrainer")
    print("  (or UNIFOCAL_GAMMA=auto: the trainer derives the same rule from its fold's training cases)")
    print("Python:")
    loss_kwargs = proposal.loss_kwargs()
    loss_kwargs["gamma"] = [float(f"{g:.3g}") for g in loss_kwargs["gamma"]]
    kwargs = ", ".join(f"{k}={v}" for k, v in loss_kwargs.items())
    print(f"  UnifiedFocalLoss({kwargs})")
    print("MONAI bundles (command-line overrides of the loss config):")
    overrides = " ".join(f'--loss#{k} "{v}"' for k, v in loss_kwargs.items() if k != "multilabel")
    print(f"  python -m monai.bundle run --config_file configs/train.json {overrides}")
    return 0
