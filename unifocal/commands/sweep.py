"""``unifocal sweep``: the paper's gamma stability experiment (Yeung et al. 2022, Fig. 3), cross-validated,
on this machine or on a SLURM cluster.

Every loss setting of the grid (``--gammas`` x ``--deltas`` x ``--weights``) and every baseline trainer is trained
once per fold (``--folds``) with the same nnU-Net schedule, each setting in its own ``nnUNet_results`` folder
with its ``UNIFOCAL_*`` variables. Every run is evaluated on the same cases: the held-out
``imagesTs``/``labelsTs`` of the dataset when it has them (each fold's model predicts them), else each fold's
validation predictions against ``gt_segmentations``. The table and ``sweep.png`` show mean DSC against gamma
per class (mean and sd over folds), the baselines as reference lines; the full comparison (paired tests over
folds and cases against the first baseline) is written as well.

Runs are jobs (:mod:`unifocal.runs.launch`): in this process, ``--jobs N`` at a time on this machine, or one
SLURM job each; the output folder records every job, so the same command again only runs what has not
completed and collects what has. Every argument is checked before anything is written or submitted: the
data source, the dataset's plans and configuration, the baseline predictions, the loss settings of every run
with the trainer's own checks, and the launcher. The sweep never removes its input data nor any file it did
not write (:mod:`unifocal.runs.output`).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
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
    "Gamma stability experiment (paper Fig. 3): train the same nnU-Net schedule for a grid of loss settings and "
    "folds, here or on a SLURM cluster, and plot DSC against gamma with the baselines as reference lines."
)

EPILOG = """\
data (one of):
  default           a synthetic imbalanced 2D dataset written into --output (as unifocal demo does)
  --workspace DIR   the data of an earlier `unifocal demo`/`unifocal sweep` output folder (no new planning)
  --dataset ID      a planned and preprocessed dataset of your own ($nnUNet_raw, $nnUNet_preprocessed)

examples:
  unifocal sweep --gammas 0.1 0.3 0.5 0.7 0.9
  unifocal sweep --gammas 0.2 0.5 --folds 0 1 --launcher local --jobs 2
  unifocal sweep --workspace unifocal_demo --baseline-predictions DC+CE=unifocal_demo/predictions/DC+CE --baselines
  unifocal sweep --dataset 220 --configuration 3d_fullres --device cuda --epochs 1000 --iterations 250 \\
      --val-iterations 50 --folds 0 1 2 3 4 --launcher slurm --slurm-partition gpu --slurm-gpus 1 \\
      --slurm-time 2-00:00:00 --slurm-mem 64G -o kits_sweep
  unifocal sweep --status -o kits_sweep
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("-o", "--output", type=Path, default=Path("unifocal_sweep"),
                        help="output folder (default: %(default)s)")
    grid = parser.add_argument_group("loss settings (every combination is one run per fold)")
    grid.add_argument("--gammas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9],
                      help="gamma values (default: %(default)s)")
    grid.add_argument("--deltas", "--delta", type=float, nargs="+", help="delta values (default: the trainer's)")
    grid.add_argument("--weights", "--weight", type=float, nargs="+", help="lambda values (default: the trainer's)")
    grid.add_argument("--trainer", default=UNIFIED_TRAINER,
                      help="trainer whose settings are swept (default: %(default)s)")
    grid.add_argument("--baselines", nargs="*", default=[BASELINE_TRAINER], metavar="TRAINER",
                      help="baseline trainers, one run per fold (default: %(default)s; none: --baselines)")
    grid.add_argument("--baseline-predictions", nargs="+", default=[], metavar="NAME=DIR",
                      help="already computed baseline predictions on the same cases (e.g. the demo's; one fold only)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--workspace", type=Path, help="reuse the data of an earlier demo/sweep output folder")
    data.add_argument("--dataset", help="id or name of a preprocessed dataset in $nnUNet_raw/$nnUNet_preprocessed")
    parser.add_argument("--configuration", default="2d", help="nnU-Net configuration (default: %(default)s)")
    add_schedule_arguments(parser, DEFAULT_EPOCHS, DEFAULT_ITERATIONS, DEFAULT_VAL_ITERATIONS, folds=True)
    add_launcher_arguments(parser)
    parser.add_argument("--status", action="store_true", help="print the state of every job of --output and exit")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier unifocal run wrote in --output (nothing else is ever removed)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show nnU-Net's complete output")


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    from ..runs.launch import LAUNCHERS

    group = parser.add_argument_group("where the runs run")
    group.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local: on this machine; slurm: one SLURM job per run (default: %(default)s)")
    group.add_argument("--jobs", type=int, default=1,
                       help="local runs at once (default: %(default)s: one after the other in this process)")
    group.add_argument("--poll", type=float, default=30.0,
                       help="seconds between job state checks (default: %(default)s)")
    group.add_argument("--slurm-partition", help="sbatch --partition")
    group.add_argument("--slurm-gpus", type=int, help="sbatch --gpus-per-node")
    group.add_argument("--slurm-cpus", type=int, help="sbatch --cpus-per-task")
    group.add_argument("--slurm-time", help="sbatch --time, e.g. 2-00:00:00 or 2880 (minutes)")
    group.add_argument("--slurm-mem", help="sbatch --mem, e.g. 64G")
    group.add_argument("--slurm-account", help="sbatch --account")
    group.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch option, e.g. qos=high or constraint=a100 (repeatable)")


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
SWEEP_ENTRIES = ("jobs", "results", "logs", "comparison", "sweep.csv", "sweep.png")
SYNTHETIC_ENTRIES = ("nnUNet_raw", "nnUNet_preprocessed")


