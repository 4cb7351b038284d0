"""``unifocal sweep``: the paper's gamma stability experiment (Yeung et al. 2022, Fig. 3).

The same short nnU-Net schedule is trained once per gamma value with the Unified Focal trainer (one
``nnUNet_results`` folder per gamma, ``UNIFOCAL_GAMMA`` set for each run), and once per baseline trainer.
Every run is evaluated on the same cases: the held-out ``imagesTs``/``labelsTs`` of the dataset when it has
them (predicted with ``nnUNetv2_predict``), else the trained fold's validation predictions against
``gt_segmentations``. The plot shows mean DSC against gamma per class, with the baselines as horizontal
reference lines; the full comparison table (every gamma against the first baseline) is written as well.

Every argument is checked before anything is written or trained: the data source, the dataset's plans and
configuration, the baseline predictions, and the loss settings of every run with the trainer's own checks.
The sweep never removes its input data (see :func:`unifocal.runs.output.check_output`).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .demo import (
    BASELINE_LABEL,
    BASELINE_TRAINER,
    DEFAULT_EPOCHS,
    DEFAULT_ITERATIONS,
    DEFAULT_VAL_ITERATIONS,
    UNIFIED_TRAINER,
    add_schedule_arguments,
    check_schedule,
)

if TYPE_CHECKING:
    from ..runs.workspace import Workspace

NAME = "sweep"
HELP = (
    "Gamma stability experiment (paper Fig. 3): train the same short nnU-Net schedule for a list of gamma values "
    "and plot DSC against gamma, with the baselines as reference lines."
)

EPILOG = """\
data (one of):
  default           a synthetic imbalanced 2D dataset written into --output (as unifocal demo does)
  --workspace DIR   the data of an earlier `unifocal demo`/`unifocal sweep` output folder (no new planning)
  --dataset ID      a planned and preprocessed dataset of your own ($nnUNet_raw, $nnUNet_preprocessed)

examples:
  unifocal sweep --gammas 0.1 0.3 0.5 0.7 0.9
  unifocal sweep --workspace unifocal_demo --baseline-predictions DC+CE=unifocal_demo/predictions/DC+CE --baselines
  nnUNet_raw=... nnUNet_preprocessed=... unifocal sweep --dataset 220 --configuration 3d_fullres --device cuda \\
      --epochs 100 --iterations 250 --val-iterations 50
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("-o", "--output", type=Path, default=Path("unifocal_sweep"),
                        help="output folder (default: %(default)s)")
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9],
                        help="gamma values (default: %(default)s)")
    parser.add_argument("--trainer", default=UNIFIED_TRAINER,
                        help="trainer whose gamma is swept (default: %(default)s)")
    parser.add_argument("--baselines", nargs="*", default=[BASELINE_TRAINER], metavar="TRAINER",
                        help="baseline trainers drawn as reference lines (default: %(default)s; none: --baselines)")
    parser.add_argument("--baseline-predictions", nargs="+", default=[], metavar="NAME=DIR",
                        help="already computed baseline predictions on the same cases (e.g. the demo's)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--workspace", type=Path, help="reuse the data of an earlier demo/sweep output folder")
    data.add_argument("--dataset", help="id or name of a preprocessed dataset in $nnUNet_raw/$nnUNet_preprocessed")
    parser.add_argument("--configuration", default="2d", help="nnU-Net configuration (default: %(default)s)")
    add_schedule_arguments(parser, DEFAULT_EPOCHS, DEFAULT_ITERATIONS, DEFAULT_VAL_ITERATIONS)
    parser.add_argument("--delta", type=float, help="delta for every run (default: the trainer's)")
    parser.add_argument("--weight", type=float, help="lambda for every run (default: the trainer's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier unifocal run wrote in --output (nothing else is ever removed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show nnU-Net's complete output")


def _dataset_folder(raw: Path, dataset: str) -> Path:
    if raw.is_dir():
        prefix = f"Dataset{int(dataset):03d}_" if dataset.isdigit() else None
        for candidate in sorted(raw.iterdir()):
            if candidate.is_dir() and (candidate.name == dataset or (prefix and candidate.name.startswith(prefix))):
                return candidate
    raise SystemExit(f"unifocal sweep: no dataset {dataset} in {raw}")


def _dataset_id(folder: Path) -> int:
    return int(folder.name[len("Dataset"):].split("_", 1)[0])


