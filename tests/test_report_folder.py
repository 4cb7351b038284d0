"""The report folder: checked before any case is evaluated, locked against a second run, written atomically."""

import os
import socket

import numpy as np
import pytest

from unifocal import report
from unifocal.cli import main
from unifocal.report import ReportFolder, REPORT_NAMES, write_report


def _evaluation(tmp_path):
    from PIL import Image

    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.eye(4, dtype=np.uint8)).save(tmp_path / folder / "c.png")
    return report.evaluate({"m": {"c": tmp_path / "pred" / "c.png"}}, {"c": tmp_path / "ref" / "c.png"}, [1],
                           scoring=report.Scoring(surface=False))


def test_a_failed_write_leaves_no_report_and_keeps_the_old_one(tmp_path, monkeypatch):
    evaluation = _evaluation(tmp_path)
    out = tmp_path / "out"
    write_report(evaluation, None, out, plot=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C while the plot is drawn

    monkeypatch.setattr(report.folder, "box_plots", broken)
    with pytest.raises(KeyboardInterrupt):
        write_report(evaluation, None, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(KeyboardInterrupt):
        write_report(evaluation, None, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pred", "ref"]  # no partial folder, no lock


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "out"
    with ReportFolder(out):
        with pytest.raises(ValueError, match=r"another run is writing .*out \(lock file .*\.out\.lock: "
                                             rf"{socket.gethostname()} {os.getpid()}\); wait for it to end"):
            ReportFolder(out).__enter__()
    assert not (tmp_path / ".out.lock").exists()


def test_the_lock_of_a_process_that_ended_is_taken_over(tmp_path):
    # A run killed while writing: its lock and its unfinished report are left behind.
    (tmp_path / ".out.lock").write_text(f"{socket.gethostname()} 999999999\n")
    (tmp_path / ".out.partial-999999999").mkdir()
    (tmp_path / ".out.partial-999999999" / "table.md").write_text("half")
    with ReportFolder(tmp_path / "out"):
        assert (tmp_path / ".out.lock").read_text() == f"{socket.gethostname()} {os.getpid()}\n"
        assert not (tmp_path / ".out.partial-999999999").exists()


def test_the_output_folder_is_checked_before_any_case_is_evaluated(tmp_path, capsys, monkeypatch):
    _evaluation(tmp_path)
    evaluated = []
    monkeypatch.setattr(report, "evaluate", lambda *a, **k: evaluated.append(1))
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "out"
    rc = main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "-o", str(out)])
    assert rc == 2 and not evaluated
    assert capsys.readouterr().err.strip() == (f"unifocal compare: cannot write {out}: {tmp_path / 'file'} is not "
                                               "a writable folder; choose another output folder")


def test_report_names_are_the_files_written(tmp_path):
    _, written = write_report(_evaluation(tmp_path), None, tmp_path / "out")
    assert [p.name for p in written] == list(REPORT_NAMES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(REPORT_NAMES)
