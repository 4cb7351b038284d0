"""``unifocal sweep`` as jobs: submitit's local executor (``--jobs``) end to end, and the SLURM path end to end
against a fake SLURM (tests/fake_slurm.py) that runs the submitted scripts on this machine."""

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest

from fake_slurm import install
from unifocal.cli import main

pytest.importorskip("nnunetv2")
pytest.importorskip("submitit")

TINY = ["--train-cases", "5", "--test-cases", "2", "--image-size", "32", "--epochs", "1", "--iterations", "2",
        "--val-iterations", "1", "--baselines", "--poll", "0.5"]


@pytest.fixture(autouse=True)
def fresh_slurm_states():
    """submitit keeps the states of ended jobs by job id for the whole process; each test's fake cluster numbers
    its jobs from 1000 again, so a test must not see the states of another's jobs."""
    import submitit

    submitit.SlurmJob.watcher.clear()
    yield
    submitit.SlurmJob.watcher.clear()


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_slurm_needs_its_commands_and_slurm_options_need_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "-o", str(tmp_path / "out"), "--launcher", "slurm", *TINY])
    assert str(stop.value) == ("unifocal sweep: --launcher slurm: sbatch, sacct, srun not found on PATH; run the "
                               "sweep on a machine that submits SLURM jobs (a login node), or use --launcher local")
    for bad, message in ((["--slurm-partition", "gpu"], "--slurm-partition needs --launcher slurm"),
                         (["--jobs", "0"], "--jobs must be >= 1"), (["--folds", "0", "0"], "holds a fold twice")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            main(["sweep", "-o", str(tmp_path / "out"), *TINY, *bad])
    install(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for bad, message in ((["--slurm-time", "two days"], "--slurm-time 'two days': expected minutes"),
                         (["--slurm-option", "qos"], "--slurm-option 'qos': expected KEY=VALUE")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            main(["sweep", "-o", str(tmp_path / "out"), "--launcher", "slurm", *TINY, *bad])
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    output = tmp_path_factory.mktemp("sweep") / "local"
    rc = main(["sweep", "-o", str(output), "--gammas", "0.2", "0.6", "--folds", "0", "1", "--jobs", "2", *TINY])
    return rc, output


@pytest.mark.slow
def test_local_jobs_two_settings_two_folds(local_sweep, capsys):
    rc, output = local_sweep
    assert rc == 0
    record = json.loads((output / "jobs" / "record.json").read_text())["jobs"]
    assert sorted(record) == ["gamma=0.2 fold 0", "gamma=0.2 fold 1", "gamma=0.6 fold 0", "gamma=0.6 fold 1"]
    assert {(e["state"], e["launcher"]) for e in record.values()} == {("COMPLETED", "local")}
    for key in record:  # each job trained its own fold with its own gamma
        gamma, fold = re.fullmatch(r"gamma=(\S+) fold (\d)", key).groups()
        trained = output / "results" / f"gamma_{gamma}" / "Dataset990_UnifocalSynthetic"
        (loss_record,) = trained.glob(f"*/fold_{fold}/unifocal_loss.json")
        assert json.loads(loss_record.read_text())["params"]["gamma"] == pytest.approx(float(gamma))
        assert len(list((output / "predictions" / f"gamma_{gamma}" / f"fold_{fold}").glob("*.png"))) == 2
    # sweep.csv: the mean over folds of each fold's mean DSC, the sd over folds, from the per-case table.
    per_case = _rows(output / "comparison" / "per_case.csv")
    assert len(per_case) == 2 * 2 * 2 * 2  # settings x folds x cases x classes
    row = next(r for r in _rows(output / "sweep.csv") if r["method"] == "gamma=0.6" and r["class"] == "organ")
    fold_means = [np.mean([float(r["DSC"]) for r in per_case if r["method"] == "gamma=0.6" and r["class"] == "organ"
                           and r["case"].startswith(f"fold_{fold}/")]) for fold in (0, 1)]
    assert float(row["mean"]) == pytest.approx(np.mean(fold_means))
    assert float(row["sd"]) == pytest.approx(np.std(fold_means, ddof=1))
    assert (row["n"], row["missing"]) == ("2", "")
    assert (output / "sweep.png").stat().st_size > 1000
    # The same command again: nothing to run, the results collected again.
    capsys.readouterr()
    assert main(["sweep", "-o", str(output), "--gammas", "0.2", "0.6", "--folds", "0", "1", "--jobs", "2", *TINY]) == 0
    assert "4 runs: 4 completed before, 0 submitted before, 0 to run" in capsys.readouterr().out
    # Another schedule for the same runs is not mixed in.
    with pytest.raises(SystemExit, match=re.escape("gamma=0.2 fold 0 was run before with other settings")):
        main(["sweep", "-o", str(output), "--gammas", "0.2", "0.6", "--folds", "0", "1", *TINY, "--epochs", "2"])


@pytest.mark.slow
def test_slurm_jobs_resources_environment_failure_and_resubmission(local_sweep, tmp_path, monkeypatch, capsys):
    rc, workspace = local_sweep
    assert rc == 0
    install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_DIR", str(tmp_path / "slurm"))
    monkeypatch.setenv("FAKE_SLURM_FAIL", "gamma_0.6")  # the cluster kills this run's job
    output = tmp_path / "out"
    sweep = ["sweep", "-o", str(output), "--workspace", str(workspace), "--gammas", "0.3", "0.6", *TINY,
             "--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-gpus", "1", "--slurm-time", "30",
             "--slurm-mem", "4G", "--slurm-account", "lab", "--slurm-option", "qos=high"]
    assert main(sweep) == 1
    printed = capsys.readouterr().out
    scripts = {p.stem: p.read_text() for p in (tmp_path / "slurm").glob("*.sh")}
    assert len(scripts) == 2
    for text in scripts.values():
        for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=30", "#SBATCH --mem=4G",
                     "#SBATCH --account=lab", "#SBATCH --qos=high", "export UNIFOCAL_NUM_EPOCHS=1",
                     f"export nnUNet_raw={workspace / 'nnUNet_raw'}"):
            assert line in text
    assert {re.search(r"export UNIFOCAL_GAMMA=(\S+)", t).group(1) for t in scripts.values()} == {"0.3", "0.6"}
    failed_id = next(i for i, t in scripts.items() if "UNIFOCAL_GAMMA=0.6" in t)
    assert re.search(rf"gamma=0.6 fold 0: FAILED \(job {failed_id}\).*log: .*{failed_id}_0_log.err", printed)
    assert "missing: gamma=0.6 fold 0: FAILED" in printed
    rows = {(r["method"], r["class"]): r for r in _rows(output / "sweep.csv")}
    assert rows[("gamma=0.6", "organ")]["mean"] == "" and rows[("gamma=0.6", "organ")]["missing"] == "fold 0 FAILED"
    assert 0 <= float(rows[("gamma=0.3", "organ")]["mean"]) <= 1
    assert {r["method"] for r in _rows(output / "comparison" / "per_case.csv")} == {"gamma=0.3"}
    # --status: every job with its state, the failed one with its log.
    assert main(["sweep", "--status", "-o", str(output)]) == 0
    status = capsys.readouterr().out
    assert re.search(r"gamma=0.3 fold 0\s+slurm\s+\d+\s+COMPLETED", status)
    assert re.search(rf"gamma=0.6 fold 0\s+slurm\s+{failed_id}\s+FAILED\s+log: ", status)
    # The same command again submits the failed run only.
    assert main(sweep) == 1
    assert len(list((tmp_path / "slurm").glob("*.sh"))) == 3
    assert "2 runs: 1 completed before, 0 submitted before, 1 to run (SLURM jobs)" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "slurm")


def test_slurm_ctrl_c_stops_waiting_not_the_jobs(tmp_path, monkeypatch, capsys):
    # A planned dataset of one's own; the fake cluster holds the jobs (PENDING), so nothing trains.
    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    folder = raw / "Dataset220_Mine"
    (folder / "labelsTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1, "lesion": 2},
                                                     "file_ending": ".png", "channel_names": {"0": "CT"},
                                                     "numTraining": 5}))
    (preprocessed / folder.name).mkdir(parents=True)
    (preprocessed / folder.name / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}}}))
    install(tmp_path / "bin")
    for name, value in (("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"), ("nnUNet_raw", str(raw)),
                        ("nnUNet_preprocessed", str(preprocessed)), ("FAKE_SLURM_DIR", str(tmp_path / "slurm")),
                        ("FAKE_SLURM_HOLD", "1")):
        monkeypatch.setenv(name, value)
    import unifocal.runs.launch as launch

    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch.time, "sleep", interrupt)
    output = tmp_path / "out"
    sweep = ["sweep", "-o", str(output), "--dataset", "220", "--gammas", "0.3", "--folds", "0", "1", *TINY,
             "--launcher", "slurm"]
    assert main(sweep) == 130
    printed = capsys.readouterr().out
    assert "stopped waiting; 2 SLURM jobs are still queued or running" in printed
    assert f"`unifocal sweep --status -o {output}`" in printed and "scancel 1000 1001" in printed
    record = json.loads((output / "jobs" / "record.json").read_text())["jobs"]
    assert {k: (e["job_id"], e["state"]) for k, e in record.items()} == {
        "gamma=0.3 fold 0": ("1000", "PENDING"), "gamma=0.3 fold 1": ("1001", "PENDING")}
    assert main(["sweep", "--status", "-o", str(output)]) == 0
    assert len(re.findall(r"slurm\s+100[01]\s+PENDING", capsys.readouterr().out)) == 2
    # --overwrite while the earlier jobs may run is refused; the same command waits for them, submits nothing.
    with pytest.raises(SystemExit, match=re.escape("jobs 1000 1001 of the earlier sweep")):
        main([*sweep, "--overwrite"])
    assert main(sweep) == 130
    assert "2 runs: 0 completed before, 2 submitted before, 0 to run" in capsys.readouterr().out
    assert len(list((tmp_path / "slurm").glob("*.sh"))) == 2
    import subprocess

    subprocess.run(["scancel", "1000", "1001"], check=True)  # as the sweep said; sacct then says so
    assert main(["sweep", "--status", "-o", str(output)]) == 0
    assert len(re.findall(r"slurm\s+100[01]\s+CANCELLED", capsys.readouterr().out)) == 2