# What the sweep writes in its output folder; "predictions" too when the dataset has held-out cases, the
# nnU-Net data folders only for the synthetic dataset.
SWEEP_ENTRIES = ("results", "logs", "comparison", "sweep.csv", "sweep.png")
SYNTHETIC_ENTRIES = ("nnUNet_raw", "nnUNet_preprocessed")


@dataclass
class DataSource:
    """Where the sweep's data comes from, and what it knows of the dataset before anything is written.

    ``folder`` is the raw dataset folder (None for the synthetic dataset until it is written); ``protected``
    the input folders the sweep must never remove (besides the nnU-Net variables' folders).
    """

    workspace: "Workspace"
    folder: Optional[Path]
    class_names: list
    classes: list
    ignore_label: Optional[int]
    num_channels: int
    has_regions: bool
    ending: str
    held_out: bool
    protected: dict = field(default_factory=dict)


def _existing_dataset(workspace, folder: Path, configuration: str, protected: dict) -> DataSource:
    from ..experiment_report import classes_from_dataset
    from ..io import label_classes, load_dataset_json

    dataset_json = folder / "dataset.json"
    meta = load_dataset_json(dataset_json)
    _, all_classes, _ = label_classes(meta, dataset_json)
    has_regions = any(isinstance(c, tuple) for c in all_classes)
    class_names, classes, ignore_label = classes_from_dataset(dataset_json)
    _check_preprocessed(workspace, folder, configuration)
    held_out = (folder / "imagesTs").is_dir() and (folder / "labelsTs").is_dir()
    num_channels = len(classes) if has_regions else len(all_classes)
    return DataSource(workspace, folder, class_names, classes, ignore_label, num_channels, has_regions,
                      meta.get("file_ending"), held_out, {**protected, "the dataset": folder})


def _data_source(args, output: Path) -> DataSource:
    """The data of the sweep, checked; nothing is written."""
    from ..runs.workspace import Workspace
    from ..synthetic import CLASS_NAMES

    if args.workspace is not None:
        if args.workspace.resolve() == output:
            raise SystemExit("unifocal sweep: --output must differ from --workspace")
        source = Workspace.under(args.workspace, args.device)
        folder = _dataset_folder(source.raw, str(args.dataset_id))
        return _existing_dataset(source.with_results(output / "results", output / "logs"), folder,
                                 args.configuration, {"--workspace": args.workspace})
    if args.dataset is not None:
        raw, preprocessed = os.environ.get("nnUNet_raw"), os.environ.get("nnUNet_preprocessed")
        if not raw or not preprocessed:
            raise SystemExit("unifocal sweep: --dataset needs nnUNet_raw and nnUNet_preprocessed in the environment")
        folder = _dataset_folder(Path(raw), args.dataset)
        workspace = Workspace(raw, preprocessed, output / "results", output / "logs", args.device)
        return _existing_dataset(workspace, folder, args.configuration, {})
    workspace = Workspace(output / "nnUNet_raw", output / "nnUNet_preprocessed", output / "results",
                          output / "logs", args.device)
    foreground = list(range(1, len(CLASS_NAMES)))
    return DataSource(workspace, None, list(CLASS_NAMES[1:]), foreground, None, len(CLASS_NAMES), False, ".png", True)


def _write_synthetic(args, data: DataSource, report) -> None:
    from ..synthetic import write_nnunet_dataset

    report(f"writing the synthetic dataset ({args.train_cases} training + {args.test_cases} held-out cases) "
           "and planning it")
    dataset = write_nnunet_dataset(data.workspace.raw, args.dataset_id, num_train=args.train_cases,
                                   num_test=args.test_cases, size=args.image_size, seed=args.seed)
    data.workspace.plan_and_preprocess(args.dataset_id, args.configuration, echo=args.verbose)
    data.folder = dataset.folder
    _check_preprocessed(data.workspace, data.folder, args.configuration)


def _check_preprocessed(workspace, folder: Path, configuration: str) -> None:
    from ..io import load_dataset_json

    plans_file = workspace.preprocessed / folder.name / "nnUNetPlans.json"
    if not plans_file.is_file():
        raise SystemExit(f"unifocal sweep: {plans_file} not found: run nnUNetv2_plan_and_preprocess -d "
                         f"{_dataset_id(folder)} first")
    configurations = load_dataset_json(plans_file).get("configurations", {})
    if configuration not in configurations:
        raise SystemExit(f"unifocal sweep: {plans_file} has no configuration {configuration!r} (it has "
                         f"{', '.join(sorted(configurations)) or 'none'})")


