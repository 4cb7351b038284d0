"""``unifocal demo`` and ``unifocal sweep`` end to end through the real nnU-Net pipeline, on a tiny setting
(a few cases, 1 epoch of 2 iterations), plus the pieces that need no training."""

import csv
import json
import os
import re

import numpy as np
import pytest

from nnunet_trainers.config import SETTING_ENV
from unifocal.cli import main
from unifocal.commands.demo import DEMO_ENTRIES
from unifocal.runs.loss_check import trainer_loss
from unifocal.runs.nnunet_log import EpochLogParser
from unifocal.runs.output import check_output, claim_output, record_outputs
from unifocal.runs.workspace import Schedule, Workspace

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
    assert "UnifiedFocal loss settings: asymmetric_unified_focal: weight 0.5, delta 0.6, gamma 0.4," in printed
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
    # Each gamma's paired test against the baseline is the one over the per-case DSC pairs of the report.
    from unifocal.metrics import paired_wilcoxon

    per_case = _read_csv(output / "comparison" / "per_case.csv")
    row = next(r for r in rows if r["method"] == "gamma=0.7" and r["class"] == "lesion")

    def dsc(method):
        return [float(r["DSC"]) for r in sorted(per_case, key=lambda r: r["case"])
                if r["method"] == method and r["class"] == "lesion"]

    expected = paired_wilcoxon(dsc("gamma=0.7"), dsc("DC+CE"))
    assert (row["baseline"], int(row["n_pairs"])) == ("DC+CE", expected.n)
    assert float(row["p_value"]) == pytest.approx(expected.p_value)
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
    from nnunet_trainers.config import Settings, settings_environment

    settings = Settings.of({"gamma": "auto", "delta": 0.6})
    assert settings_environment(settings) == {"UNIFOCAL_GAMMA": "auto", "UNIFOCAL_DELTA": "0.6"}
    with pytest.raises(ValueError, match="epochs"):
        Schedule(0, 1, 1)


