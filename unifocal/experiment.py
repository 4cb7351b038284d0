"""Driving the real nnU-Net v2 pipeline from ``unifocal demo`` and ``unifocal sweep``.

nnU-Net is run through its console scripts (``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train``,
``nnUNetv2_predict``, found next to ``sys.executable``), so nothing here imports nnunetv2. Each run gets
the ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` folders of a :class:`Workspace`, and
``nnUNet_extTrainer`` pointing at the unifocal trainers (:func:`nnunet_trainers.ext_trainer_path`).
The short schedule of the ``...Short`` trainers and the loss settings travel as ``UNIFOCAL_*`` environment
variables (see ``nnunet_trainers.config``).

Every stage writes nnU-Net's complete output to a log file and reports progress through a :class:`Reporter`:
stage lines with the elapsed time, one line per training epoch (losses, pseudo Dice, epoch time), and the
tail of the log when a stage fails.

Before any of that, :func:`check_loss_settings` runs the checks a trainer runs when it builds its loss, and
:func:`check_output` decides what the run may write and remove in its output folder (see there), so that a
bad setting fails in seconds and no user file is lost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TextIO

__all__ = [
    "StageError",
    "Reporter",
    "OutputClaim",
    "check_output",
    "claim_output",
    "nnunet_variables",
    "trainer_loss",
    "check_loss_settings",
    "Workspace",
    "Schedule",
    "LossSettings",
    "nnunet_script",
    "EpochLogParser",
    "run_logged",
]

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan")


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the stage, the log file and the log's last lines."""


class Reporter:
    """Progress lines with the time since the start: ``[mm:ss] message``."""

    def __init__(self, stream: TextIO = None, start: Optional[float] = None):
        self.stream = stream if stream is not None else sys.stdout
        self.start = time.monotonic() if start is None else start

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def stamp(self) -> str:
        seconds = int(self.elapsed())
        return f"[{seconds // 60:02d}:{seconds % 60:02d}]"

    def __call__(self, message: str) -> None:
        print(f"{self.stamp()} {message}", file=self.stream, flush=True)


def nnunet_script(name: str) -> str:
    """Path of an nnU-Net console script: next to the running Python first (a venv's bin/), else PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise StageError(
        f"{name} not found next to {sys.executable} nor on PATH: install nnU-Net with pip install 'unifocal[nnunet]'"
    )


@dataclass(frozen=True)
class Schedule:
    """Short training schedule for the ``...Short`` trainers (epochs x iterations, validation iterations)."""

    epochs: int
    iterations: int
    val_iterations: int

    def __post_init__(self):
        for name in ("epochs", "iterations", "val_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")

    def env(self) -> dict[str, str]:
        return {
            "UNIFOCAL_NUM_EPOCHS": str(self.epochs),
            "UNIFOCAL_ITERATIONS_PER_EPOCH": str(self.iterations),
            "UNIFOCAL_VAL_ITERATIONS": str(self.val_iterations),
        }


@dataclass(frozen=True)
class LossSettings:
    """Loss settings for the unifocal trainers; ``None`` leaves the trainer's default."""

    gamma: Optional[str] = None
    delta: Optional[float] = None
    weight: Optional[float] = None
    rare_classes: Optional[str] = None

    def env(self) -> dict[str, str]:
        out = {}
        if self.gamma is not None:
            out["UNIFOCAL_GAMMA"] = str(self.gamma)
        if self.delta is not None:
            out["UNIFOCAL_DELTA"] = str(self.delta)
        if self.weight is not None:
            out["UNIFOCAL_WEIGHT"] = str(self.weight)
        if self.rare_classes is not None:
            out["UNIFOCAL_RARE_CLASSES"] = str(self.rare_classes)
        return out

    def describe(self) -> str:
        given = {k: v for k, v in (("gamma", self.gamma), ("delta", self.delta), ("weight", self.weight),
                                   ("rare_classes", self.rare_classes)) if v is not None}
        return ", ".join(f"{k}={v}" for k, v in given.items()) or "trainer defaults"


