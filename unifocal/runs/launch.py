"""Running a sweep's trainings as jobs, and keeping a record of them that makes the sweep resumable.

A :class:`RunSpec` is one training (one loss setting, one fold) and the prediction of its held-out cases;
:func:`run_one` does it. Where it runs is the :class:`Launcher`'s choice:

- ``local`` with one job: in this process, one run after the other, with a progress line per epoch;
- ``local`` with ``jobs`` > 1: that many at once on this machine, through submitit's local executor;
- ``slurm``: one SLURM job per run, through submitit's SLURM executor (``sbatch``; states from ``sacct``).

The record (``<output>/jobs/record.json``) lists every run with its job id, settings, fold, state and log.
Running the same sweep again skips what completed, collects what an earlier call submitted, and submits only
what has not run or failed. Stopping the wait (Ctrl-C) leaves submitted SLURM jobs running and says how to
cancel them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from ..run_settings import read_json_object
from .loss_check import describe_settings
from .process import Reporter, StageError
from .workspace import Schedule, Workspace

if TYPE_CHECKING:
    from nnunet_trainers.config import Settings

__all__ = ["RunSpec", "run_one", "JobRecord", "Launcher", "LAUNCHERS", "COMPLETED", "slurm_parameters", "job_states"]

LAUNCHERS = ("local", "slurm")
COMPLETED = "COMPLETED"
# States of a job that will not change any more without a resubmission (SLURM's names; submitit's local
# executor says FINISHED for a process that ended, whatever its outcome, which the job's result then decides).
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
          "DEADLINE", "FINISHED", "INTERRUPTED", "NO PROCESS AND NO RESULT"}
RECORD = "record.json"
# A local job is limited only by the sweep's own schedule: a week.
_LOCAL_TIMEOUT_MIN = 7 * 24 * 60


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: train ``trainer`` with ``loss`` on ``fold``, then predict ``images`` (the held-out
    cases; None: the fold's validation predictions are evaluated) into ``predictions``."""

    label: str
    fold: str
    trainer: str
    loss: Optional["Settings"]
    workspace: Workspace
    dataset_id: int
    configuration: str
    schedule: Schedule
    class_names: tuple = ()
    images: Optional[Path] = None
    predictions: Optional[Path] = None

    @property
    def key(self) -> str:
        return f"{self.label} fold {self.fold}"

    @property
    def name(self) -> str:
        """The key as a file name: ``gamma=0.3 fold 1`` -> ``gamma_0.3_fold1``."""
        return re.sub(r"[^\w.+-]+", "_", f"{self.label}_fold{self.fold}")

    def environment(self) -> dict[str, str]:
        """The nnU-Net and unifocal variables the run's training gets (written into a SLURM job's script)."""
        env = self.workspace.env(training=True, extra={**self.schedule.env(), **self._settings_environment()})
        return {k: v for k, v in env.items() if k.startswith(("nnUNet_", "UNIFOCAL_"))}

    def _settings_environment(self) -> dict[str, str]:
        from nnunet_trainers.config import settings_environment

        return settings_environment(self.loss) if self.loss is not None else {}

    def describe(self) -> dict:
        """What defines the run's result: an earlier run with another description is not this run."""
        return {"trainer": self.trainer, "settings": self._settings_environment(), "fold": self.fold,
                "schedule": self.schedule.env(), "dataset": str(self.workspace.raw), "dataset_id": self.dataset_id,
                "configuration": self.configuration, "held_out": self.images is not None}


def run_one(spec: RunSpec, report: Optional[Callable[[str], None]] = None, echo: bool = False) -> str:
    """Train one run and predict its held-out cases; returns the trained model's folder. This is the function
    a job runs."""
    report = report or Reporter()
    trained = spec.workspace.train(spec.dataset_id, spec.configuration, spec.fold, spec.trainer, spec.schedule,
                                   report, spec.loss, spec.class_names, spec.name, echo=echo)
    if spec.images is not None:
        spec.workspace.predict(spec.dataset_id, spec.configuration, spec.fold, spec.trainer, spec.images,
                               spec.predictions, spec.name, echo=echo)
    return str(trained)