@dataclass
class DataSource:
    """Where the sweep's data comes from, and what it knows of the dataset before anything is written.

    ``folder`` is the raw dataset folder (for the ``synthetic`` dataset, where it will be written); ``protected``
    the input folders the sweep must never remove (besides the nnU-Net variables' folders).
    """

    workspace: "Workspace"
    folder: Path
    class_names: list
    classes: list
    ignore_label: Optional[int]
    num_channels: int
    has_regions: bool
    ending: str
    held_out: bool
    protected: dict = field(default_factory=dict)
    synthetic: bool = False


def _existing_dataset(workspace, folder: Path, configuration: str, protected: dict) -> DataSource:
    from ..report import classes_from_dataset
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
    from ..synthetic import CLASS_NAMES, DATASET_NAME

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
    folder = workspace.raw / f"Dataset{args.dataset_id:03d}_{DATASET_NAME}"
    return DataSource(workspace, folder, list(CLASS_NAMES[1:]), foreground, None, len(CLASS_NAMES), False, ".png", True,
                      synthetic=True)


def _write_synthetic(args, data: DataSource, report) -> None:
    """The synthetic dataset, written and planned; kept as it is when an earlier call of the sweep wrote it."""
    from ..synthetic import write_nnunet_dataset

    if (data.workspace.preprocessed / data.folder.name / "nnUNetPlans.json").is_file():
        _check_preprocessed(data.workspace, data.folder, args.configuration)
        return
    report(f"writing the synthetic dataset ({args.train_cases} training + {args.test_cases} held-out cases) "
           "and planning it")
    write_nnunet_dataset(data.workspace.raw, args.dataset_id, num_train=args.train_cases, num_test=args.test_cases,
                         size=args.image_size, seed=args.seed)
    data.workspace.plan_and_preprocess(args.dataset_id, args.configuration, echo=args.verbose)
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


@dataclass(frozen=True)
class Setting:
    """One row of the sweep: a trainer and its loss settings (None: a baseline trainer)."""

    label: str
    trainer: str
    loss: object = None
    gamma: Optional[float] = None
    delta: Optional[float] = None
    weight: Optional[float] = None


def _grid(args) -> list[Setting]:
    """The grid's settings (gamma x delta x weight), then the baselines; labels name what varies."""
    from nnunet_trainers.config import Settings

    for option, values in (("--gammas", args.gammas), ("--deltas", args.deltas), ("--weights", args.weights)):
        if values is not None and len(set(values)) != len(values):
            raise SystemExit(f"unifocal sweep: {option} holds a value twice: {' '.join(f'{v:g}' for v in values)}")
    settings = []
    for gamma, delta, weight in itertools.product(args.gammas, args.deltas or [None], args.weights or [None]):
        parts = [f"gamma={gamma:g}"] + [f"{name}={value:g}" for name, value in (("delta", delta), ("weight", weight))
                                        if value is not None]
        given = {"gamma": gamma, "delta": delta, "weight": weight}
        loss = Settings.of({k: v for k, v in given.items() if v is not None},
                           {k: f"--{k}s" for k, v in given.items() if v is not None})
        settings.append(Setting(" ".join(parts), args.trainer, loss, gamma, delta, weight))
    settings += [Setting(BASELINE_LABEL if t == BASELINE_TRAINER else t, t) for t in args.baselines]
    return settings