@pytest.fixture
def no_pipeline(monkeypatch):
    """Every expensive step fails the test if reached: argument checks must stop a run before them."""
    from unifocal import synthetic

    def reached(*args, **kwargs):
        raise AssertionError("an expensive step was reached")

    monkeypatch.setattr(synthetic, "write_nnunet_dataset", reached)
    for step in ("plan_and_preprocess", "train", "predict"):
        monkeypatch.setattr(Workspace, step, reached)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", *SETTING_ENV.values(), "UNIFOCAL_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _error(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _earlier_demo_output(root):
    """An output folder as an earlier demo left it: its entries recorded, a file in each."""
    claim = check_output(root, DEMO_ENTRIES, False, {})
    claim_output(claim)
    for name in DEMO_ENTRIES:
        (root / name / "run").mkdir(parents=True)
        (root / name / "kept.txt").write_text(name)
        (root / name / "run" / "written.txt").write_text(name)
    record_outputs(claim)


def _kept(root):
    return sorted(p.parent.name for p in root.glob("*/kept.txt"))


def test_demo_refuses_foreign_folders_and_checks_before_writing(tmp_path, capsys, no_pipeline):
    (tmp_path / "nnUNet_results").mkdir()
    for extra in ([], ["--overwrite"]):
        assert main(["demo", "-o", str(tmp_path), *TINY, *extra]) == 2
        assert "nnUNet_results already exists and no unifocal run recorded creating it" in _error(capsys)
    assert (tmp_path / "nnUNet_results").is_dir()
    with pytest.raises(SystemExit, match="train-cases"):
        main(["demo", "-o", str(tmp_path / "x"), "--train-cases", "3"])
    with pytest.raises(SystemExit, match=re.escape("gamma=1.5 (UnifiedFocalTrainerShort): invalid settings for the "
                                                   "asymmetric_unified_focal loss (gamma from --gammas): gamma must "
                                                   "lie in [0, 1)")):
        main(["sweep", "-o", str(tmp_path / "y"), "--gammas", "1.5"])
    # The range is the loss's own: the focal loss takes any gamma >= 0 (stopped at the first expensive step).
    with pytest.raises(AssertionError, match="expensive step"):
        main(["sweep", "-o", str(tmp_path / "f"), "--trainer", "FocalTrainerShort", "--gammas", "1", "2", "--debug"])
    with pytest.raises(SystemExit, match=re.escape("gamma=-1 (FocalTrainerShort): invalid settings for the focal")):
        main(["sweep", "-o", str(tmp_path / "g"), "--trainer", "FocalTrainerShort", "--gammas", "-1"])
    for bad, message in ((["--fold", "one"], "--fold must be a fold number"), (["--image-size", "16"], "--image-size"),
                         (["--dataset-id", "1000"], "--dataset-id must be in [1, 999]"), (["--seed", "-1"], "--seed")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            main(["demo", "-o", str(tmp_path / "z"), *TINY, *bad])
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()


@pytest.mark.parametrize("bad, message", [
    (["--gamma", "1.5"], "gamma from --gamma): gamma must lie in [0, 1)"),
    (["--gamma", "0.1,0.2"], "gamma [--gamma] has 2 values but this dataset has 3 classes"),
    (["--delta", "1.5"], "delta from --delta"),
    (["--weight", "nan"], "--weight nan: expected a finite number"),
])
def test_demo_checks_loss_settings_before_any_step(tmp_path, capsys, no_pipeline, bad, message):
    # Used to fail after data generation, planning and the whole baseline training; with --overwrite the
    # earlier output was deleted first. Now nothing is written or removed.
    _earlier_demo_output(tmp_path)
    with pytest.raises(SystemExit, match=re.escape(message)) as stop:
        main(["demo", "-o", str(tmp_path), *TINY, "--overwrite", *bad])
    assert stop.value.code == 2
    assert _kept(tmp_path) == sorted(DEMO_ENTRIES)


def test_demo_checks_the_environment_the_trainer_reads(tmp_path, no_pipeline, monkeypatch):
    monkeypatch.setenv("UNIFOCAL_RARE_CLASSES", "7")
    with pytest.raises(SystemExit, match=re.escape("rare_classes [UNIFOCAL_RARE_CLASSES] names classes [7]")):
        main(["demo", "-o", str(tmp_path / "out"), *TINY])
    assert not (tmp_path / "out").exists()


def test_demo_rerun_needs_overwrite_and_keeps_nnunet_folders(tmp_path, capsys, no_pipeline, monkeypatch):
    _earlier_demo_output(tmp_path)
    assert main(["demo", "-o", str(tmp_path), *TINY]) == 2
    assert "exists from an earlier unifocal run; pass --overwrite" in _error(capsys)
    # A folder an nnU-Net variable points to is never removed, even when a unifocal run created it.
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw"))
    assert main(["demo", "-o", str(tmp_path), *TINY, "--overwrite"]) == 2
    assert f"nnUNet_raw is $nnUNet_raw ({tmp_path / 'nnUNet_raw'}); unifocal never removes it" in _error(capsys)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "nnUNet_raw" / "Dataset001_Mine"))
    assert main(["demo", "-o", str(tmp_path), *TINY, "--overwrite"]) == 2
    assert "nnUNet_raw contains $nnUNet_raw" in _error(capsys)
    assert _kept(tmp_path) == sorted(DEMO_ENTRIES)
    # With --overwrite and nothing protected, the recorded entries are replaced, and only they.
    monkeypatch.delenv("nnUNet_raw")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(AssertionError, match="expensive step"):  # --debug: the test's error propagates
        main(["demo", "-o", str(tmp_path), *TINY, "--overwrite", "--debug"])
    assert _kept(tmp_path) == [] and (tmp_path / "notes.txt").read_text() == "mine"


