"""``unifocal compare``: per-case, per-class DSC / IoU / recall / precision and HD95 / NSD (on the voxel size of
the reference files) of several methods, paired Wilcoxon tests against a baseline, a Markdown and CSV table
like the paper's, and box plots. Cases are evaluated in parallel worker processes."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..metrics import CHALLENGES, DEFAULT_NSD_TOLERANCE

NAME = "compare"
HELP = (
    "Compare segmentation methods: per-case, per-class DSC, IoU, recall, precision, HD95 and NSD, paired "
    "Wilcoxon tests against a baseline, a Markdown/CSV table and box plots."
)

EPILOG = """\
METHOD is [NAME=]PATH, where PATH is a folder of predicted label files, an nnU-Net trainer output folder
(<results>/<Dataset>/<Trainer>__<Plans>__<config>: its fold_*/validation predictions), one fold_<k>
folder, or a dataset results folder (<results>/<Dataset>: every trainer in it). The reference is
--reference, else $nnUNet_preprocessed/<Dataset>/gt_segmentations for nnU-Net results folders.
Classes come from --labels/--regions/--challenge, else the dataset.json of the results (or next to the
reference), else the label values found in the reference. Label files: .nii.gz/.nii (nibabel), .nrrd/.mha
(SimpleITK), .png/.tif/.bmp (PIL), nnU-Net preprocessed .b2nd. HD95 and NSD (MONAI, the 'monai' extra) use
the voxel size in the reference headers (mm); formats without one are measured in voxels (or --spacing).
Challenge regions (--challenge): kits19 (kidney + tumour, tumour), kits23 (kidney + masses, masses,
tumour; KiTS21 too), brats-nnunet / brats2021 / brats2023 (WT, TC, ET in nnU-Net's, the 2018-2021 and
the 2023 label numbering).

examples:
  unifocal compare nnUNet_results/Dataset990_UnifocalSynthetic --baseline nnUNetTrainer
  unifocal compare CE=preds/ce UF=preds/unified --reference labelsTs --labels 1 2 -o comparison
  unifocal compare preds/a preds/b --reference labelsTs --regions 1,2,3 2,3 3
  unifocal compare DC=preds/dc UF=preds/uf -r kits23/labelsTs --challenge kits23 -j 8
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("methods", nargs="+", metavar="METHOD", help="[NAME=]PATH of one method's predictions")
    parser.add_argument("-r", "--reference", type=Path, help="folder of reference label files")
    parser.add_argument("-b", "--baseline", help="method the others are tested against (default: the first)")
    parser.add_argument("-o", "--output", type=Path, default=Path("unifocal_compare"),
                        help="folder for table.md, summary.csv, per_case.csv, boxplots.png (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace those files when they exist (nothing else in the folder is touched)")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--labels", type=int, nargs="+", metavar="LABEL", help="label values to evaluate")
    classes.add_argument("--regions", nargs="+", metavar="L1,L2,...",
                         help="regions to evaluate, each a comma-separated list of label values")
    classes.add_argument("--challenge", choices=sorted(CHALLENGES),
                         help="a challenge's regions, names and NSD tolerances (see below)")
    parser.add_argument("--names", nargs="+", help="class names, one per --labels/--regions entry")
    parser.add_argument("--dataset-json", type=Path, help="nnU-Net dataset.json defining the classes")
    parser.add_argument("--include-background", action="store_true", help="evaluate label 0 too")
    parser.add_argument("--ignore-label", type=int, help="reference value whose voxels are not counted")
    parser.add_argument("--empty", choices=("nan", "one"), default="nan",
                        help="value of a 0/0 metric, e.g. DSC of a class absent from prediction and reference: "
                             "nan (left out of means and tests; default) or one")
    parser.add_argument("--no-surface", action="store_true", help="skip HD95 and NSD (no MONAI needed)")
    parser.add_argument("--nsd-tolerance", type=_non_negative, nargs="+", metavar="MM",
                        help="NSD tolerance in mm, one for all classes or one per class (default: the challenge's "
                             f"when the classes are its regions, else {DEFAULT_NSD_TOLERANCE:g})")
    parser.add_argument("--hd95-one-empty", choices=("diagonal", "nan"), default="diagonal",
                        help="HD95 of a class in only one of prediction and reference: the image diagonal in mm "
                             "(BraTS's rule; default) or nan (left out of means and tests)")
    parser.add_argument("--spacing", type=_positive, nargs="+", metavar="MM",
                        help="voxel size per array axis for reference files that store none (.png, .tif, .npy, "
                             ".npz, .b2nd); default: distances in voxels")
    parser.add_argument("-j", "--jobs", type=_positive_int, default=None,
                        help="cases evaluated in parallel, one per process (default: the available cores)")
    parser.add_argument("--folds", nargs="+", help="folds of nnU-Net results folders to use (default: all)")
    parser.add_argument("--ending", help="file ending to use where a folder holds several (e.g. .nii.gz)")
    parser.add_argument("--no-plot", action="store_true", help="skip the box plots")
    parser.add_argument("--title", help="title of the box plot figure")