class EpochLogParser:
    """Turns nnU-Net's training output into one summary line per epoch.

    Feed it lines; it returns a summary when it sees ``Epoch time``, e.g.
    ``epoch 3/20: train loss -0.412, val loss -0.398, pseudo Dice [0.81, 0.12], 9.4 s``.
    """

    def __init__(self, num_epochs: Optional[int] = None, class_names: Sequence[str] = ()):
        self.num_epochs = num_epochs
        self.class_names = list(class_names)
        self._reset()
        self.epochs_done = 0
        self.last_pseudo_dice: list[float] = []

    def _reset(self):
        self.epoch = None
        self.train_loss = None
        self.val_loss = None
        self.pseudo_dice = None

    def feed(self, line: str) -> Optional[str]:
        text = _TIMESTAMP.sub("", line.strip())
        if text.startswith("Epoch time:"):
            seconds = _NUMBER.findall(text)
            self.epochs_done += 1
            epoch = self.epoch if self.epoch is not None else self.epochs_done - 1
            total = f"/{self.num_epochs}" if self.num_epochs else ""
            parts = [f"epoch {epoch + 1}{total}:"]
            if self.train_loss is not None:
                parts.append(f"train loss {self.train_loss:.4f},")
            if self.val_loss is not None:
                parts.append(f"val loss {self.val_loss:.4f},")
            if self.pseudo_dice is not None:
                if len(self.class_names) == len(self.pseudo_dice):
                    dice = " ".join(f"{n} {d:.3f}" for n, d in zip(self.class_names, self.pseudo_dice))
                else:
                    dice = "[" + ", ".join(f"{d:.3f}" for d in self.pseudo_dice) + "]"
                parts.append(f"pseudo Dice {dice},")
                self.last_pseudo_dice = list(self.pseudo_dice)
            if seconds:
                parts.append(f"{float(seconds[0]):.1f} s")
            self._reset()
            return " ".join(parts).rstrip(",")
        if re.fullmatch(r"Epoch \d+", text):
            self.epoch = int(text.split()[1])
        elif text.startswith("train_loss"):
            self.train_loss = _first_number(text)
        elif text.startswith("val_loss"):
            self.val_loss = _first_number(text)
        elif text.startswith("Pseudo dice"):
            inside = text[text.find("[") + 1: text.rfind("]")]
            inside = re.sub(r"np\.float\d*\(([^()]*)\)", r"\1", inside)
            self.pseudo_dice = [float(v) for v in _NUMBER.findall(inside)]
        return None


def _first_number(text: str) -> Optional[float]:
    found = _NUMBER.findall(text.split(maxsplit=1)[1] if " " in text else "")
    return float(found[0]) if found else None


