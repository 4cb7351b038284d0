"""End to end through nnU-Net's own commands, on CPU: plan_and_preprocess, nnUNetv2_train with a short
UnifiedFocalTrainer, --c, nnUNetv2_predict and nnUNetv2_find_best_configuration, for a label-mode dataset
and a region-mode dataset with an ignore label and data-driven gamma.

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


def run(command, env, log: Path):
    with open(log, "w") as handle:
        result = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, stdout=handle,
                                stderr=subprocess.STDOUT, text=True)
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


def fold_folder(root: Path, dataset: str) -> Path:
    return root / "results" / dataset / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"


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

    # --c with different settings in the environment: the checkpoint's loss is used
    text = run(["nnUNetv2_train", str(LABELS_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
               train_env(env, UNIFOCAL_NUM_EPOCHS="3", UNIFOCAL_DELTA="0.8"), tmp_path / "continue.log")
    assert "continuing with the loss settings stored in the checkpoint" in text
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