def _number(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"{text!r}: need a finite number {'>' if positive else '>='} 0")
    return value


def _positive(text: str) -> float:
    return _number(text, positive=True)


def _non_negative(text: str) -> float:
    return _number(text, positive=False)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least 1")
    return value


def _parse_regions(texts):
    regions = []
    for text in texts:
        try:
            values = tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"bad region {text!r}: expected comma-separated integers") from None
        if not values:
            raise ValueError(f"empty region {text!r}")
        regions.append(values)
    return regions


def _classes(args, sources, reference_files):
    from ..experiment_report import classes_from_dataset, default_class_names
    from ..io import find_dataset_json, iter_labels

    ignore_label = args.ignore_label
    if args.challenge:
        challenge = CHALLENGES[args.challenge]
        names = list(args.names) if args.names else list(challenge.names)
        if len(names) != len(challenge.regions):
            raise ValueError("--names needs one name per class")
        return names, list(challenge.regions), ignore_label, f"--challenge {args.challenge}: {challenge.title}"
    if args.labels or args.regions:
        classes = list(args.labels) if args.labels else _parse_regions(args.regions)
        names = list(args.names) if args.names else default_class_names(classes)
        if len(names) != len(classes):
            raise ValueError("--names needs one name per class")
        return names, classes, ignore_label, "command line"
    dataset_json = args.dataset_json
    if dataset_json is None:
        dataset_json = next((s.dataset_json for s in sources if s.dataset_json), None)
    if dataset_json is None and args.reference is not None:
        dataset_json = find_dataset_json(args.reference, levels=1)
    if dataset_json is not None:
        names, classes, found_ignore = classes_from_dataset(dataset_json, args.include_background)
        if args.names:
            if len(args.names) != len(classes):
                raise ValueError("--names needs one name per class")
            names = list(args.names)
        return names, classes, ignore_label if ignore_label is not None else found_ignore, str(dataset_json)
    values = set()
    for label in iter_labels(reference_files.values()):
        values.update(int(v) for v in set(label.ravel().tolist()) if v >= 0)
    values.discard(ignore_label)
    if not args.include_background:
        values.discard(0)
    if not values:
        raise ValueError("the reference holds no foreground label; give --labels")
    classes = sorted(values)
    names = list(args.names) if args.names else default_class_names(classes)
    if len(names) != len(classes):
        raise ValueError("--names needs one name per class")
    return names, classes, ignore_label, "label values found in the reference"


