"""End to end through nnU-Net's own commands, on CPU: plan_and_preprocess, nnUNetv2_train with a short
UnifiedFocalTrainer, --c, nnUNetv2_predict and nnUNetv2_find_best_configuration, for a label-mode dataset
and a region-mode dataset with an ignore label and data-driven gamma; two settings of one trainer side by
side in one nnUNet_results (trainer names that carry the settings), compared with ``unifocal compare``, and
the refusal to start a training over a run with other settings.

The trainers are made visible exactly as docs/nnunet.md says: nnUNet_extTrainer=$(unifocal nnunet-path).
Tiny 2D PNG datasets (nnunet_trainers.toy_data), a few iterations per epoch; nnUNet_def_n_proc=1,
nnUNet_compile=f, and nnUNet_n_proc_DA=0 at training time only (it breaks planning).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from nnunet_trainers.toy_data import IGNORE, LESION, ORGAN, make_toy_dataset  # noqa: E402
from unifocal.gamma import propose_gamma  # noqa: E402

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LABELS_ID, REGIONS_ID = 990, 991
TRAINER = "UnifiedFocalTrainerShort"
SHORT = {"UNIFOCAL_NUM_EPOCHS": "2", "UNIFOCAL_ITERATIONS_PER_EPOCH": "12", "UNIFOCAL_VAL_ITERATIONS": "2"}


def run(command, env, log: Path, expect_failure: bool = False):
    with open(log, "w") as handle:
        result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, stdout=handle,
                                stderr=subprocess.STDOUT, text=True)
    if expect_failure:
        assert result.returncode != 0, f"{' '.join(command)} did not fail:\n" + log.read_text()[-4000:]
    else:
        assert result.returncode == 0, f"{' '.join(command)} failed:\n" + log.read_text()[-4000:]
    return log.read_text()


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIFOCAL_")}
    ext = subprocess.run([str(BIN / "unifocal"), "nnunet-path"], capture_output=True, text=True, check=True)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_def_n_proc="1", nnUNet_compile="f",
               nnUNet_extTrainer=ext.stdout.strip(), OMP_NUM_THREADS="2")
    env.pop("nnUNet_n_proc_DA", None)
    make_toy_dataset(root / "raw", LABELS_ID, "UnifocalToy")
    make_toy_dataset(root / "raw", REGIONS_ID, "UnifocalToyRegions", regions=True, ignore=True)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(LABELS_ID), str(REGIONS_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
        env, root / "plan.log")
    return root, env


def train_env(env, **extra):
    return {**env, **SHORT, "nnUNet_n_proc_DA": "0", **extra}


def fold_folder(root: Path, dataset: str, trainer: str = TRAINER) -> Path:
    return root / "results" / dataset / f"{trainer}__nnUNetPlans__2d" / "fold_0"


def checkpoint(folder: Path) -> dict:
    return torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)


def check_prediction(folder: Path, expected_cases, allowed):
    for case in expected_cases:
        seg = np.asarray(Image.open(folder / f"{case}.png"))
        assert seg.shape == (48, 48)
        assert set(np.unique(seg)) <= allowed


def test_label_mode_train_continue_predict(nnunet, tmp_path):
    root, env = nnunet
    config = tmp_path / "loss.json"
    config.write_text(json.dumps({"gamma": [0.3, 0.5, 0.6], "lambda": 0.5}))
    run(["nnUNetv2_train", str(LABELS_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"],
        train_env(env, UNIFOCAL_CONFIG=str(config)), tmp_path / "train.log")
    folder = fold_folder(root, "Dataset990_UnifocalToy")
    first = checkpoint(folder)
    losses = [float(x) for x in first["logging"]["train_losses"]]
    assert len(losses) == 2 and losses[-1] < losses[0]
    record = first["init_args"]["unifocal_loss"]
    assert record["loss"] == "asymmetric_unified_focal"
    assert record["params"] == {"weight": 0.5, "delta": 0.6, "gamma": [0.3, 0.5, 0.6], "rare_classes": None}
    assert record["ds_weights"] == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert json.loads((folder / "unifocal_loss.json").read_text())["params"] == record["params"]
    assert (folder / "validation" / "summary.json").is_file()

    # --c with stale, invalid settings in the environment: the checkpoint's loss is used, nothing fails
    text = run(["nnUNetv2_train", str(LABELS_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
               train_env(env, UNIFOCAL_NUM_EPOCHS="3", UNIFOCAL_DELTA="0.8", UNIFOCAL_GAMMA="0.1,x",
                         UNIFOCAL_CONFIG=str(tmp_path / "deleted.json")), tmp_path / "continue.log")
    assert ("continuing with the loss settings stored in the checkpoint ({'weight': 0.5, 'delta': 0.6, 'gamma': "
            "[0.3, 0.5, 0.6], 'rare_classes': None}, deep supervision 'nnunet'); the current UNIFOCAL_* settings are "
            "NOT used (they are invalid: UNIFOCAL_CONFIG=") in text
    second = checkpoint(folder)
    losses = [float(x) for x in second["logging"]["train_losses"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert second["init_args"]["unifocal_loss"]["params"] == record["params"]
    assert json.loads((folder / "unifocal_loss.json").read_text())["params"]["delta"] == 0.6

    # prediction needs no loss settings at all (even broken ones are never read)
    out = tmp_path / "predicted"
    run(["nnUNetv2_predict", "-i", str(root / "raw" / "Dataset990_UnifocalToy" / "imagesTs"), "-o", str(out),
         "-d", str(LABELS_ID), "-c", "2d", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"],
        {**env, "UNIFOCAL_GAMMA": "not-a-number"}, tmp_path / "predict.log")
    check_prediction(out, ["test_000", "test_001"], {0, ORGAN, LESION})

    text = run(["nnUNetv2_find_best_configuration", str(LABELS_ID), "-c", "2d", "-tr", TRAINER, "-f", "0", "-np", "1"],
               env, tmp_path / "best.log")
    assert f"-tr {TRAINER}" in text
    assert (root / "results" / "Dataset990_UnifocalToy" / "inference_instructions.txt").is_file()


def raw_region_frequencies(root: Path, cases) -> list:
    labels = root / "raw" / "Dataset991_UnifocalToyRegions" / "labelsTr"
    arrays = [np.asarray(Image.open(labels / f"{case}.png")) for case in cases]
    counted = np.concatenate([a[a != IGNORE] for a in arrays])
    return [np.isin(counted, [ORGAN, LESION]).mean(), (counted == LESION).mean()]


def test_region_mode_with_ignore_label_and_auto_gamma(nnunet, tmp_path):
    root, env = nnunet
    run(["nnUNetv2_train", str(REGIONS_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"],
        train_env(env, UNIFOCAL_GAMMA="auto"), tmp_path / "train.log")
    folder = fold_folder(root, "Dataset991_UnifocalToyRegions")
    state = checkpoint(folder)
    losses = [float(x) for x in state["logging"]["train_losses"]]
    assert len(losses) == 2 and losses[-1] < losses[0]

    preprocessed = root / "preprocessed" / "Dataset991_UnifocalToyRegions"
    cache = json.loads((preprocessed / "unifocal_gamma__nnUNetPlans__2d__fold_0.json").read_text())
    train_cases = json.loads((preprocessed / "splits_final.json").read_text())[0]["train"]
    frequencies = raw_region_frequencies(root, train_cases)
    assert cache["proposal"]["frequencies"] == pytest.approx(frequencies, rel=1e-12)
    expected = propose_gamma(frequencies, multilabel=True)
    record = state["init_args"]["unifocal_loss"]
    assert record["params"]["gamma"] == pytest.approx(list(expected.gamma))
    assert record["sources"]["gamma"] == "UNIFOCAL_GAMMA"
    assert record["gamma_proposal"]["frequencies"] == pytest.approx(frequencies)

    out = tmp_path / "predicted"
    run(["nnUNetv2_predict", "-i", str(root / "raw" / "Dataset991_UnifocalToyRegions" / "imagesTs"), "-o", str(out),
         "-d", str(REGIONS_ID), "-c", "2d", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"],
        env, tmp_path / "predict.log")
    check_prediction(out, ["test_000", "test_001"], {0, ORGAN, LESION})


def test_two_settings_of_one_trainer_side_by_side(nnunet, tmp_path):
    """Two settings of one trainer (gamma 0.3 and gamma 'auto'), named by their trainer names, in one nnUNet_results."""
    root, env = nnunet
    dataset = "Dataset990_UnifocalToy"
    tiny = {"UNIFOCAL_NUM_EPOCHS": "1", "UNIFOCAL_ITERATIONS_PER_EPOCH": "3", "UNIFOCAL_VAL_ITERATIONS": "1"}
    trainers = {"gamma": "UnifiedFocalTrainerShort_gamma0.3", "auto": "UnifiedFocalTrainerShort_auto"}
    for name in trainers.values():
        run(["nnUNetv2_train", str(LABELS_ID), "2d", "0", "-tr", name, "-device", "cpu"], train_env(env, **tiny),
            tmp_path / f"{name}.log")
    gamma_folder, auto_folder = (fold_folder(root, dataset, trainers[k]) for k in ("gamma", "auto"))
    gamma_record = json.loads((gamma_folder / "unifocal_loss.json").read_text())
    auto_record = json.loads((auto_folder / "unifocal_loss.json").read_text())
    assert gamma_record["trainer"] == trainers["gamma"] and gamma_record["params"]["gamma"] == 0.3
    assert gamma_record["sources"]["gamma"] == f"trainer name {trainers['gamma']}"
    cache = json.loads((root / "preprocessed" / dataset / "unifocal_gamma__nnUNetPlans__2d__fold_0.json").read_text())
    assert auto_record["params"]["gamma"] == pytest.approx(cache["proposal"]["gamma"])
    assert checkpoint(auto_folder)["trainer_name"] == trainers["auto"]

    # a new training over the gamma-0.3 run with another delta stops before any epoch and changes nothing
    kept = {p.name: p.read_bytes() for p in gamma_folder.iterdir() if p.is_file() and not p.name.startswith("training_log")}
    text = run(["nnUNetv2_train", str(LABELS_ID), "2d", "0", "-tr", trainers["gamma"], "-device", "cpu"],
               train_env(env, **tiny, UNIFOCAL_DELTA="0.7"), tmp_path / "refused.log", expect_failure=True)
    assert "holds a training with other loss settings (delta 0.6 there, 0.7 now; recorded in unifocal_loss.json)" in text
    assert "-tr UnifiedFocalTrainerShort_gamma0.3_delta0.7" in text
    assert "Epoch 0" not in text
    assert {p.name: p.read_bytes() for p in gamma_folder.iterdir() if p.is_file()
            and not p.name.startswith("training_log")} == kept

    # the stock commands take the names: prediction, model selection, and unifocal compare tells them apart
    out = tmp_path / "predicted"
    run(["nnUNetv2_predict", "-i", str(root / "raw" / dataset / "imagesTs"), "-o", str(out), "-d", str(LABELS_ID),
         "-c", "2d", "-f", "0", "-tr", trainers["auto"], "-device", "cpu", "-npp", "1", "-nps", "1"],
        env, tmp_path / "predict.log")
    check_prediction(out, ["test_000", "test_001"], {0, ORGAN, LESION})
    text = run(["nnUNetv2_find_best_configuration", str(LABELS_ID), "-c", "2d", "-f", "0", "-np", "1",
                "--disable_ensembling", "-tr", *trainers.values()], env, tmp_path / "best.log")
    assert any(f"-tr {name}" in text for name in trainers.values())
    report = tmp_path / "compare"
    text = run(["unifocal", "compare", str(gamma_folder.parent), str(auto_folder.parent), "-o", str(report),
                "--no-plot"], env, tmp_path / "compare.log")
    table = (report / "table.md").read_text()
    assert f"| {trainers['gamma']} | asymmetric_unified_focal: weight 0.5, delta 0.6, gamma 0.3, " in table
    auto_gamma = ", ".join(f"{g:.4g}" for g in auto_record["params"]["gamma"])
    assert f"| {trainers['auto']} | asymmetric_unified_focal: weight 0.5, delta 0.6, gamma auto ({auto_gamma})" in table
