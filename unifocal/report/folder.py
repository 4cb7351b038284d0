"""A report's output folder: checked and locked before any case is evaluated, written atomically.

The report is written into a hidden temporary folder next to the output folder, which then takes its name in
one rename, so an interrupted or failed run leaves no report that looks complete (only the hidden folder, which
the run removes when it can). An existing output folder is replaced only when it holds nothing but report files
(:data:`REPORT_NAMES`, the files of an earlier report) and replacing was asked for: the old report goes as a
whole, so no plot of an older run stays next to a new table, and nothing else is ever deleted. A lock file next
to the output folder keeps two runs apart; one left by a process that no longer runs (on this machine) is
taken over.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import Optional, Union

from ..io import printable
from .evaluation import Evaluation
from .plots import box_plots
from .tables import markdown_report, write_per_case_csv, write_summary_csv

__all__ = ["REPORT_NAMES", "report_files", "ReportFolder", "write_report"]

REPORT_NAMES = ("table.md", "summary.csv", "per_case.csv", "boxplots.png")


def report_files(folder: Union[str, Path], plot: bool = True) -> list[Path]:
    """The files :func:`write_report` writes into ``folder``."""
    return [Path(folder) / name for name in REPORT_NAMES[: 4 if plot else 3]]


class ReportFolder:
    """The output folder of one run, as a context manager: entering checks it (see the module docstring) and
    takes the lock, :meth:`write` writes the report, leaving releases the lock and removes what an
    unfinished write left.

    Raises (on entering):
        ValueError: the folder is a file, holds files that are not report files, holds a report and
            ``overwrite`` is False, its parent cannot be written, or another run holds the lock.
    """

    def __init__(self, folder: Union[str, Path], overwrite: bool = False):
        self.folder = Path(folder)
        self.overwrite = overwrite
        self._lock: Optional[Path] = None
        self._partial = self.folder.parent / f".{self.folder.name}.partial-{os.getpid()}"

    def __enter__(self) -> "ReportFolder":
        self.check()
        self._take_lock()
        return self

    def __exit__(self, *exc) -> None:
        if self._partial.exists():
            shutil.rmtree(self._partial, ignore_errors=True)
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    def check(self) -> None:
        """Check the folder as entering does, without taking the lock (raises ValueError)."""
        shown = printable(self.folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"{shown} is a file, not a folder; choose another output folder")
        ancestor = self.folder.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write {shown}: {printable(ancestor)} is not a writable folder; choose another "
                             "output folder")
        if not self.folder.is_dir():
            return
        entries = sorted(entry.name for entry in self.folder.iterdir())
        foreign = [name for name in entries if name not in REPORT_NAMES]
        if foreign:
            raise ValueError(f"{shown} holds {printable(foreign[0])}, which is not a report file; choose a new or "
                             "empty output folder (a report replaces its folder whole)")
        if entries and not self.overwrite:
            raise ValueError(f"{shown} holds a report ({entries[0]}); pass --overwrite to replace it")

    def _take_lock(self) -> None:
        parent = self.folder.parent
        lock = parent / f".{self.folder.name}.lock"
        owner = f"{socket.gethostname()} {os.getpid()}\n"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for _ in range(2):
                try:
                    with open(lock, "x", encoding="utf-8") as handle:
                        handle.write(owner)
                    self._lock = lock
                    return
                except FileExistsError:
                    if not _stale(lock):
                        raise ValueError(f"another run is writing {printable(self.folder)} (lock file "
                                         f"{printable(lock)}: {_read(lock) or 'unreadable'}); wait for it to end, "
                                         "or delete the lock file if it has") from None
                    # The ended run's unfinished report goes with its lock.
                    ended = _read(lock).rpartition(" ")[2]
                    shutil.rmtree(parent / f".{self.folder.name}.partial-{ended}", ignore_errors=True)
                    lock.unlink(missing_ok=True)
        except OSError as error:
            raise ValueError(f"cannot write next to {printable(self.folder)} ({error.strerror or error}); choose an "
                             "output folder in a writable place") from None
        raise ValueError(f"{printable(lock)}: could not take the lock; retry")

    def write(self, evaluation: Evaluation, baseline: Optional[str], title: Optional[str] = None,
              plot: bool = True) -> tuple[str, list[Path]]:
        """Write the report (:func:`report_files`), then give it the folder's name; returns the Markdown report
        and the written paths."""
        self._partial.mkdir()
        table, summary, per_case, *plot_path = report_files(self._partial, plot)
        baseline = baseline if len(evaluation.methods) > 1 else None
        report = markdown_report(evaluation, baseline)
        if title:
            report = f"## {title}\n\n" + report
        table.write_text(report, encoding="utf-8")
        write_summary_csv(evaluation, baseline, summary)
        write_per_case_csv(evaluation, per_case)
        if plot_path:
            box_plots(evaluation, plot_path[0], title)
        self.check()  # nothing but report files arrived in the meantime
        if self.folder.is_dir():
            previous = self.folder.parent / f".{self.folder.name}.replaced-{os.getpid()}"
            os.rename(self.folder, previous)
            os.rename(self._partial, self.folder)
            for name in REPORT_NAMES:
                (previous / name).unlink(missing_ok=True)
            previous.rmdir()
        else:
            os.rename(self._partial, self.folder)
        return report, report_files(self.folder, plot)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _stale(lock: Path) -> bool:
    """Whether the lock was taken by a process of this machine that no longer runs."""
    host, _, pid = _read(lock).rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process that runs
        return False
    return False


def write_report(
    evaluation: Evaluation,
    baseline: Optional[str],
    folder: Union[str, Path],
    title: Optional[str] = None,
    plot: bool = True,
    overwrite: bool = True,
) -> tuple[str, list[Path]]:
    """Write the report of ``evaluation`` into ``folder`` as :class:`ReportFolder` does (replacing an earlier
    report there unless ``overwrite`` is False); returns the Markdown report and the written paths."""
    with ReportFolder(folder, overwrite) as target:
        return target.write(evaluation, baseline, title, plot)
