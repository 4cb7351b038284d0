"""``unifocal compare``: per-case, per-class DSC / IoU / recall / precision and HD95 / NSD (on the voxel size of
the reference files), and the lesion-wise metrics of BraTS, of several methods; paired Wilcoxon tests against a
baseline, a Markdown and CSV table like the paper's, and box plots. Cases are evaluated in parallel worker
processes (:mod:`unifocal.report`)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..metrics import CHALLENGES, DEFAULT_NSD_TOLERANCE, NSD_SURFACES
from ..report.discovery import CASE_SELECTIONS
from ..validate import option_number

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
Challenge regions and rules (--challenge): kits19 (kidney + tumour, tumour), kits23 (kidney + masses, masses,
tumour; KiTS21 too: surface Dice weighted by area, a region absent from both files scores 1),
brats-nnunet / brats2021 / brats2023 (WT, TC, ET in nnU-Net's, the 2018-2021 and the 2023 label numbering),
brats-gli (BraTS 2024/2025 glioma: ET, NETC, SNFH, RC, TC, WT); the BraTS ones add lesion-wise DSC, NSD,
HD95 and F1 (panoptica, the 'metrics' extra). Predictions are compared with the reference in world space:
a prediction stored with flipped or permuted axes is reoriented, any other difference in geometry is an error.

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
                        help="report folder: table.md, summary.csv, per_case.csv, boxplots.png (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report in the output folder (a folder holding other files is refused)")
    parser.add_argument("--cases", choices=CASE_SELECTIONS, default=None,
                        help="all: the reference and every method hold the same cases (default for folders of "
                             "files); predicted: the predicted cases, each with a reference (default for nnU-Net "
                             "trainer folders, whose folds predict part of gt_segmentations); common: the cases "
                             "all share")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument("--labels", type=int, nargs="+", metavar="LABEL", help="label values to evaluate")
    classes.add_argument("--regions", nargs="+", metavar="L1,L2,...",
                         help="regions to evaluate, each a comma-separated list of label values")
    classes.add_argument("--challenge", choices=sorted(CHALLENGES),
                         help="a challenge's regions, names, NSD tolerances and rules (see below)")
    parser.add_argument("--names", nargs="+", help="class names, one per --labels/--regions entry")
    parser.add_argument("--dataset-json", type=Path, help="nnU-Net dataset.json defining the classes")
    parser.add_argument("--include-background", action="store_true", help="evaluate label 0 too")
    parser.add_argument("--ignore-label", type=int, help="reference value whose voxels are not counted")
    parser.add_argument("--empty", choices=("nan", "one"),
                        help="value of a 0/0 metric, e.g. DSC of a class absent from prediction and reference: "
                             "nan (left out of means and tests) or one (default: the challenge's rule, else nan)")
    parser.add_argument("--no-surface", action="store_true", help="skip HD95 and NSD (no MONAI needed)")
    parser.add_argument("--nsd-tolerance", type=option_number(0.0), nargs="+", metavar="MM",
                        help="NSD tolerance in mm, one for all classes or one per class (default: the challenge's "
                             f"when the classes are its regions, else {DEFAULT_NSD_TOLERANCE:g})")
    parser.add_argument("--nsd-surface", choices=NSD_SURFACES,
                        help="NSD counts boundary voxels (voxels) or weighs surface elements by area (area; "
                             "default: area for the KiTS21/23 regions, else voxels)")
    parser.add_argument("--hd95-one-empty", choices=("diagonal", "nan"),
                        help="HD95 of a class in only one of prediction and reference: the image diagonal in mm "
                             "or nan (left out of means and tests); default: the challenge's rule (BraTS: 373), "
                             "else diagonal")
    parser.add_argument("--spacing", type=option_number(0.0, low_open=True), nargs="+", metavar="MM",
                        help="voxel size per array axis for reference files that store none (.png, .tif, .npy, "
                             ".npz, .b2nd); default: distances in voxels")
    parser.add_argument("-j", "--jobs", type=option_number(1, integer=True), default=None,
                        help="cases evaluated in parallel, one per process (default: the available cores)")
    parser.add_argument("--folds", nargs="+", help="folds of nnU-Net results folders to use (default: all)")
    parser.add_argument("--ending", help="file ending to use where a folder holds several (e.g. .nii.gz)")
    parser.add_argument("--no-plot", action="store_true", help="skip the box plots")
    parser.add_argument("--title", help="title of the box plot figure")


def _parse_regions(texts):
    regions = []
    for text in texts:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise ValueError(f"--regions: bad region {text!r}: expected comma-separated integers") from None
        regions.append(values)
    return regions


def _named(args, classes, default_names):
    names = list(args.names) if args.names else list(default_names)
    if len(names) != len(classes):
        raise ValueError(f"--names needs one name per class ({len(classes)}); got {len(names)}")
    return names


def _classes(args, sources, reference_files):
    """Class names, classes, ignore label, where they come from, and the label values files may hold (None:
    not checked; from a dataset.json or a challenge, whose labels are all known)."""
    from ..io import find_dataset_json, iter_labels
    from ..report import classes_from_dataset, dataset_label_values, default_class_names

    if args.challenge:
        challenge = CHALLENGES[args.challenge]
        names = _named(args, challenge.regions, challenge.names)
        return names, list(challenge.regions), args.ignore_label, f"--challenge {args.challenge}: {challenge.title}", None
    if args.labels or args.regions:
        classes = list(args.labels) if args.labels else _parse_regions(args.regions)
        return _named(args, classes, default_class_names(classes)), classes, args.ignore_label, "command line", None
    dataset_json = args.dataset_json or next((s.dataset_json for s in sources if s.dataset_json), None)
    if dataset_json is None and args.reference is not None:
        dataset_json = find_dataset_json(args.reference, levels=1)
    if dataset_json is not None:
        names, classes, found_ignore = classes_from_dataset(dataset_json, args.include_background)
        ignore_label = args.ignore_label if args.ignore_label is not None else found_ignore
        return (_named(args, classes, names), classes, ignore_label, str(dataset_json),
                dataset_label_values(dataset_json))
    values = set()
    for label in iter_labels(reference_files.values()):
        values.update(int(v) for v in set(label.ravel().tolist()) if v >= 0)
    values.discard(args.ignore_label)
    if not args.include_background:
        values.discard(0)
    if not values:
        raise ValueError("the reference holds no foreground label; give --labels")
    classes = sorted(values)
    return _named(args, classes, default_class_names(classes)), classes, args.ignore_label, \
        "label values found in the reference", None


def _scoring(args, classes, label_values, label_source):
    from ..report import Scoring

    if args.nsd_tolerance and len(args.nsd_tolerance) not in (1, len(classes)):
        raise ValueError(f"--nsd-tolerance needs one value or one per class ({len(classes)}); "
                         f"got {len(args.nsd_tolerance)}")
    chosen = {"surface": not args.no_surface, "spacing": args.spacing}
    if args.empty:
        chosen["empty"] = math.nan if args.empty == "nan" else 1.0
    if args.hd95_one_empty:
        chosen["one_empty"] = math.nan if args.hd95_one_empty == "nan" else "diagonal"
    if args.nsd_surface:
        chosen["nsd_surface"] = args.nsd_surface
    if args.nsd_tolerance:
        chosen["tolerances"] = list(args.nsd_tolerance) * (len(classes) // len(args.nsd_tolerance))
    if args.challenge:
        return Scoring.of_challenge(args.challenge, **chosen)
    return Scoring(label_values=label_values, label_source=label_source, **chosen)


def _sources(args):
    from ..report import resolve_method

    sources = [s for spec in args.methods for s in resolve_method(spec, args.folds, args.ending)]
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate method names {duplicates}; use NAME=PATH")
    if args.baseline is not None and args.baseline not in names:
        raise ValueError(f"--baseline {args.baseline!r} is not one of {names}")
    return sources


def _reference(args, sources):
    from ..io import list_label_files, split_ending

    reference = args.reference
    if reference is None:
        suggested = {s.reference for s in sources if s.reference is not None}
        if len(suggested) != 1:
            raise ValueError("give --reference (the folder of reference label files)")
        reference = suggested.pop()
    # The reference folder may hold other files too (e.g. nnU-Net's .npz next to .nii.gz): prefer the
    # predictions' file ending, fall back to whatever single kind of label file the folder holds.
    endings = {split_ending(path.name)[1] for s in sources for path in s.files.values()}
    preferred = args.ending or (endings.pop() if len(endings) == 1 else None)
    try:
        return reference, list_label_files(reference, preferred)
    except ValueError:
        if args.ending is not None or preferred is None:
            raise
        return reference, list_label_files(reference)


def _check_options(args) -> None:
    from ..metrics import require_lesion_metrics, require_surface_metrics
    from ..report import ReportFolder

    ReportFolder(args.output, args.overwrite).check()
    if args.challenge and CHALLENGES[args.challenge].lesion_wise:
        try:
            require_lesion_metrics()
        except ImportError as error:
            raise ValueError(f"--challenge {args.challenge}: {error}") from None
    if args.no_surface and (args.spacing or args.nsd_tolerance or args.nsd_surface):
        raise ValueError("--spacing, --nsd-tolerance and --nsd-surface are for HD95/NSD, which --no-surface skips")
    if not args.no_surface:
        try:
            require_surface_metrics()
        except ImportError as error:
            raise ValueError(f"{error}, or pass --no-surface") from None


def _describe(reference, reference_files, sources, class_names, classes, origin, scoring) -> None:
    from ..io import printable

    print(f"reference: {printable(reference)} ({len(reference_files)} files)")
    for source in sources:
        print(f"method {source.name}: {printable(source.origin)} ({len(source.files)} files)"
              + (f"; loss {source.settings}" if source.settings else ""))
    print(f"classes ({origin}): " + ", ".join(f"{n}={c}" for n, c in zip(class_names, classes)))
    if scoring.surface:
        from ..metrics import challenge_of, default_tolerances

        key = challenge_of(classes)
        tolerances = default_tolerances(classes) if scoring.tolerances is None else scoring.tolerances
        source = ("--nsd-tolerance" if scoring.tolerances is not None and scoring.challenge is None
                  else f"{CHALLENGES[key].title}'s" if key else "default")
        print(f"NSD tolerance ({source}): " + ", ".join(f"{n} {t:.3g}" for n, t in zip(class_names, tolerances)))


def _default_cases(args, sources) -> str:
    """``predicted`` when every method is an nnU-Net trainer folder scored against the reference it suggests
    (its dataset's gt_segmentations: each fold predicts only its validation cases), else ``all``."""
    from_trainers = args.reference is None and all(s.reference is not None for s in sources)
    return "predicted" if from_trainers else "all"


def run(args: argparse.Namespace) -> int:
    from ..io import printable
    from ..report import ReportFolder, available_cores, evaluate, progress_bar

    _check_options(args)
    sources = _sources(args)
    reference, reference_files = _reference(args, sources)
    class_names, classes, ignore_label, origin, label_values = _classes(args, sources, reference_files)
    scoring = _scoring(args, classes, label_values, origin)
    _describe(reference, reference_files, sources, class_names, classes, origin, scoring)
    with ReportFolder(args.output, args.overwrite) as target:
        evaluation = evaluate({s.name: s.files for s in sources}, reference_files, classes, class_names,
                              ignore_label, scoring=scoring, cases=args.cases or _default_cases(args, sources),
                              progress=progress_bar(),
                              jobs=args.jobs or available_cores())
        for method, missing in evaluation.skipped.items():
            if missing:
                print(f"warning: {method} has no prediction for {len(missing)} reference case(s), e.g. {missing[0]}; "
                      "they are left out for every method", file=sys.stderr)
        names = [s.name for s in sources]
        baseline = args.baseline or names[0]
        evaluation.methods = [baseline] + [n for n in names if n != baseline]
        evaluation.settings = {s.name: s.settings for s in sources if s.settings}
        report, written = target.write(evaluation, baseline, args.title, plot=not args.no_plot)
    print()
    print(report)
    print("written: " + ", ".join(printable(p) for p in written))
    return 0
