"""nnU-Net's three steps (plan and preprocess, train, predict) through its console scripts.

nnU-Net is run through ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train`` and ``nnUNetv2_predict`` (found
next to ``sys.executable``), so nothing here imports nnunetv2. Each run gets the ``nnUNet_raw`` /
``nnUNet_preprocessed`` / ``nnUNet_results`` folders of a :class:`Workspace`, and ``nnUNet_extTrainer``
pointing at the unifocal trainers (:func:`nnunet_trainers.ext_trainer_path`). The short schedule of the
``...Short`` trainers (:class:`Schedule`) and the loss settings travel as ``UNIFOCAL_*`` environment variables
(see ``nnunet_trainers.config``). Every step writes nnU-Net's complete output to a log file
(:func:`unifocal.runs.process.run_logged`); training reports one line per epoch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from .nnunet_log import EpochLogParser
from .process import Reporter, StageError, run_logged

if TYPE_CHECKING:
    from nnunet_trainers.config import Settings

__all__ = ["Workspace", "Schedule", "nnunet_script"]


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
        loss: Optional["Settings"] = None,
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

        from nnunet_trainers.config import settings_environment

        extra = schedule.env()
        if loss is not None:
            extra.update(settings_environment(loss))
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