def _gamma_label(gamma: float) -> str:
    return f"gamma={gamma:g}"


def run(args: argparse.Namespace) -> int:
    from ..runs.loss_check import LossSettings, check_loss_settings
    from ..runs.output import check_output, claim_output, nnunet_variables
    from ..runs.process import Reporter, StageError
    from ..runs.workspace import Schedule
    from nnunet_trainers import TRAINER_NAMES

    from ..experiment_report import evaluate, resolve_method, write_report
    from ..io import list_label_files
    from ..run_settings import read_run_settings

    check_schedule(args)
    if any(not 0 <= g < 1 for g in args.gammas):
        raise SystemExit(f"unifocal sweep: gamma values must lie in [0, 1); got {args.gammas}")
    if len(set(args.gammas)) != len(args.gammas):
        raise SystemExit("unifocal sweep: duplicate gamma values")
    report = Reporter()
    schedule = Schedule(args.epochs, args.iterations, args.val_iterations)
    output = args.output.resolve()
    data = _data_source(args, output)

    runs = [(_gamma_label(g), args.trainer, LossSettings(gamma=str(g), delta=args.delta, weight=args.weight))
            for g in args.gammas]
    runs += [(BASELINE_LABEL if t == BASELINE_TRAINER else t, t, None) for t in args.baselines]
    options = {"gamma": "--gammas", "delta": "--delta", "weight": "--weight"}
    for label, trainer, loss in runs:
        try:
            check_loss_settings(trainer, loss, data.num_channels, data.has_regions, data.ignore_label, options)
        except ValueError as error:
            raise SystemExit(f"unifocal sweep: {label} ({trainer}): {error}") from None
    # nnU-Net's lookup imports every trainer module (seconds): only for names that are not unifocal's own.
    unknown = sorted({trainer for _, trainer, _ in runs} - set(TRAINER_NAMES))
    try:
        missing = data.workspace.missing_trainers(unknown) if unknown else []
    except StageError as error:
        raise SystemExit(f"unifocal sweep: {error}") from None
    if missing:
        raise SystemExit(f"unifocal sweep: nnU-Net finds no trainer {', '.join(missing)} (nor in $nnUNet_extTrainer)")
    predictions: dict[str, dict[str, Path]] = {}
    settings: dict[str, str] = {}  # the loss settings each run recorded
    baseline_names: list[str] = []
    protected = {**nnunet_variables(), **data.protected}
    for spec in args.baseline_predictions:
        try:
            (source,) = resolve_method(spec, [args.fold], data.ending)
        except ValueError as error:
            raise SystemExit(f"unifocal sweep: {error}") from None
        predictions[source.name] = source.files
        baseline_names.append(source.name)
        protected[f"the {source.name} predictions"] = source.origin
    entries = SWEEP_ENTRIES + (("predictions",) if data.held_out else ())
    if data.folder is None:
        entries += SYNTHETIC_ENTRIES
    claim_output(check_output(output, entries, args.overwrite, protected))

    try:
        if data.folder is None:
            _write_synthetic(args, data, report)
    except StageError as error:
        report(f"FAILED: {error}")
        return 1
    workspace, folder, ending, held_out, class_names = data.workspace, data.folder, data.ending, data.held_out, \
        data.class_names
    dataset_id = _dataset_id(folder)
    reference = folder / "labelsTs" if held_out else workspace.preprocessed / folder.name / "gt_segmentations"
    report(f"dataset {folder.name}: classes {', '.join(class_names)}; evaluated on "
           + ("the held-out cases (labelsTs)" if held_out else f"the fold {args.fold} validation cases"))

    try:
        for index, (label, trainer, loss) in enumerate(runs, start=1):
            what = f"{trainer}, {loss.describe()}" if loss else f"{trainer} (baseline)"
            report(f"({index}/{len(runs)}) training {label}: {what}, {schedule.epochs} x {schedule.iterations} "
                   f"iterations, fold {args.fold}")
            run_space = workspace.with_results(output / "results" / label.replace("=", "_"))
            trained = run_space.train(dataset_id, args.configuration, args.fold, trainer, schedule, report, loss,
                                      class_names, label, echo=args.verbose)
            if held_out:
                target = output / "predictions" / label.replace("=", "_")
                run_space.predict(dataset_id, args.configuration, args.fold, trainer, folder / "imagesTs", target,
                                  label, echo=args.verbose)
                predictions[label] = list_label_files(target, ending)
            else:
                predictions[label] = list_label_files(trained / f"fold_{args.fold}" / "validation", ending)
            recorded = read_run_settings(trained, [args.fold])
            if recorded:
                settings[label] = recorded
            if loss is None:
                baseline_names.append(label)
            report(f"  {label}: {len(predictions[label])} predictions")
    except StageError as error:
        report(f"FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        report("interrupted")
        return 130

    report("evaluating every run on the same cases")
    evaluation = evaluate(predictions, list_label_files(reference, ending), data.classes, class_names,
                          data.ignore_label)
    gamma_labels = [_gamma_label(g) for g in args.gammas]
    evaluation.methods = baseline_names + gamma_labels
    evaluation.settings = {label: settings[label] for label in evaluation.methods if label in settings}
    baseline = baseline_names[0] if baseline_names else None
    title = f"gamma sweep, {folder.name}, {schedule.epochs * schedule.iterations} iterations per run"
    text, written = write_report(evaluation, baseline, output / "comparison", title)
    csv_path = _write_sweep_csv(evaluation, args.gammas, gamma_labels, output / "sweep.csv")
    plot_path = plot_sweep(evaluation, args.gammas, gamma_labels, baseline_names, output / "sweep.png", title)
    print()
    print(_dsc_table(evaluation, args.gammas, gamma_labels, baseline_names))
    report(f"done in {report.elapsed() / 60:.1f} min")
    print(f"outputs in {output}:")
    for path in [plot_path, csv_path, *written]:
        print(f"  {path}")
    return 0


def _write_sweep_csv(evaluation, gammas, gamma_labels, path: Path) -> Path:
    from ..metrics import nan_summary

    gamma_of = dict(zip(gamma_labels, gammas))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "gamma", "class", "metric", "mean", "sd", "n"])
        for method in evaluation.methods:
            for row in evaluation.rows():
                for metric in evaluation.metrics:
                    mean, sd, n = nan_summary(evaluation.column(method, metric, row))
                    gamma = gamma_of.get(method)
                    writer.writerow([method, "" if gamma is None else f"{gamma:g}", row, metric,
                                     "" if math.isnan(mean) else repr(mean), "" if math.isnan(sd) else repr(sd), n])
    return path