def run_logged(
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    stage: str,
    on_line: Optional[Callable[[str], None]] = None,
    echo: bool = False,
    cwd: Optional[Path] = None,
) -> None:
    """Run ``command``, writing its output (stdout and stderr merged) to ``log_path`` line by line.

    ``on_line`` sees every line; ``echo`` also copies the output to stdout. Raises :class:`StageError`
    with the last lines of the log when the command fails.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: list[str] = []
    # A SIGTERM (a CI timeout, `kill`) must stop nnU-Net too: turn it into KeyboardInterrupt while the child
    # runs, so that the clean-up below kills the child instead of leaving an orphaned training behind.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = _stream(command, env, log_path, tail, on_line, echo, cwd)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code != 0:
        shown = "\n".join("    " + t[-300:] for t in tail[-15:])
        raise StageError(f"{stage} failed (exit code {code}); full log: {log_path}\n  last lines:\n{shown}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _stream(command, env, log_path: Path, tail: list, on_line, echo: bool, cwd) -> int:
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(str(c) for c in command) + "\n")
        log.flush()
        process = subprocess.Popen(
            [str(c) for c in command], env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, errors="replace", cwd=cwd, start_new_session=os.name == "posix",
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                del tail[:-25]
                if echo:
                    print(line, end="", flush=True)
                if on_line is not None:
                    on_line(line)
            return process.wait()
        except BaseException:
            _kill_tree(process)
            raise


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill the child and everything it started (its own session on POSIX: nnU-Net's worker pools too)."""
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@dataclass
class Workspace:
    """The nnU-Net folders one run uses (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``), where
    its logs go, and the device. :meth:`under` puts them all in one folder."""

    raw: Path
    preprocessed: Path
    results: Path
    logs: Path
    device: str = "cpu"
    extra_env: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("raw", "preprocessed", "results", "logs"):
            setattr(self, name, Path(getattr(self, name)).resolve())

    @classmethod
    def under(cls, root: Path, device: str = "cpu") -> "Workspace":
        """``<root>/nnUNet_raw``, ``<root>/nnUNet_preprocessed``, ``<root>/nnUNet_results``, ``<root>/logs``."""
        root = Path(root)
        return cls(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "nnUNet_results", root / "logs", device)

    def with_results(self, results: Path, logs: Optional[Path] = None) -> "Workspace":
        """The same data with another results folder (and log folder)."""
        return Workspace(self.raw, self.preprocessed, results, logs or self.logs, self.device, dict(self.extra_env))

    def env(self, training: bool = False, extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
        """The environment for an nnU-Net console script.

        On CPU: one worker process for nnU-Net's pools (``nnUNet_def_n_proc=1``), no torch.compile, at
        training time data augmentation in the main process (``nnUNet_n_proc_DA=0``; planning breaks with
        it), and a short OpenMP spin (``GOMP_SPINCOUNT=3000``, robust against other busy processes). Values
        the user already exported win, except the folders and the trainer path.
        """
        from nnunet_trainers import ext_trainer_path

        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            PYTHONUNBUFFERED="1",
            MPLBACKEND="Agg",
        )
        trainer_path = str(ext_trainer_path())
        existing = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        env["nnUNet_extTrainer"] = os.pathsep.join([trainer_path] + [p for p in existing if p != trainer_path])
        if self.device == "cpu":
            # nnU-Net sets torch's thread count to the machine's CPU count. With OpenMP's default busy-waiting
            # (libgomp spins 300000 times before sleeping), another multi-threaded process on the same cores
            # makes every parallel region wait for a descheduled spinning thread: on 2 cores next to a busy
            # torch process, 1.45 s per iteration of the demo's network instead of 0.08 s idle. A short spin
            # keeps almost all of the idle speed (0.09 s) and most of the robustness (0.22 s; fully passive
            # waiting: 0.13 s idle, 0.17 s busy). Not set when the user chose a wait policy.
            if "OMP_WAIT_POLICY" not in env:
                env.setdefault("GOMP_SPINCOUNT", "3000")
            env.setdefault("nnUNet_def_n_proc", "1")
            env.setdefault("nnUNet_compile", "f")
            if training:
                env.setdefault("nnUNet_n_proc_DA", "0")
            else:
                env.pop("nnUNet_n_proc_DA", None)
        env.update(self.extra_env)
        if extra:
            env.update(extra)
        return env

    def missing_trainers(self, names: Sequence[str]) -> list[str]:
        """The trainer names ``nnUNetv2_train`` would not find: looked up by nnU-Net's own function in a child
        process with this workspace's environment (``nnUNet_extTrainer`` included), in seconds.

        Raises:
            StageError: when the lookup itself fails (nnU-Net not installed, for instance).
        """
        code = ("import sys\n"
                "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find\n"
                "for name in sys.argv[1:]:\n"
                "    try:\n"
                "        find(name)\n"
                "    except (RuntimeError, AssertionError):\n"
                "        print('MISSING', name)\n")
        result = subprocess.run([sys.executable, "-c", code, *names], env=self.env(), capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise StageError(f"looking up the nnU-Net trainers failed ({last})")
        return [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("MISSING ")]

    # -- the three nnU-Net steps ---------------------------------------------------------------------------

    def plan_and_preprocess(self, dataset_id: int, configuration: str, echo: bool = False) -> None:
        command = [nnunet_script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration,
                   "-np", "1", "-npfp", "1"]
        run_logged(command, self.env(), self.logs / "plan_and_preprocess.log", "planning and preprocessing",
                   echo=echo)

    def train(
        self,
        dataset_id: int,
        configuration: str,
        fold: str,
        trainer: str,
        schedule: Schedule,
        report: Reporter,
        loss: Optional[LossSettings] = None,
        class_names: Sequence[str] = (),
        label: Optional[str] = None,
        echo: bool = False,
    ) -> Path:
        """Train one trainer; returns its output folder ``<results>/<Dataset>/<trainer>__nnUNetPlans__<config>``."""
        label = label or trainer
        parser = EpochLogParser(schedule.epochs, class_names)
        # About 20 epoch lines per training: every epoch up to 20, else every k-th and the last.
        stride = -(-schedule.epochs // 20)

        def on_line(line: str) -> None:
            summary = parser.feed(line)
            done = parser.epochs_done
            if summary is not None and not echo and (done % stride == 0 or done == schedule.epochs or done == 1):
                report(f"  {label} {summary}")

        extra = schedule.env()
        if loss is not None:
            extra.update(loss.env())
        command = [nnunet_script("nnUNetv2_train"), str(dataset_id), configuration, str(fold), "-tr", trainer,
                   "-device", self.device]
        log = self.logs / f"train_{label}.log"
        run_logged(command, self.env(training=True, extra=extra), log, f"training {label}", on_line, echo)
        folders = sorted(self.results.glob(f"Dataset{dataset_id:03d}_*/{trainer}__*__{configuration}"))
        if not folders:
            raise StageError(f"training {label} finished but wrote no results folder under {self.results}")
        return folders[0]

    def predict(
        self,
        dataset_id: int,
        configuration: str,
        fold: str,
        trainer: str,
        images: Path,
        output: Path,
        label: Optional[str] = None,
        echo: bool = False,
    ) -> Path:
        label = label or trainer
        command = [nnunet_script("nnUNetv2_predict"), "-i", str(images), "-o", str(output), "-d", str(dataset_id),
                   "-c", configuration, "-f", str(fold), "-tr", trainer, "-device", self.device,
                   "-npp", "1", "-nps", "1", "--disable_progress_bar"]
        run_logged(command, self.env(), self.logs / f"predict_{label}.log", f"predicting with {label}", echo=echo)
        return output


# -- the output folder: what a run may write and remove ----------------------------------------------------

MARKER = ".unifocal_outputs.json"
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class OutputClaim:
    """The entries (files or folders directly in ``root``) a run writes, and the existing ones it removes
    first. Made by :func:`check_output`, carried out by :func:`claim_output`."""

    root: Path
    entries: tuple[str, ...]
    remove: tuple[Path, ...]


def nnunet_variables(environ: Optional[Mapping[str, str]] = None) -> dict[str, Path]:
    """The folders the nnU-Net variables point to (those that are set), as ``{"$nnUNet_raw": path}``."""
    env = os.environ if environ is None else environ
    return {f"${name}": Path(env[name]) for name in NNUNET_VARIABLES if env.get(name, "").strip()}


def _recorded_entries(root: Path) -> set[str]:
    """The entries earlier unifocal runs recorded creating in ``root`` (none when the record is unreadable)."""
    try:
        record = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    entries = record.get("entries") if isinstance(record, dict) else None
    return {e for e in entries if isinstance(e, str)} if isinstance(entries, list) else set()


def check_output(
    root: Path, entries: Sequence[str], overwrite: bool, protected: Mapping[str, Path]
) -> OutputClaim:
    """Decide what a run may do in its output folder ``root``, without touching anything.

    The run writes ``entries`` (names directly in ``root``). An entry that already exists is removed only
    when all of these hold:

    - ``overwrite`` is given;
    - an earlier unifocal run created it: it is listed in ``root/.unifocal_outputs.json``, the record every
      run keeps of the entries it created (:func:`claim_output`);
    - it is not a symbolic link (unifocal never creates one);
    - it neither is nor contains a protected path: a folder an nnU-Net variable points to
      (:func:`nnunet_variables`) or data the run reads (a ``--dataset``, ``--workspace``, predictions).

    Raises:
        ValueError: naming the first entry that may not be removed, and why.
    """
    root = Path(root).resolve()
    recorded = _recorded_entries(root)
    guarded = {name: Path(path).resolve() for name, path in protected.items()}
    remove = []
    for name in entries:
        path = root / name
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; unifocal does not replace it: choose another --output")
        for what, target in guarded.items():
            if path == target or path in target.parents:
                relation = "is" if path == target else "contains"
                raise ValueError(f"{path} {relation} {what} ({target}); unifocal never removes it: choose another "
                                 "--output")
        if name not in recorded:
            raise ValueError(f"{path} already exists and no unifocal run recorded creating it (in {root / MARKER}); "
                             "move it away or choose another --output")
        if not overwrite:
            raise ValueError(f"{path} exists from an earlier unifocal run; pass --overwrite to replace it, or "
                             "choose another --output")
        remove.append(path)
    return OutputClaim(root, tuple(entries), tuple(remove))


def claim_output(claim: OutputClaim) -> None:
    """Remove what :func:`check_output` allowed and record the run's entries as unifocal's (before they
    exist, so that an interrupted run's partial output can be replaced with ``--overwrite`` too)."""
    claim.root.mkdir(parents=True, exist_ok=True)
    for path in claim.remove:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    entries = sorted(_recorded_entries(claim.root) | set(claim.entries))
    record = {"created_by": "unifocal", "entries": entries,
              "note": "entries a later unifocal run may replace with --overwrite; nothing else is ever removed"}
    (claim.root / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# -- the loss settings a trainer will use ------------------------------------------------------------------

def trainer_loss(trainer: str) -> Optional[str]:
    """The loss (a key of ``nnunet_trainers.loss_builder.LOSS_SPECS``) that the unifocal trainer named
    ``trainer`` builds, also for a name that carries settings; None for any other trainer (nnU-Net's, a
    user's, ``BaselineTrainerShort``). Imports no nnunetv2."""
    from nnunet_trainers import TRAINER_LOSSES

    return TRAINER_LOSSES.get(trainer.partition("_")[0])


def check_loss_settings(
    trainer: str,
    loss: Optional[LossSettings],
    num_channels: int,
    has_regions: bool = False,
    ignore_label: Optional[int] = None,
    options: Optional[Mapping[str, str]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> None:
    """Run the checks ``trainer`` runs when it builds its loss, on the settings it will get: the ``UNIFOCAL_*``
    variables of ``environ`` (default ``os.environ``) overridden by ``loss``, for a dataset of
    ``num_channels`` classes (regions). ``options`` names where each of ``loss``'s values came from (e.g.
    ``{"gamma": "--gamma"}``), for the error message.

    Trainers other than the unifocal ones (nnU-Net's, a user's) read no unifocal settings: nothing to check.
    ``gamma="auto"`` takes its values from the fold's labels at training time; here a proposal that makes
    every foreground class rare stands in for it, so that the other settings are checked with it.

    Raises:
        ValueError: (``nnunet_trainers.config.SettingsError``) naming the setting and where it came from.
    """
    key = trainer_loss(trainer)
    if key is None:
        return
    from nnunet_trainers.config import SETTING_ENV, load_settings, parse_setting
    from nnunet_trainers.loss_builder import TrainerState, resolve

    from .gamma import propose_gamma

    settings = load_settings(os.environ if environ is None else environ)
    given, sources = {}, dict(settings.sources)
    for setting, text in (loss.env() if loss is not None else {}).items():
        setting = next(k for k, variable in SETTING_ENV.items() if variable == setting)
        where = (options or {}).get(setting, SETTING_ENV[setting])
        given[setting] = parse_setting(setting, text, f"{where} {text}")
        sources[setting] = where
    settings = replace(settings, **given, sources=sources)
    state = TrainerState(has_regions=has_regions, num_channels=num_channels, ignore_label=ignore_label)
    if has_regions:
        stand_in = propose_gamma([0.1] * num_channels, multilabel=True)
    else:
        stand_in = propose_gamma([0.9] + [0.1 / (num_channels - 1)] * (num_channels - 1))
    resolve(key, settings, state, gamma_provider=lambda: stand_in)
