"""``unifocal demo`` and ``unifocal sweep`` end to end through the real nnU-Net pipeline, on a tiny setting
(a few cases, 1 epoch of 2 iterations), plus the pieces that need no training."""

import csv
import json
import os

import numpy as np
import pytest

from unifocal.cli import main
from unifocal.experiment import EpochLogParser, LossSettings, Schedule, Workspace

pytest.importorskip("nnunetv2")

TINY = ["--train-cases", "6", "--test-cases", "3", "--epochs", "1", "--iterations", "2", "--val-iterations", "1"]


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "out"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        rc = main(["demo", "-o", str(output), *TINY, "--gamma", "0.4"])
    return rc, output, buffer.getvalue()


@pytest.mark.slow
def test_demo_end_to_end(demo_run):
    from unifocal.io import read_label

    rc, output, printed = demo_run
    assert rc == 0, printed
    for stage in ("(1/6)", "(2/6)", "(3/6)", "(4/6)", "(5/6)", "(6/6)"):
        assert stage in printed
    assert "DC+CE epoch 1/1:" in printed and "UnifiedFocal epoch 1/1:" in printed
    assert "UnifiedFocal loss settings: weight=0.5, delta=0.6, gamma=0.4" in printed
    assert f"outputs in {output}" in printed
    raw = output / "nnUNet_raw" / "Dataset990_UnifocalSynthetic"
    references = sorted((raw / "labelsTs").iterdir())
    assert len(references) == 3
    for label in ("DC+CE", "UnifiedFocal"):
        predicted = sorted((output / "predictions" / label).glob("*.png"))
        assert [p.name for p in predicted] == [p.name for p in references]
    # The table's numbers are those of the prediction files: recompute one DSC independently.
    per_case = _read_csv(output / "comparison" / "per_case.csv")
    assert len(per_case) == 2 * 3 * 2
    row = next(r for r in per_case if r["method"] == "UnifiedFocal" and r["class"] == "organ")
    pred = read_label(output / "predictions" / "UnifiedFocal" / f"{row['case']}.png") == 1
    ref = read_label(raw / "labelsTs" / f"{row['case']}.png") == 1
    expected = 2 * np.sum(pred & ref) / (pred.sum() + ref.sum())
    assert float(row["DSC"]) == pytest.approx(expected)
    table = (output / "comparison" / "table.md").read_text()
    assert "| DC+CE (baseline) |" in table and "| UnifiedFocal |" in table
    assert (output / "comparison" / "boxplots.png").stat().st_size > 1000
    assert (output / "logs" / "train_DC+CE.log").is_file()


@pytest.mark.slow
def test_sweep_reuses_demo_workspace(demo_run, tmp_path):
    rc, demo_output, _ = demo_run
    assert rc == 0
    output = tmp_path / "sweep"
    rc = main(["sweep", "-o", str(output), "--workspace", str(demo_output), "--gammas", "0.2", "0.7",
               "--baselines", "--baseline-predictions", f"DC+CE={demo_output / 'predictions' / 'DC+CE'}", *TINY])
    assert rc == 0
    rows = _read_csv(output / "sweep.csv")
    assert {r["method"] for r in rows} == {"DC+CE", "gamma=0.2", "gamma=0.7"}
    assert {r["gamma"] for r in rows if r["method"] != "DC+CE"} == {"0.2", "0.7"}
    assert {r["class"] for r in rows} == {"organ", "lesion", "class mean"}
    # Each gamma trained in its own results folder with its own UNIFOCAL_GAMMA.
    for gamma in ("0.2", "0.7"):
        records = list((output / "results" / f"gamma_{gamma}").rglob("unifocal_loss.json"))
        assert len(records) == 1
        params = json.loads(records[0].read_text())
        assert params.get("params", params)["gamma"] == pytest.approx(float(gamma))
    assert (output / "sweep.png").stat().st_size > 1000
    assert "| DC+CE (baseline) |" in (output / "comparison" / "table.md").read_text()
    # The demo's data was reused, not rewritten.
    assert not (output / "nnUNet_raw").exists()