def _dsc_table(evaluation, gammas, gamma_labels, baseline_names) -> str:
    from ..metrics import nan_summary

    rows = evaluation.rows()
    lines = ["mean DSC over the evaluated cases", "",
             "| run | " + " | ".join(rows) + " | loss settings |", "|---" * (len(rows) + 2) + "|"]
    for method in baseline_names + gamma_labels:
        cells = [f"{nan_summary(evaluation.column(method, 'DSC', row))[0]:.3f}" for row in rows]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {evaluation.settings.get(method, '')} |")
    return "\n".join(lines) + "\n"


def plot_sweep(evaluation, gammas, gamma_labels, baseline_names, path: Path, title: str = "") -> Path:
    """Mean DSC against gamma, one panel per class (and the class mean); the band is ± one standard error;
    baselines are dashed horizontal lines."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    from ..metrics import nan_summary
    from ..run_settings import layout_with_settings

    rows = evaluation.rows()
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows) + 0.8, 3.6), squeeze=False)
    order = np.argsort(gammas)
    x = np.asarray(gammas, dtype=float)[order]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, row in zip(axes[0], rows):
        stats = [nan_summary(evaluation.column(label, "DSC", row)) for label in gamma_labels]
        mean = np.array([s[0] for s in stats])[order]
        sem = np.array([s[1] / math.sqrt(s[2]) if s[2] > 0 else math.nan for s in stats])[order]
        ax.plot(x, mean, "o-", color="black", label="Unified Focal (gamma)")
        ax.fill_between(x, mean - sem, mean + sem, color="black", alpha=0.15, linewidth=0)
        for k, name in enumerate(baseline_names):
            value = nan_summary(evaluation.column(name, "DSC", row))[0]
            ax.axhline(value, linestyle="--", color=colours[k % len(colours)], label=name)
        ax.set_title(row)
        ax.set_xlabel("gamma")
        ax.set_xlim(-0.02, 1.0)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean DSC")
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(textwrap.fill(title, width=int((3.6 * len(rows) + 0.8) * 11)), fontsize=10)
    layout_with_settings(fig, evaluation.settings)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
