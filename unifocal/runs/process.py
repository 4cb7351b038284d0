"""Running one pipeline step as a child process, with a complete log and progress lines.

:func:`run_logged` runs a command (nnU-Net's console scripts), writes its merged output to a log file line by
line, and raises :class:`StageError` with the log's last lines when the command fails; a SIGTERM or Ctrl-C
kills the child and everything it started. :class:`Reporter` prints progress lines with the elapsed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TextIO

__all__ = ["StageError", "Reporter", "run_logged"]


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