def _check_settings(settings: list[Setting], data: DataSource) -> None:
    """The trainer's own checks on every run's settings, and that nnU-Net finds every trainer."""
    from nnunet_trainers import TRAINER_NAMES

    from ..runs.loss_check import check_loss_settings
    from ..runs.process import StageError

    for setting in settings:
        try:
            check_loss_settings(setting.trainer, setting.loss, data.num_channels, data.has_regions, data.ignore_label)
        except ValueError as error:
            raise SystemExit(f"unifocal sweep: {setting.label} ({setting.trainer}): {error}") from None
    # nnU-Net's lookup imports every trainer module (seconds): only for names that are not unifocal's own.
    unknown = sorted({s.trainer for s in settings} - set(TRAINER_NAMES))
    try:
        missing = data.workspace.missing_trainers(unknown) if unknown else []
    except StageError as error:
        raise SystemExit(f"unifocal sweep: {error}") from None
    if missing:
        raise SystemExit(f"unifocal sweep: nnU-Net finds no trainer {', '.join(missing)} (nor in $nnUNet_extTrainer)")


def _launcher_settings(args) -> dict:
    """submitit's SLURM parameters, checked (nothing is written or submitted)."""
    from ..runs.launch import Launcher, slurm_parameters

    if args.jobs < 1:
        raise SystemExit(f"unifocal sweep: --jobs must be >= 1; got {args.jobs}")
    if not args.poll > 0:
        raise SystemExit(f"unifocal sweep: --poll must be > 0 seconds; got {args.poll}")
    given = [name for name in ("partition", "gpus", "cpus", "time", "mem", "account", "option")
             if getattr(args, f"slurm_{name}") not in (None, [])]
    if args.launcher != "slurm":
        if given:
            raise SystemExit(f"unifocal sweep: --slurm-{given[0]} needs --launcher slurm")
        return {}
    if args.jobs != 1:
        raise SystemExit("unifocal sweep: --jobs is for --launcher local (SLURM runs every job it can)")
    try:
        Launcher.check_slurm()
        parameters = slurm_parameters(args.slurm_partition, args.slurm_gpus, args.slurm_time, args.slurm_mem,
                                      args.slurm_account, args.slurm_cpus, args.slurm_option)
    except ValueError as error:
        raise SystemExit(f"unifocal sweep: {error}") from None
    for name in ("gpus", "cpus"):
        value = getattr(args, f"slurm_{name}")
        if value is not None and value < (0 if name == "gpus" else 1):
            raise SystemExit(f"unifocal sweep: --slurm-{name} must be >= {0 if name == 'gpus' else 1}; got {value}")
    if args.slurm_time is not None and not _SLURM_TIME.fullmatch(args.slurm_time):
        raise SystemExit(f"unifocal sweep: --slurm-time {args.slurm_time!r}: expected minutes, HH:MM:SS or "
                         "D-HH:MM:SS (sbatch's --time)")
    return parameters


_SLURM_TIME = re.compile(r"\d+|\d+:\d\d|\d+:\d\d:\d\d|\d+-\d+(:\d\d(:\d\d)?)?")


def _baseline_predictions(args, data: DataSource, protected: dict) -> dict:
    """``--baseline-predictions``: name -> case -> file, checked; their folders join ``protected``."""
    from ..report import resolve_method

    if args.baseline_predictions and len(args.folds) > 1:
        raise SystemExit("unifocal sweep: --baseline-predictions are one model's predictions: use them with one "
                         "fold, or give the baseline trainer with --baselines to train it on every fold")
    found = {}
    for spec in args.baseline_predictions:
        try:
            (source,) = resolve_method(spec, args.folds, data.ending)
        except ValueError as error:
            raise SystemExit(f"unifocal sweep: {error}") from None
        found[source.name] = source.files
        protected[f"the {source.name} predictions"] = source.origin
    return found


