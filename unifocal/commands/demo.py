"""``unifocal demo``: the paper's experiment in miniature, through the real nnU-Net v2 pipeline.

1. write a seeded synthetic, strongly imbalanced 2D dataset (:mod:`unifocal.synthetic`) in nnU-Net's raw
   format, with held-out test cases;
2. ``nnUNetv2_plan_and_preprocess`` (2d configuration);
3. train nnU-Net's default loss (Dice + CE, ``BaselineTrainerShort``) and
4. the Unified Focal loss (``UnifiedFocalTrainerShort``) with the same short schedule;
5. ``nnUNetv2_predict`` the held-out cases with both;
6. per-case, per-class DSC / IoU / recall / precision, paired Wilcoxon tests, a table and box plots
   (:mod:`unifocal.report`).

All nnU-Net folders live inside the output folder; nothing outside it is touched. Every argument (the loss
settings with the trainer's own checks included) is checked before anything is written; an earlier run's
output is replaced only with ``--overwrite``, and only the files it wrote (:mod:`unifocal.runs.output`).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

NAME = "demo"
HELP = (
    "Run the paper's experiment on a synthetic imbalanced 2D dataset: nnU-Net's default loss vs the Unified "
    "Focal loss, same short schedule, held-out test cases, table, paired tests and plot."
)

BASELINE_TRAINER = "BaselineTrainerShort"
UNIFIED_TRAINER = "UnifiedFocalTrainerShort"
BASELINE_LABEL = "DC+CE"
UNIFIED_LABEL = "UnifiedFocal"
# What the demo writes in its output folder.
DEMO_ENTRIES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "predictions", "comparison", "logs")
# The loss settings the demo's options set (rows of nnunet_trainers.config.SETTINGS).
LOSS_SETTINGS = ("gamma", "delta", "weight", "rare_classes")
DEVICES = ("cpu", "cuda", "mps")

# Default schedule: sized so that the whole demo (planning, two trainings, two predictions) finishes within
# 15 minutes on 2 CPU cores (see docs/quickstart.md for measured times).
DEFAULT_EPOCHS = 40
DEFAULT_ITERATIONS = 50
DEFAULT_VAL_ITERATIONS = 5


def add_schedule_arguments(parser: argparse.ArgumentParser, epochs: int, iterations: int, val_iterations: int,
                           folds: bool = False) -> None:
    """The schedule and data options of demo and sweep; ``folds``: several folds (``--folds``), not one."""
    group = parser.add_argument_group("schedule and data")
    group.add_argument("--epochs", type=int, default=epochs, help="training epochs (default: %(default)s)")
    group.add_argument("--iterations", type=int, default=iterations,
                       help="training iterations per epoch (default: %(default)s; nnU-Net's is 250)")
    group.add_argument("--val-iterations", type=int, default=val_iterations,
                       help="validation iterations per epoch (default: %(default)s; nnU-Net's is 50)")
    group.add_argument("--train-cases", type=int, default=40, help="synthetic training cases (default: %(default)s)")
    group.add_argument("--test-cases", type=int, default=20, help="synthetic held-out cases (default: %(default)s)")
    group.add_argument("--image-size", type=int, default=64, help="synthetic image size in pixels (default: %(default)s)")
    group.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset (default: %(default)s)")
    group.add_argument("--dataset-id", type=int, default=990, help="nnU-Net dataset id (default: %(default)s)")
    if folds:
        group.add_argument("--folds", "--fold", nargs="+", default=["0"], metavar="FOLD",
                           help="nnU-Net folds to train, each run once per fold (default: %(default)s; "
                                "'all': all cases)")
    else:
        group.add_argument("--fold", default="0", help="nnU-Net fold to train (default: %(default)s; 'all' for all cases)")
    group.add_argument("--device", default="cpu", choices=DEVICES, help="(default: %(default)s)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("unifocal_demo"),
                        help="output folder; holds the nnU-Net folders too (default: %(default)s)")
    add_schedule_arguments(parser, DEFAULT_EPOCHS, DEFAULT_ITERATIONS, DEFAULT_VAL_ITERATIONS)
    from nnunet_trainers.config import add_setting_arguments

    loss = parser.add_argument_group("Unified Focal loss (default: the paper's weight 0.5, delta 0.6, gamma 0.5)")
    add_setting_arguments(loss, LOSS_SETTINGS)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier unifocal run wrote in --output (nothing else is ever removed)")
    parser.add_argument("--no-plot", action="store_true", help="skip the box plots")
    parser.add_argument("-v", "--verbose", action="store_true", help="show nnU-Net's complete output")


def check_schedule(args) -> None:
    """Check the schedule and data arguments shared by demo and sweep (nothing is written yet)."""
    from ..runs.workspace import Schedule
    from ..synthetic import MIN_SIZE

    try:
        Schedule(args.epochs, args.iterations, args.val_iterations)
    except ValueError as error:
        raise SystemExit(f"unifocal: {error}") from None
    folds = getattr(args, "folds", None) or [args.fold]
    for fold in folds:
        if fold != "all" and not fold.isdigit():
            raise SystemExit(f"unifocal: --fold must be a fold number or 'all'; got {fold!r}")
    if len(set(folds)) != len(folds):
        raise SystemExit(f"unifocal: --folds holds a fold twice: {' '.join(folds)}")
    if folds != ["all"] and args.train_cases < 5:
        raise SystemExit("unifocal: nnU-Net's 5-fold split needs --train-cases >= 5 (or --fold all)")
    if args.test_cases < 1:
        raise SystemExit("unifocal: --test-cases must be >= 1")
    if args.image_size < MIN_SIZE:
        raise SystemExit(f"unifocal: --image-size must be >= {MIN_SIZE}; got {args.image_size}")
    if args.seed < 0:
        raise SystemExit(f"unifocal: --seed must be >= 0; got {args.seed}")
    if not 1 <= args.dataset_id <= 999:
        raise SystemExit(f"unifocal: --dataset-id must be in [1, 999] (nnU-Net's DatasetXXX); got {args.dataset_id}")
    check_device(args.device)


def check_device(device: str) -> None:
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[device]:
        raise SystemExit(f"unifocal: --device {device}: not available in this PyTorch installation")


def run(args: argparse.Namespace) -> int:
    from nnunet_trainers.config import settings_from_args

    from ..runs.loss_check import check_loss_settings
    from ..runs.output import check_output, claim_output, nnunet_variables, record_outputs
    from ..runs.process import Reporter, StageError
    from ..runs.workspace import Schedule, Workspace
    from ..synthetic import CLASS_NAMES

    check_schedule(args)
    try:
        loss = settings_from_args(args)
        check_loss_settings(UNIFIED_TRAINER, loss, len(CLASS_NAMES))
    except ValueError as error:
        raise SystemExit(f"unifocal demo: {error}") from None
    output = args.output.resolve()
    claim = check_output(output, DEMO_ENTRIES, args.overwrite, nnunet_variables())
    claim_output(claim)
    workspace = Workspace.under(output, device=args.device)
    schedule = Schedule(args.epochs, args.iterations, args.val_iterations)
    report = Reporter()
    try:
        dataset, predictions = _run_pipeline(args, output, workspace, schedule, loss, report)
        _report(args, output, workspace, dataset, predictions, schedule, report)
    except StageError as error:
        report(f"FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        report("interrupted")
        return 130
    finally:
        record_outputs(claim)  # however the run ends, so that --overwrite may replace what it wrote
    return 0


STEPS = 6


def _run_pipeline(args, output: Path, workspace, schedule, loss, report):
    """Steps 1-5: the dataset, planning, both trainings and both predictions; returns the dataset and
    ``{label: {case: prediction file}}``."""
    from ..io import list_label_files
    from ..run_settings import read_run_settings
    from ..runs.loss_check import describe_settings
    from ..synthetic import CLASS_NAMES, write_nnunet_dataset

    report(f"(1/{STEPS}) writing the synthetic dataset: {args.train_cases} training + {args.test_cases} "
           f"held-out cases, {args.image_size}x{args.image_size}, seed {args.seed}")
    dataset = write_nnunet_dataset(workspace.raw, args.dataset_id, num_train=args.train_cases,
                                   num_test=args.test_cases, size=args.image_size, seed=args.seed)
    freq = ", ".join(f"{n} {100 * f:.2f}%" for n, f in zip(CLASS_NAMES, dataset.frequencies))
    report(f"  {dataset.folder}: pixel frequencies {freq}")
    report(f"(2/{STEPS}) nnUNetv2_plan_and_preprocess (2d)")
    workspace.plan_and_preprocess(args.dataset_id, "2d", echo=args.verbose)
    runs = ((BASELINE_TRAINER, BASELINE_LABEL, None), (UNIFIED_TRAINER, UNIFIED_LABEL, loss))
    for step, (trainer, label, settings) in enumerate(runs, start=3):
        what = ("nnU-Net's default loss, Dice + CE" if settings is None
                else f"Unified Focal loss, {describe_settings(loss)}")
        report(f"({step}/{STEPS}) nnUNetv2_train {trainer} ({what}): {schedule.epochs} epochs x "
               f"{schedule.iterations} iterations = {schedule.epochs * schedule.iterations}, fold {args.fold}, "
               f"{args.device}")
        trained = workspace.train(args.dataset_id, "2d", args.fold, trainer, schedule, report, settings,
                                  list(CLASS_NAMES[1:]), label, echo=args.verbose)
        settings_text = read_run_settings(trained, [args.fold])
        if settings_text:
            report(f"  {label} loss settings: {settings_text}")
    report(f"(5/{STEPS}) nnUNetv2_predict on the {args.test_cases} held-out cases")
    predictions = {}
    for trainer, label, _ in runs:
        folder = workspace.predict(args.dataset_id, "2d", args.fold, trainer, dataset.test_images,
                                   output / "predictions" / label, label, echo=args.verbose)
        predictions[label] = list_label_files(folder, ".png")
        report(f"  {label}: {len(predictions[label])} predictions in {folder}")
    return dataset, predictions


def _report(args, output: Path, workspace, dataset, predictions, schedule, report) -> None:
    """Step 6: per-case metrics, paired tests, the table and plots; then where everything is."""
    from ..report import evaluate, write_report
    from ..io import list_label_files
    from ..synthetic import CLASS_NAMES

    report(f"(6/{STEPS}) per-case metrics on the held-out cases, paired Wilcoxon tests")
    evaluation = evaluate(predictions, list_label_files(dataset.test_labels), [1, 2], list(CLASS_NAMES[1:]))
    title = (f"Synthetic imbalanced 2D task, {args.test_cases} held-out cases: {BASELINE_LABEL} "
             f"(nnU-Net default) vs {UNIFIED_LABEL}, {schedule.epochs * schedule.iterations} iterations each")
    text, written = write_report(evaluation, BASELINE_LABEL, output / "comparison", title, plot=not args.no_plot)
    print()
    print(text)
    report(f"done in {report.elapsed() / 60:.1f} min")
    print(f"outputs in {output}:")
    for path in written:
        print(f"  {path}")
    print(f"  nnU-Net results (checkpoints, training curves): {workspace.results / dataset.dataset_name}")
    print(f"  logs: {workspace.logs}")
    methods = " ".join(shlex.quote(f"{label}={output / 'predictions' / label}") for label in predictions)
    print(f"compare again any time: unifocal compare {methods} --reference {shlex.quote(str(dataset.test_labels))} "
          f"-o {shlex.quote(str(output / 'comparison'))} --overwrite")
