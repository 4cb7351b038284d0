"""Progress callbacks for :func:`unifocal.report.evaluation.evaluate`."""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["print_progress", "progress_bar"]


def print_progress(prefix: str = "evaluated") -> Callable[[int, int], None]:
    """A ``progress`` callback that prints ``prefix done/total`` to stderr about 10 times per run."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"  {prefix} {done}/{total} cases", file=sys.stderr, flush=True)

    return report


def progress_bar(prefix: str = "evaluated") -> Callable[[int, int], None]:
    """A ``progress`` callback: a tqdm bar on an interactive terminal when tqdm is installed, else
    :func:`print_progress`'s lines (which read well in log files)."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is None or not sys.stderr.isatty():
        return print_progress(prefix)
    bar = None

    def report(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=prefix, unit="case", file=sys.stderr)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return report