def _claim(args, output: Path, data: DataSource, protected: dict, specs: list):
    """What the sweep may do in --output: go on with an earlier call of the same sweep (its job record), or
    start afresh; with --overwrite, after no earlier job may still be running."""
    from ..runs.launch import JobRecord
    from ..runs.output import check_output

    entries = SWEEP_ENTRIES + (("predictions",) if data.held_out else ())
    if data.synthetic:
        entries += SYNTHETIC_ENTRIES
    record = JobRecord.load(output / "jobs")
    if args.overwrite:
        active = sorted(entry["job_id"] for entry in record.jobs.values()
                        if entry.get("launcher") == "slurm" and entry.get("state") in ("PENDING", "RUNNING"))
        if active:
            raise SystemExit(f"unifocal sweep: jobs {' '.join(active)} of the earlier sweep in {output} may still run; "
                             f"see `unifocal sweep --status -o {output}` and cancel them (scancel) before --overwrite")
        record.jobs = {}
    try:
        record.check_same(specs)
    except ValueError as error:
        raise SystemExit(f"unifocal sweep: {error}") from None
    resume = bool(record.jobs)
    return check_output(output, entries, args.overwrite, protected, resume=resume), record


def _specs(args, settings: list[Setting], data: DataSource, output: Path) -> list:
    from ..runs.launch import RunSpec
    from ..runs.workspace import Schedule

    schedule = Schedule(args.epochs, args.iterations, args.val_iterations)
    specs = []
    for setting in settings:
        folder = _folder_name(setting.label)
        workspace = data.workspace.with_results(output / "results" / folder)
        for fold in args.folds:
            held_out = output / "predictions" / folder / f"fold_{fold}" if data.held_out else None
            specs.append(RunSpec(setting.label, fold, setting.trainer, setting.loss, workspace,
                                 _dataset_id(data.folder), args.configuration, schedule, tuple(data.class_names),
                                 data.folder / "imagesTs" if data.held_out else None, held_out))
    return specs


def _owned(output: Path, spec) -> list[Path]:
    """What only ``spec``'s job writes (it may have written there while no sweep process ran)."""
    logs = spec.workspace.logs
    return [output / "jobs" / spec.name, spec.workspace.results, logs / f"train_{spec.name}.log",
            logs / f"predict_{spec.name}.log", *([spec.predictions] if spec.predictions else [])]


def _folder_name(label: str) -> str:
    return label.replace("=", "_").replace(" ", "_")


def run(args: argparse.Namespace) -> int:
    from ..runs.launch import Launcher
    from ..runs.output import claim_output, nnunet_variables, record_outputs
    from ..runs.process import Reporter, StageError
    from ..runs.sweep_report import collect

    output = args.output.resolve()
    if args.status:
        return status(output)
    check_schedule(args)
    slurm = _launcher_settings(args)
    data = _data_source(args, output)
    settings = _grid(args)
    _check_settings(settings, data)
    protected = {**nnunet_variables(), **data.protected}
    given = _baseline_predictions(args, data, protected)
    specs = _specs(args, settings, data, output)
    claim, record = _claim(args, output, data, protected, specs)
    claim_output(claim)
    report = Reporter()
    try:
        if data.synthetic:
            _write_synthetic(args, data, report)
        report(f"dataset {data.folder.name}: classes {', '.join(data.class_names)}; {len(settings)} settings x "
               f"{len(args.folds)} folds, evaluated on " + ("the held-out cases" if data.held_out else
                                                            "each fold's validation cases"))
        launcher = Launcher(args.launcher, output / "jobs", record, report, args.jobs, slurm, args.poll, args.verbose)
        if not launcher.run(specs):
            return 130
        return collect(args, output, data, settings, specs, record, given, report)
    except StageError as error:
        report(f"FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        report("interrupted; run the same command again to go on from the completed runs")
        return 130
    finally:
        record_outputs(claim, owned=[path for spec in specs for path in _owned(output, spec)])


def status(output: Path) -> int:
    """``--status``: every recorded job with its state (SLURM's current one where sacct answers) and log."""
    from ..runs.launch import JobRecord, job_states

    record = JobRecord.load(output / "jobs")
    if not record.jobs:
        raise SystemExit(f"unifocal sweep: no sweep jobs recorded in {output / 'jobs'}")
    states = job_states(record)
    width = max(len(key) for key in record.jobs)
    print(f"{'run':<{width}}  {'launcher':<8}  {'job':>10}  state")
    for key, entry in record.jobs.items():
        state = states.get(key, entry.get("state", "?"))
        line = f"{key:<{width}}  {entry.get('launcher', ''):<8}  {entry.get('job_id', ''):>10}  {state}"
        if state not in ("COMPLETED", "PENDING", "RUNNING"):
            line += f"  log: {entry.get('log', '')}" + (f"  ({entry['error']})" if entry.get("error") else "")
        print(line)
    return 0