def test_epoch_log_parser():
    parser = EpochLogParser(20, ["organ", "lesion"])
    lines = [
        "2026-11-24 06:55:35.254307: Epoch 3",
        "2026-11-24 06:55:35.254368: Current learning rate: 0.01",
        "2026-11-24 06:55:50.143818: train_loss -0.4263",
        "2026-11-24 06:55:50.144028: val_loss -0.3727",
        "2026-11-24 06:55:50.144063: Pseudo dice [np.float32(0.8352), np.float32(0.0)]",
    ]
    assert all(parser.feed(line) is None for line in lines)
    summary = parser.feed("2026-11-24 06:55:50.144114: Epoch time: 14.89 s")
    assert summary == ("epoch 4/20: train loss -0.4263, val loss -0.3727, pseudo Dice organ 0.835 lesion 0.000, 14.9 s")
    assert parser.last_pseudo_dice == pytest.approx([0.8352, 0.0])
    # Older nnU-Net versions print plain floats.
    parser = EpochLogParser()
    parser.feed("Pseudo dice [0.5, 0.25, 0.125]")
    assert parser.feed("Epoch time: 2 s") == "epoch 1: pseudo Dice [0.500, 0.250, 0.125], 2.0 s"


def test_workspace_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", "/elsewhere")
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)
    monkeypatch.delenv("nnUNet_def_n_proc", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    space = Workspace.under(tmp_path)
    env = space.env(training=True, extra=Schedule(3, 4, 5).env())
    assert env["nnUNet_raw"] == str(tmp_path.resolve() / "nnUNet_raw")
    assert env["nnUNet_results"] == str(tmp_path.resolve() / "nnUNet_results")
    trainers, other = env["nnUNet_extTrainer"].split(os.pathsep)
    assert trainers.endswith(os.path.join("nnunet_trainers", "ext")) and other == "/elsewhere"
    assert (env["nnUNet_n_proc_DA"], env["nnUNet_def_n_proc"], env["nnUNet_compile"]) == ("0", "1", "f")
    assert env["GOMP_SPINCOUNT"] == "3000"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice wins
    assert space.env()["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in space.env()
    assert (env["UNIFOCAL_NUM_EPOCHS"], env["UNIFOCAL_ITERATIONS_PER_EPOCH"], env["UNIFOCAL_VAL_ITERATIONS"]) == \
        ("3", "4", "5")
    # Planning must not see nnUNet_n_proc_DA=0.
    assert "nnUNet_n_proc_DA" not in space.env(training=False)
    other_results = space.with_results(tmp_path / "r")
    assert other_results.env()["nnUNet_results"] == str((tmp_path / "r").resolve())
    assert LossSettings(gamma="auto", delta=0.6).env() == {"UNIFOCAL_GAMMA": "auto", "UNIFOCAL_DELTA": "0.6"}
    with pytest.raises(ValueError, match="epochs"):
        Schedule(0, 1, 1)


def test_demo_refuses_foreign_nnunet_folders(tmp_path):
    (tmp_path / "nnUNet_results").mkdir()
    with pytest.raises(SystemExit, match="did not create"):
        main(["demo", "-o", str(tmp_path), *TINY])
    assert (tmp_path / "nnUNet_results").is_dir()
    with pytest.raises(SystemExit, match="train-cases"):
        main(["demo", "-o", str(tmp_path / "x"), "--train-cases", "3"])
    with pytest.raises(SystemExit, match="gamma values"):
        main(["sweep", "-o", str(tmp_path / "y"), "--gammas", "1.5"])


def test_run_logged_failure_and_termination(tmp_path):
    import signal
    import sys

    from unifocal.experiment import StageError, run_logged

    log = tmp_path / "logs" / "step.log"
    script = "import sys; print('line one'); print('line two', file=sys.stderr); sys.exit(3)"
    with pytest.raises(StageError, match=r"my step failed \(exit code 3\)") as error:
        run_logged([sys.executable, "-c", script], os.environ, log, "my step")
    assert "line two" in str(error.value) and str(log) in str(error.value)
    assert "line one" in log.read_text() and "line two" in log.read_text()

    # SIGTERM while nnU-Net (here: a sleeping child) runs kills the child and surfaces as KeyboardInterrupt.
    seen = []

    def on_line(line):
        seen.append(int(line.split()[1]))
        os.kill(os.getpid(), signal.SIGTERM)

    sleeper = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run_logged([sys.executable, "-c", sleeper], os.environ, log, "sleep", on_line=on_line)
    with pytest.raises(ProcessLookupError):
        os.kill(seen[0], 0)
    assert signal.getsignal(signal.SIGTERM) is handler_before  # the previous handler is back