@dataclass
class JobRecord:
    """``<folder>/record.json``: per run key, its job id, state, log, the launcher and what defines the run."""

    folder: Path
    jobs: dict = field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> "JobRecord":
        path = Path(folder) / RECORD
        if not path.is_file():
            return cls(Path(folder))
        data = read_json_object(path)
        if not isinstance(data.get("jobs"), dict):
            raise ValueError(f"{path} is not a sweep's job record; move it away or choose another --output")
        return cls(Path(folder), data["jobs"])

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f"{RECORD}.tmp"
        temporary.write_text(json.dumps({"jobs": self.jobs}, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.folder / RECORD)

    def check_same(self, specs: Sequence[RunSpec]) -> None:
        """Refuse when a run of ``specs`` was recorded with another definition (its result is not this run's)."""
        for spec in specs:
            entry = self.jobs.get(spec.key)
            if entry is not None and entry.get("run") != spec.describe():
                raise ValueError(f"{spec.key} was run before with other settings ({self.folder / RECORD}); pass "
                                 "--overwrite to run it again, or choose another --output")

    def update(self, spec: RunSpec, launcher: str, **values) -> None:
        entry = self.jobs.setdefault(spec.key, {})
        entry.update(label=spec.label, fold=spec.fold, trainer=spec.trainer, name=spec.name, launcher=launcher,
                     run=spec.describe(), **values)
        self.save()


def job_states(record: JobRecord) -> dict[str, str]:
    """SLURM's current state (sacct, through submitit) of the record's jobs that had not ended, by run key;
    nothing when sacct is not on PATH."""
    active = {key: entry for key, entry in record.jobs.items()
              if entry.get("launcher") == "slurm" and entry.get("job_id") and entry.get("state") not in _ENDED}
    if not active or shutil.which("sacct") is None:
        return {}
    import submitit

    jobs = {key: submitit.SlurmJob(record.folder / entry.get("name", ""), str(entry["job_id"]))
            for key, entry in active.items()}
    submitit.SlurmJob.watcher.update()
    return {key: job.watcher.get_state(job.job_id, mode="cache") for key, job in jobs.items()}


def slurm_parameters(partition=None, gpus=None, time_limit=None, mem=None, account=None, cpus=None,
                     options: Sequence[str] = ()) -> dict:
    """submitit's SLURM parameters from the sweep's options; ``options`` are ``KEY=VALUE`` sbatch options
    passed as they are (``qos=high``, ``constraint=a100``)."""
    extra = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not value.strip():
            raise ValueError(f"--slurm-option {option!r}: expected KEY=VALUE, e.g. qos=high")
        extra[key] = value.strip()
    if mem is not None:
        extra["mem"] = mem
    parameters = {"partition": partition, "gpus_per_node": gpus, "time": time_limit, "account": account,
                  "cpus_per_task": cpus, "additional_parameters": extra or None}
    return {k: v for k, v in parameters.items() if v is not None}


class Launcher:
    """Submits runs and waits for them; see the module's description."""

    def __init__(self, kind: str, folder: Path, record: JobRecord, report: Callable[[str], None], jobs: int = 1,
                 slurm: Optional[dict] = None, poll_s: float = 30.0, echo: bool = False):
        if kind not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}; got {kind!r}")
        self.kind, self.folder, self.record, self.report = kind, Path(folder), record, report
        self.jobs, self.slurm, self.poll_s, self.echo = jobs, dict(slurm or {}), poll_s, echo

    @staticmethod
    def check_slurm() -> None:
        """SLURM's commands are on PATH (before anything is written)."""
        missing = [name for name in ("sbatch", "sacct", "srun") if shutil.which(name) is None]
        if missing:
            raise ValueError(f"--launcher slurm: {', '.join(missing)} not found on PATH; run the sweep on a machine "
                             "that submits SLURM jobs (a login node), or use --launcher local")

    # -- what is left to do ------------------------------------------------------------------------------

    def pending(self, specs: Sequence[RunSpec]) -> tuple[list[RunSpec], list]:
        """Runs to submit, and the jobs of an earlier call still queued or running (SLURM), re-attached."""
        to_submit, waiting = [], []
        for spec in specs:
            entry = self.record.jobs.get(spec.key, {})
            if entry.get("state") == COMPLETED:
                continue
            if entry.get("launcher") == "slurm" and entry.get("job_id") and entry.get("state") not in _ENDED:
                import submitit

                waiting.append((spec, submitit.SlurmJob(self.folder / spec.name, str(entry["job_id"]))))
            else:
                to_submit.append(spec)
        return to_submit, waiting

    # -- running -----------------------------------------------------------------------------------------

    def run(self, specs: Sequence[RunSpec]) -> bool:
        """Run what is left of ``specs``; returns False when waiting was stopped (Ctrl-C) with jobs left."""
        to_submit, waiting = self.pending(specs)
        done = len(specs) - len(to_submit) - len(waiting)
        self.report(f"{len(specs)} runs: {done} completed before, {len(waiting)} submitted before, "
                    f"{len(to_submit)} to run ({self._where()})")
        if self.kind == "local" and self.jobs == 1:
            return self._run_here(to_submit)
        return self._wait(to_submit, waiting)

    def _where(self) -> str:
        if self.kind == "slurm":
            return "SLURM jobs"
        return "in this process" if self.jobs == 1 else f"{self.jobs} at a time on this machine"

    def _run_here(self, specs: Sequence[RunSpec]) -> bool:
        for index, spec in enumerate(specs, start=1):
            self.report(f"({index}/{len(specs)}) {spec.key}: {spec.trainer}, "
                        f"{describe_settings(spec.loss) if spec.loss else 'baseline'}")
            log = spec.workspace.logs / f"train_{spec.name}.log"
            self.record.update(spec, "local", job_id=str(os.getpid()), state="RUNNING", log=str(log))
            try:
                run_one(spec, self.report, self.echo)
            except StageError as error:
                self.report(f"FAILED: {error}")
                self.record.update(spec, "local", state="FAILED", error=str(error).splitlines()[0])
                continue
            self.record.update(spec, "local", state=COMPLETED)
        return True

    def _executor(self, spec: RunSpec):
        import submitit

        folder = self.folder / spec.name
        if self.kind == "slurm":
            # The script carries the run's variables, so that it shows what the job trains with.
            setup = [f"export {k}={shlex.quote(v)}" for k, v in sorted(spec.environment().items())]
            executor = submitit.SlurmExecutor(folder)
            executor.update_parameters(job_name=f"unifocal_{spec.name}", setup=setup, **self.slurm)
        else:  # the job inherits this environment, and run_one sets the run's (no shell involved)
            executor = submitit.LocalExecutor(folder)
            executor.update_parameters(timeout_min=_LOCAL_TIMEOUT_MIN)
        return executor

    def _submit(self, spec: RunSpec):
        job = self._executor(spec).submit(run_one, spec)
        self.record.update(spec, self.kind, job_id=str(job.job_id), state="PENDING", log=str(job.paths.stderr))
        self.report(f"submitted {spec.key}: job {job.job_id}")
        return job

    def _wait(self, to_submit: list, waiting: list) -> bool:
        queue, running = list(to_submit), list(waiting)
        limit = self.jobs if self.kind == "local" else len(queue) + len(running)
        try:
            while queue or running:
                while queue and len(running) < limit:
                    spec = queue.pop(0)
                    running.append((spec, self._submit(spec)))
                if self.kind == "slurm" and running:
                    running[0][1].watcher.update()  # one sacct call for every job of the sweep
                running = [(spec, job) for spec, job in running if not self._finished(spec, job)]
                if running:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            self._stopped(running)
            return False
        return True

    def _state(self, job) -> str:
        if self.kind == "slurm":
            return job.watcher.get_state(job.job_id, mode="cache")
        return job.state

    def _finished(self, spec: RunSpec, job) -> bool:
        state = self._state(job)
        entry = self.record.jobs.get(spec.key, {})
        if state not in _ENDED:
            if entry.get("state") != state:
                self.record.update(spec, self.kind, state=state)
                self.report(f"  {spec.key}: {state} (job {job.job_id})")
            return False
        error = job.exception()
        if error is None and (state in ("COMPLETED", "FINISHED")):
            self.record.update(spec, self.kind, state=COMPLETED)
            self.report(f"  {spec.key}: completed (job {job.job_id})")
            return True
        failed = "FAILED" if state in ("COMPLETED", "FINISHED") else state
        # submitit's message holds the job's traceback: its exception line says what went wrong.
        raised = re.findall(r"^\w*(?:Error|Exception|Interrupt)\b.*$", str(error or ""), re.M)
        reason = (raised[-1] if raised else f"the job ended {state}")[-300:]
        self.record.update(spec, self.kind, state=failed, error=reason, log=str(job.paths.stderr))
        self.report(f"  {spec.key}: {failed} (job {job.job_id}): {reason}; log: {job.paths.stderr}")
        return True

    def _stopped(self, running: list) -> None:
        ids = [str(job.job_id) for _, job in running]
        if self.kind == "slurm" and ids:
            self.report(f"stopped waiting; {len(ids)} SLURM jobs are still queued or running. Run the same command "
                        f"again to collect them, `unifocal sweep --status -o {self.folder.parent}` to see them, or "
                        f"cancel them: scancel {' '.join(ids)}")
        else:
            self.report("interrupted; run the same command again to go on from the completed runs")
        if self.kind == "local":  # the local jobs are this terminal's processes: Ctrl-C reached them too
            for spec, _ in running:
                self.record.update(spec, self.kind, state="INTERRUPTED")