def _tolerances(args, classes):
    from ..metrics import challenge_of, default_tolerances

    if args.nsd_tolerance:
        if len(args.nsd_tolerance) not in (1, len(classes)):
            raise ValueError(f"--nsd-tolerance needs one value or one per class ({len(classes)}); "
                             f"got {len(args.nsd_tolerance)}")
        return list(args.nsd_tolerance) * (len(classes) // len(args.nsd_tolerance)), "--nsd-tolerance"
    key = challenge_of(classes)
    origin = f"{CHALLENGES[key].title}'s" if key else "default"
    return default_tolerances(classes), origin


def run(args: argparse.Namespace) -> int:
    from ..experiment_report import (
        available_cores, evaluate, progress_bar, report_files, resolve_method, write_report,
    )
    from ..io import list_label_files, split_ending
    from ..metrics import require_surface_metrics

    # Before any work: never replace a report this run did not write.
    if args.output.exists() and not args.output.is_dir():
        print(f"unifocal compare: -o {args.output} is a file, not a folder", file=sys.stderr)
        return 2
    existing = [p for p in report_files(args.output, plot=not args.no_plot) if p.exists()]
    if existing and not args.overwrite:
        print(f"unifocal compare: {existing[0]} exists; pass --overwrite to replace the report files in "
              f"{args.output}", file=sys.stderr)
        return 2
    if args.no_surface and (args.spacing or args.nsd_tolerance):
        print("unifocal compare: --spacing and --nsd-tolerance are for HD95/NSD, which --no-surface skips",
              file=sys.stderr)
        return 2
    if not args.no_surface:
        try:
            require_surface_metrics()
        except ImportError as error:
            print(f"unifocal compare: {error}, or pass --no-surface", file=sys.stderr)
            return 2
    try:
        sources = [s for spec in args.methods for s in resolve_method(spec, args.folds, args.ending)]
    except ValueError as error:
        print(f"unifocal compare: {error}", file=sys.stderr)
        return 2
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        print(f"unifocal compare: duplicate method names {duplicates}; use NAME=PATH", file=sys.stderr)
        return 2
    reference = args.reference
    if reference is None:
        suggested = {s.reference for s in sources if s.reference is not None}
        if len(suggested) != 1:
            print("unifocal compare: give --reference (the folder of reference label files)", file=sys.stderr)
            return 2
        reference = suggested.pop()
    # The reference folder may hold other files too (e.g. nnU-Net's .npz next to .nii.gz): prefer the
    # predictions' file ending, fall back to whatever single kind of label file the folder holds.
    endings = {split_ending(path.name)[1] for s in sources for path in s.files.values()}
    preferred = args.ending or (endings.pop() if len(endings) == 1 else None)
    try:
        try:
            reference_files = list_label_files(reference, preferred)
        except ValueError:
            if args.ending is not None or preferred is None:
                raise
            reference_files = list_label_files(reference)
    except ValueError as error:
        print(f"unifocal compare: {error}", file=sys.stderr)
        return 2
    baseline = args.baseline or names[0]
    if baseline not in names:
        print(f"unifocal compare: baseline {baseline!r} is not one of {names}", file=sys.stderr)
        return 2
    try:
        class_names, classes, ignore_label, origin = _classes(args, sources, reference_files)
        tolerances, tolerance_origin = _tolerances(args, classes)
    except ValueError as error:
        print(f"unifocal compare: {error}", file=sys.stderr)
        return 2
    jobs = args.jobs or available_cores()

    print(f"reference: {reference} ({len(reference_files)} files)")
    for source in sources:
        print(f"method {source.name}: {source.origin} ({len(source.files)} files)"
              + (f"; loss {source.settings}" if source.settings else ""))
    print(f"classes ({origin}): " + ", ".join(f"{n}={c}" for n, c in zip(class_names, classes)))
    if not args.no_surface:
        print(f"NSD tolerance ({tolerance_origin}): " + ", ".join(f"{n} {t:.3g}" for n, t in zip(class_names, tolerances)))
    try:
        evaluation = evaluate(
            {s.name: s.files for s in sources}, reference_files, classes, class_names, ignore_label,
            math.nan if args.empty == "nan" else 1.0, progress_bar(), surface=not args.no_surface,
            tolerances=tolerances, one_empty=math.nan if args.hd95_one_empty == "nan" else "diagonal",
            spacing=args.spacing, jobs=jobs,
        )
    except ValueError as error:
        print(f"unifocal compare: {error}", file=sys.stderr)
        return 2
    for method, missing in evaluation.skipped.items():
        if missing:
            print(f"warning: {method} has no prediction for {len(missing)} reference case(s), e.g. {missing[0]}; "
                  "they are left out for every method", file=sys.stderr)

    evaluation.methods = [baseline] + [n for n in names if n != baseline]
    evaluation.settings = {s.name: s.settings for s in sources if s.settings}
    report, written = write_report(evaluation, baseline, args.output, args.title, plot=not args.no_plot)
    print()
    print(report)
    print("written: " + ", ".join(str(p) for p in written))
    return 0