def _planned_dataset(raw, preprocessed, dataset_id=220):
    """A user's nnU-Net dataset, raw and preprocessed (with a 2d configuration)."""
    folder = raw / f"Dataset{dataset_id:03d}_Mine"
    (folder / "labelsTr").mkdir(parents=True)
    (folder / "labelsTr" / "case.png").write_bytes(b"user data")
    meta = {"labels": {"background": 0, "organ": 1, "lesion": 2}, "file_ending": ".png",
            "channel_names": {"0": "CT"}, "numTraining": 1}
    (folder / "dataset.json").write_text(json.dumps(meta))
    plans = preprocessed / folder.name
    plans.mkdir(parents=True)
    (plans / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"2d": {}, "3d_fullres": {}}}))
    return folder


def test_sweep_dataset_inside_a_marked_output_is_never_removed(tmp_path, capsys, no_pipeline, monkeypatch):
    # An earlier demo marked the output folder; the user's nnU-Net folders lie inside it. `sweep --dataset`
    # used to delete them (the dataset it was asked to use) before training, with or without --overwrite.
    output = tmp_path / "out"
    _earlier_demo_output(output)
    folder = _planned_dataset(output / "nnUNet_raw", output / "nnUNet_preprocessed")
    monkeypatch.setenv("nnUNet_raw", str(output / "nnUNet_raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(output / "nnUNet_preprocessed"))
    sweep = ["sweep", "-o", str(output), "--dataset", "220", "--gammas", "0.3", "--baselines", *TINY, "--debug"]
    with pytest.raises(ValueError, match="logs exists from an earlier unifocal run; pass --overwrite"):
        main(sweep)
    assert _kept(output) == sorted(DEMO_ENTRIES)
    with pytest.raises(AssertionError, match="expensive step"):  # stopped at the first training
        main([*sweep, "--overwrite"])
    assert (folder / "labelsTr" / "case.png").read_bytes() == b"user data"
    assert (output / "nnUNet_preprocessed" / folder.name / "nnUNetPlans.json").is_file()
    # Only the demo's entries the sweep writes again were replaced; its nnU-Net folders are not among them.
    assert _kept(output) == sorted(set(DEMO_ENTRIES) - {"logs", "comparison"})
    # Checked before anything: the configuration, the loss settings of every run, the baseline predictions.
    (output / "logs").mkdir(exist_ok=True)
    (output / "logs" / "kept.txt").write_text("logs")
    for bad, message in ((["--configuration", "3d_lowres"], "has no configuration '3d_lowres' (it has 2d, 3d_fullres)"),
                         (["--delta", "2"], "gamma=0.3 delta=2 (UnifiedFocalTrainerShort): invalid settings"),
                         (["--baseline-predictions", f"X={tmp_path / 'none'}"], "none")):
        with pytest.raises(SystemExit, match=re.escape(message)):
            main([*sweep, "--overwrite", *bad])
        assert (output / "logs" / "kept.txt").is_file()


@pytest.mark.slow  # nnU-Net's trainer lookup imports all of its trainer modules
def test_sweep_checks_trainer_names_first(tmp_path, capsys, no_pipeline):
    with pytest.raises(SystemExit, match="nnU-Net finds no trainer NoSuchTrainer, nnUNetTrainr"):
        main(["sweep", "-o", str(tmp_path / "out"), "--trainer", "NoSuchTrainer", "--gammas", "0.3",
              "--baselines", "nnUNetTrainr", "nnUNetTrainer", *TINY])
    assert not (tmp_path / "out").exists()


def test_output_claims(tmp_path):
    from unifocal.runs.output import MARKER

    claim = check_output(tmp_path, ["a", "b.csv", "c"], False, {})
    claim_output(claim)
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "sub" / "x.txt").write_text("x")
    (tmp_path / "b.csv").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    record_outputs(claim)
    record = json.loads((tmp_path / MARKER).read_text())
    assert record["entries"] == ["a", "b.csv", "c"] and record["files"] == ["a/sub/x.txt", "b.csv"]
    claim = check_output(tmp_path, ["a", "b.csv", "c"], True, {})
    assert claim.remove == (tmp_path / "a" / "sub" / "x.txt", tmp_path / "b.csv")
    claim_output(claim)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b.csv").exists()
    assert json.loads((tmp_path / MARKER).read_text())["files"] == []
    # A recorded entry that became a symbolic link, or a record that is not JSON, removes nothing.
    (tmp_path / MARKER).write_text(json.dumps({"entries": ["a", "link"]}))
    with pytest.raises(ValueError, match="is a symbolic link"):
        check_output(tmp_path, ["link"], True, {})
    (tmp_path / MARKER).write_text("created by unifocal")
    (tmp_path / "c").mkdir()
    with pytest.raises(ValueError, match="no unifocal run recorded creating it"):
        check_output(tmp_path, ["c"], True, {})
    assert (tmp_path / "c").is_dir() and (tmp_path / "link").is_symlink()


def test_overwrite_removes_recorded_files_only(tmp_path, capsys, no_pipeline):
    # A user's files placed in any folder an earlier demo recorded: --overwrite refuses, naming the file,
    # and removes nothing (not even the recorded files of the other folders).
    users = {"nnUNet_results": "Dataset500_MyHospital/checkpoint_final.pth",
             "predictions": "my_final_model/case_001.nii.gz", "nnUNet_raw": "Dataset500_MyHospital/dataset.json",
             "nnUNet_preprocessed": "run/mine.npz", "comparison": "notes.md", "logs": "run/train.log.bak"}
    assert set(users) == set(DEMO_ENTRIES)
    for name, user_file in users.items():
        root = tmp_path / name
        _earlier_demo_output(root)
        (root / name / user_file).parent.mkdir(parents=True, exist_ok=True)
        (root / name / user_file).write_text("the user's")
        assert main(["demo", "-o", str(root), *TINY, "--overwrite"]) == 2
        assert _error(capsys).endswith(f"{root / name / user_file} was not written by a unifocal run (it is not in "
                                       f"{root / '.unifocal_outputs.json'}); unifocal removes only what it wrote: "
                                       "move it away or choose another --output")
        assert (root / name / user_file).read_text() == "the user's"
        assert _kept(root) == sorted(DEMO_ENTRIES)
        assert sorted(p.parent.parent.name for p in root.glob("*/run/written.txt")) == sorted(DEMO_ENTRIES)
    # A symbolic link inside a recorded folder is not followed, nor removed.
    root = tmp_path / "link"
    _earlier_demo_output(root)
    (root / "predictions" / "elsewhere").symlink_to(tmp_path / "nnUNet_results")
    assert main(["demo", "-o", str(root), *TINY, "--overwrite"]) == 2
    assert "predictions/elsewhere was not written by a unifocal run" in _error(capsys)
    assert (tmp_path / "nnUNet_results" / "nnUNet_results" / users["nnUNet_results"]).is_file()


def test_trainer_losses_match_the_trainers():
    expected = {"UnifiedFocalTrainer": "asymmetric_unified_focal", "SymmetricUnifiedFocalTrainer": "symmetric_unified_focal",
                "FocalTrainer": "focal", "TverskyTrainer": "tversky", "FocalTverskyTrainer": "focal_tversky",
                "ComboTrainer": "combo"}
    for name, key in expected.items():
        for variant in (name, name + "Short"):
            assert trainer_loss(variant) == key
    assert trainer_loss("UnifiedFocalTrainerShort_gamma0.3") == "asymmetric_unified_focal"  # a name with settings
    assert trainer_loss("BaselineTrainerShort") is None
    assert trainer_loss("nnUNetTrainer") is None


def test_trainer_loss_table_is_the_trainers_and_imports_no_nnunet():
    import subprocess
    import sys

    import nnunet_trainers
    import nnunet_trainers.trainers as trainers

    for name, loss in nnunet_trainers.TRAINER_LOSSES.items():
        assert (getattr(getattr(trainers, name), "unifocal_loss", "") or None) == loss
    code = ("import sys; from unifocal.runs.loss_check import trainer_loss; "
            "assert trainer_loss('ComboTrainer') == 'combo'; print('nnunetv2' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_run_logged_failure_and_termination(tmp_path):
    import signal
    import sys

    from unifocal.runs.process import StageError, run_logged

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
