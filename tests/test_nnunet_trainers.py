"""Each trainer's ``_build_loss`` against the core losses, on real nnU-Net trainers built by hand.

The trainers are constructed from a hand-written 2D plan (4 stages: three deep-supervision outputs at
48, 24 and 12 pixels, batch_dice True) in label mode, label mode with an ignore label, and region mode
with an ignore label; no preprocessed data is needed.
"""

import copy
import inspect
import json
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("nnunetv2")

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

import nnunet_trainers.trainers as T  # noqa: E402
from nnunet_trainers.checkpoint import CheckpointError  # noqa: E402
from nnunet_trainers.config import SettingsError  # noqa: E402
from nnunet_trainers.trainer_table import TRAINERS  # noqa: E402
from unifocal import losses as L  # noqa: E402

PLANS = {
    "dataset_name": "Dataset990_UnifocalToy",
    "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
    "original_median_shape_after_transp": [1, 48, 48],
    "image_reader_writer": "NaturalImage2DIO",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "experiment_planner_used": "ExperimentPlanner",
    "label_manager": "LabelManager",
    "foreground_intensity_properties_per_channel": {
        "0": {"max": 254.0, "mean": 131.9, "median": 124.0, "min": 55.0, "percentile_00_5": 69.0,
              "percentile_99_5": 234.0, "std": 35.3}},
    "configurations": {"2d": {
        "data_identifier": "nnUNetPlans_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": [48, 48], "median_image_size_in_voxels": [48.0, 48.0], "spacing": [1.0, 1.0],
        "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": 4, "features_per_stage": [32, 64, 128, 256], "conv_op": "torch.nn.modules.conv.Conv2d",
                "kernel_sizes": [[3, 3]] * 4, "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
                "n_conv_per_stage": [2, 2, 2, 2], "n_conv_per_stage_decoder": [2, 2, 2], "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": True}},
}

LABELS = {"background": 0, "organ": 1, "lesion": 2}
LABELS_IGNORE = {**LABELS, "ignore": 3}
REGIONS_IGNORE = {"background": 0, "organ": [1, 2], "lesion": [2], "ignore": 3}
# nnU-Net's own scheme for 3 outputs: 1, 1/2, 1/4 with the last set to 0, normalised.
NNUNET_WEIGHTS = [2 / 3, 1 / 3, 0.0]


def dataset_json(labels):
    out = {"channel_names": {"0": "grey"}, "labels": labels, "numTraining": 10, "file_ending": ".png"}
    if any(isinstance(v, list) for v in labels.values()):
        out["regions_class_order"] = [1, 2]
    return out


@pytest.fixture(autouse=True)
def nnunet_env(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.setenv("nnUNet_compile", "f")
    for name in ("UNIFOCAL_CONFIG", "UNIFOCAL_WEIGHT", "UNIFOCAL_DELTA", "UNIFOCAL_GAMMA", "UNIFOCAL_RARE_CLASSES",
                 "UNIFOCAL_DS_WEIGHTS", "UNIFOCAL_NUM_EPOCHS", "UNIFOCAL_ITERATIONS_PER_EPOCH",
                 "UNIFOCAL_VAL_ITERATIONS"):
        monkeypatch.delenv(name, raising=False)


def make_trainer(cls, labels=LABELS, batch_dice=True):
    plans = copy.deepcopy(PLANS)
    plans["configurations"]["2d"]["batch_dice"] = batch_dice
    plans["continue_training"] = False
    return cls(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json(labels), device=torch.device("cpu"))


def batch(labels, seed=0):
    """Deep-supervision outputs and targets as nnU-Net passes them (full resolution first)."""
    g = torch.Generator().manual_seed(seed)
    regions = any(isinstance(v, list) for v in labels.values())
    ignore = labels.get("ignore")
    channels = 2 if regions else 3
    label_map = torch.randint(0, 3, (2, 1, 48, 48), generator=g)
    if ignore is not None:
        label_map[:, :, 10:16] = ignore
    outputs, targets = [], []
    for step in (1, 2, 4):
        outputs.append(torch.randn(2, channels, 48 // step, 48 // step, generator=g, requires_grad=True))
        small = label_map[:, :, ::step, ::step]
        if regions:
            target = torch.cat([small >= 1, small == 2], 1) & (small != ignore)
            target = torch.cat([target, small == ignore], 1)  # nnU-Net appends the ignore channel last
        else:
            target = small.to(torch.int16)
        targets.append(target)
    return outputs, targets


def reference(core, outputs, targets, weights, regions_with_ignore=False):
    total = 0.0
    for w, out, tgt in zip(weights, outputs, targets):
        if w == 0:
            continue
        if regions_with_ignore:
            total = total + w * core(out, tgt[:, :-1], mask=~tgt[:, -1:])
        else:
            total = total + w * core(out, tgt)
    return total


MODE = {"multilabel": False}
IGN = {"multilabel": False, "ignore_index": 3}
REG = {"multilabel": True}

CASES = [
    (T.UnifiedFocalTrainer, lambda m: L.UnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.5, asymmetric=True, batch_dice=True, **m)),
    (T.SymmetricUnifiedFocalTrainer, lambda m: L.UnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.5, asymmetric=False, batch_dice=True, **m)),
    (T.FocalTrainer, lambda m: L.FocalLoss(gamma=2.0, **m)),
    (T.TverskyTrainer, lambda m: L.TverskyLoss(alpha=0.3, beta=0.7, batch_dice=True, **m)),
    (T.FocalTverskyTrainer, lambda m: L.FocalTverskyLoss(alpha=0.3, beta=0.7, gamma=4 / 3, batch_dice=True, **m)),
    (T.ComboTrainer, lambda m: L.ComboLoss(ce_weight=0.5, beta=0.5, batch_dice=True, **m)),
]


def _loss_with_its_defaults(row):
    """A row whose settings all keep the loss's own defaults builds the loss class with them (and nnU-Net's
    batch Dice where the loss takes it)."""
    cls = getattr(L, row.loss_class)
    batch = {"batch_dice": True} if "batch_dice" in inspect.signature(cls).parameters else {}
    return lambda m: cls(**row.fixed, **batch, **m)


# Every other row of the trainer table (a loss added by one row is tested here without another edit).
CASES += [(getattr(T, row.name), _loss_with_its_defaults(row)) for row in TRAINERS
          if row.loss is not None and getattr(T, row.name) not in {cls for cls, _ in CASES}]


@pytest.mark.parametrize("cls, core", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("labels, mode", [(LABELS, MODE), (LABELS_IGNORE, IGN), (REGIONS_IGNORE, REG)],
                         ids=["labels", "labels+ignore", "regions+ignore"])
def test_build_loss_equals_core_loss(cls, core, labels, mode):
    trainer = make_trainer(cls, labels)
    loss = trainer._build_loss()
    outputs, targets = batch(labels)
    value = loss(outputs, targets)
    expected = reference(core(mode), outputs, targets, NNUNET_WEIGHTS, regions_with_ignore=mode is REG)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
    assert -1 < value.item() < 10 and value.item() != 0  # Combo (CE - Dice) may be negative
    value.backward()
    assert all(torch.isfinite(o.grad).all() for o in outputs[:2])
    assert outputs[2].grad is None  # nnU-Net's zero weight: the lowest resolution is not evaluated
    record = trainer.my_init_kwargs[T.CHECKPOINT_KEY]
    assert record["ds_weights"] == pytest.approx(NNUNET_WEIGHTS)
    with open(f"{trainer.output_folder}/unifocal_loss.json") as handle:
        stored = json.load(handle)
    assert stored["trainer"] == cls.__name__ and stored["loss"] == record["loss"]


def test_ds_weights_match_nnunet_own_wrapper():
    ours = make_trainer(T.UnifiedFocalTrainer)._build_loss()
    theirs = nnUNetTrainer._build_loss(make_trainer(nnUNetTrainer))
    assert list(theirs.weight_factors) == pytest.approx(list(ours.weights))


@pytest.mark.parametrize("labels", [LABELS_IGNORE, REGIONS_IGNORE], ids=["labels", "regions"])
def test_ignored_voxels_do_not_count(labels):
    loss = make_trainer(T.UnifiedFocalTrainer, labels)._build_loss()
    outputs, targets = batch(labels)
    value = loss(outputs, targets)
    changed = [o.detach().clone() for o in outputs]
    for step, out in zip((1, 2, 4), changed):
        out[:, :, 10 // step:16 // step] += 100.0 * torch.randn_like(out[:, :, 10 // step:16 // step])
    torch.testing.assert_close(loss(changed, targets), value.detach(), rtol=1e-6, atol=1e-7)
    value.backward()
    assert outputs[0].grad[:, :, 10:16].abs().max() == 0
    assert outputs[0].grad[:, :, 16:].abs().max() > 0


def test_batch_dice_follows_the_plans():
    outputs, targets = batch(LABELS)
    per_sample = make_trainer(T.TverskyTrainer, batch_dice=False)._build_loss()(outputs, targets)
    expected = reference(L.TverskyLoss(alpha=0.3, beta=0.7, batch_dice=False), outputs, targets, NNUNET_WEIGHTS)
    torch.testing.assert_close(per_sample, expected)
    batched = make_trainer(T.TverskyTrainer, batch_dice=True)._build_loss()(outputs, targets)
    assert abs(batched.item() - per_sample.item()) > 1e-4


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_WEIGHT", "0.3")
    monkeypatch.setenv("UNIFOCAL_DELTA", "0.7")
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.2, 0.4, 0.6")
    monkeypatch.setenv("UNIFOCAL_RARE_CLASSES", "2")
    monkeypatch.setenv("UNIFOCAL_DS_WEIGHTS", "uniform")
    trainer = make_trainer(T.UnifiedFocalTrainer)
    loss = trainer._build_loss()
    outputs, targets = batch(LABELS)
    core = L.UnifiedFocalLoss(weight=0.3, delta=0.7, gamma=[0.2, 0.4, 0.6], rare_classes=[2], batch_dice=True)
    torch.testing.assert_close(loss(outputs, targets), reference(core, outputs, targets, [1 / 3] * 3))
    record = trainer.my_init_kwargs[T.CHECKPOINT_KEY]
    assert record["params"] == {"weight": 0.3, "delta": 0.7, "gamma": [0.2, 0.4, 0.6], "rare_classes": [2]}
    assert record["sources"]["gamma"] == "UNIFOCAL_GAMMA" and record["sources"]["ds_weights"] == "UNIFOCAL_DS_WEIGHTS"
    log = open(trainer.log_file).read()
    assert "gamma = (0.2, 0.4, 0.6)   [UNIFOCAL_GAMMA]" in log


def test_settings_from_config_file(tmp_path, monkeypatch):
    config = tmp_path / "loss.json"
    config.write_text(json.dumps({"lambda": 0.6, "gamma": [0.3, 0.5], "ds_weights": [0.5, 0.25, 0.25]}))
    monkeypatch.setenv("UNIFOCAL_CONFIG", str(config))
    monkeypatch.setenv("UNIFOCAL_DELTA", "0.55")
    trainer = make_trainer(T.SymmetricUnifiedFocalTrainer, REGIONS_IGNORE)
    loss = trainer._build_loss()
    outputs, targets = batch(REGIONS_IGNORE)
    core = L.UnifiedFocalLoss(weight=0.6, delta=0.55, gamma=[0.3, 0.5], asymmetric=False, batch_dice=True, multilabel=True)
    expected = reference(core, outputs, targets, [0.5, 0.25, 0.25], regions_with_ignore=True)
    torch.testing.assert_close(loss(outputs, targets), expected)
    sources = trainer.my_init_kwargs[T.CHECKPOINT_KEY]["sources"]
    assert sources["delta"] == "UNIFOCAL_DELTA" and sources["weight"].startswith("config file")


@pytest.mark.parametrize("env, message", [
    ({"UNIFOCAL_GAMMA": "1.2"}, "gamma must lie in \\[0, 1\\)"),
    ({"UNIFOCAL_DELTA": "abc"}, "UNIFOCAL_DELTA='abc': expected a number"),
    ({"UNIFOCAL_WEIGHT": "1.5"}, "\\(weight from UNIFOCAL_WEIGHT\\): weight \\(lambda\\) must lie in \\[0, 1\\]; got 1.5"),
    ({"UNIFOCAL_GAMMA": "0.1,0.2"}, "gamma \\[UNIFOCAL_GAMMA\\] has 2 values but this dataset has 3 classes"),
    ({"UNIFOCAL_RARE_CLASSES": "0,1,2"}, "makes every class rare"),
    ({"UNIFOCAL_RARE_CLASSES": "5"}, "names classes \\[5\\] outside 0..2"),
    ({"UNIFOCAL_DS_WEIGHTS": "1, 1"}, "ds_weights \\[UNIFOCAL_DS_WEIGHTS\\]: 2 deep supervision weights given for 3"),
    ({"UNIFOCAL_DS_WEIGHTS": "cosine"}, "expected one of \\('nnunet', 'exp', 'uniform'\\)"),
])
def test_invalid_settings_fail_with_clear_errors(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        make_trainer(T.UnifiedFocalTrainer)._build_loss()


def test_rare_classes_rejected_in_region_mode(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_RARE_CLASSES", "1")
    with pytest.raises(SettingsError, match="applies to label mode only"):
        make_trainer(T.UnifiedFocalTrainer, REGIONS_IGNORE)._build_loss()


def test_settings_a_baseline_does_not_use_are_logged_not_fatal(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_WEIGHT", "0.2")
    monkeypatch.setenv("UNIFOCAL_GAMMA", "3")
    trainer = make_trainer(T.FocalTrainer)
    loss = trainer._build_loss()
    outputs, targets = batch(LABELS)
    torch.testing.assert_close(loss(outputs, targets), reference(L.FocalLoss(gamma=3.0), outputs, targets, NNUNET_WEIGHTS))
    assert trainer.my_init_kwargs[T.CHECKPOINT_KEY]["ignored"] == {"weight": "UNIFOCAL_WEIGHT"}
    assert "weight [UNIFOCAL_WEIGHT] does not apply to this loss and is ignored" in open(trainer.log_file).read()


def test_auto_gamma_is_for_the_unified_trainers_only(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_GAMMA", "auto")
    with pytest.raises(SettingsError, match="applies to the Unified Focal trainers only"):
        make_trainer(T.FocalTverskyTrainer)._build_loss()


def test_without_deep_supervision_the_loss_takes_single_tensors():
    trainer = make_trainer(T.UnifiedFocalTrainer)
    trainer.enable_deep_supervision = False
    loss = trainer._build_loss()
    outputs, targets = batch(LABELS)
    expected = L.UnifiedFocalLoss(batch_dice=True)(outputs[0], targets[0])
    torch.testing.assert_close(loss(outputs[0], targets[0]), expected)
    assert trainer.my_init_kwargs[T.CHECKPOINT_KEY]["ds_weights"] is None


def test_short_schedule_and_baseline(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_NUM_EPOCHS", "3")
    monkeypatch.setenv("UNIFOCAL_ITERATIONS_PER_EPOCH", "7")
    trainer = make_trainer(T.UnifiedFocalTrainerShort)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (3, 7, 5)
    assert set(trainer.my_init_kwargs) == {"plans", "configuration", "fold", "dataset_json", "device"}
    baseline = make_trainer(T.BaselineTrainerShort)
    assert baseline.num_epochs == 3
    assert type(baseline._build_loss()).__name__ == "DeepSupervisionWrapper"  # nnU-Net's own DC + CE
    monkeypatch.setenv("UNIFOCAL_NUM_EPOCHS", "0")
    with pytest.raises(SettingsError, match="UNIFOCAL_NUM_EPOCHS='0': must be a positive integer"):
        make_trainer(T.FocalTrainerShort)


# --- trainers named by their settings, the fold-folder guard, checkpoints --------------------------------------


def test_trainer_named_by_settings_trains_those_settings():
    cls = T.variant_trainer("UnifiedFocalTrainer_gamma0.3_delta0.7")
    assert cls is getattr(T, "UnifiedFocalTrainer_gamma0.3_delta0.7") and issubclass(cls, T.UnifiedFocalTrainer)
    trainer = make_trainer(cls)
    assert trainer.output_folder.endswith("UnifiedFocalTrainer_gamma0.3_delta0.7__nnUNetPlans__2d/fold_0")
    outputs, targets = batch(LABELS)
    core = L.UnifiedFocalLoss(weight=0.5, delta=0.7, gamma=0.3, batch_dice=True)
    torch.testing.assert_close(trainer._build_loss()(outputs, targets), reference(core, outputs, targets, NNUNET_WEIGHTS))
    record = trainer.my_init_kwargs[T.CHECKPOINT_KEY]
    assert record["params"] == {"weight": 0.5, "delta": 0.7, "gamma": 0.3, "rare_classes": None}
    assert record["sources"] == {"gamma": "trainer name UnifiedFocalTrainer_gamma0.3_delta0.7",
                                 "delta": "trainer name UnifiedFocalTrainer_gamma0.3_delta0.7"}
    with open(f"{trainer.output_folder}/unifocal_loss.json") as handle:
        assert json.load(handle)["trainer"] == "UnifiedFocalTrainer_gamma0.3_delta0.7"


def test_short_trainer_named_by_settings_keeps_the_short_schedule(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_NUM_EPOCHS", "2")
    trainer = make_trainer(T.variant_trainer("FocalTrainerShort_gamma1-2-3"))
    assert trainer.num_epochs == 2
    outputs, targets = batch(LABELS)
    core = L.FocalLoss(gamma=[1.0, 2.0, 3.0])
    torch.testing.assert_close(trainer._build_loss()(outputs, targets), reference(core, outputs, targets, NNUNET_WEIGHTS))


def test_name_and_environment_must_agree(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.3")
    monkeypatch.setenv("UNIFOCAL_WEIGHT", "0.4")  # a setting the name leaves open comes from the environment
    trainer = make_trainer(T.variant_trainer("UnifiedFocalTrainer_gamma0.3"))
    trainer._build_loss()
    record = trainer.my_init_kwargs[T.CHECKPOINT_KEY]
    assert record["params"]["weight"] == 0.4 and record["sources"]["weight"] == "UNIFOCAL_WEIGHT"
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.5")
    with pytest.raises(SettingsError, match="gamma is given twice: 0.3 by the trainer name UnifiedFocalTrainer_gamma0.3 "
                                            "and 0.5 by UNIFOCAL_GAMMA"):
        make_trainer(T.variant_trainer("UnifiedFocalTrainer_gamma0.3"))._build_loss()


def test_new_training_refuses_a_fold_folder_with_other_settings(monkeypatch):
    make_trainer(T.UnifiedFocalTrainer)._build_loss()  # a run with the paper's defaults
    trainer = make_trainer(T.UnifiedFocalTrainer)
    record_file = f"{trainer.output_folder}/unifocal_loss.json"
    before = open(record_file).read()
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.3")
    monkeypatch.setenv("UNIFOCAL_DS_WEIGHTS", "exp")
    with pytest.raises(SettingsError) as error:
        make_trainer(T.UnifiedFocalTrainer)._build_loss()
    message = str(error.value)
    assert "holds a training with other loss settings (gamma 0.5 there, 0.3 now; ds_weights nnunet there, exp now" in message
    assert "-tr UnifiedFocalTrainer_gamma0.3_dsexp" in message and "add --c" in message
    assert open(record_file).read() == before
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.5")
    monkeypatch.setenv("UNIFOCAL_DS_WEIGHTS", "nnunet")
    make_trainer(T.UnifiedFocalTrainer)._build_loss()  # the same settings again: nnU-Net's usual restart


def test_a_loss_parameter_outside_the_table_is_a_setting_of_its_run(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_SMOOTH", "0.5")
    trainer = make_trainer(T.TverskyTrainer)
    loss = trainer._build_loss()
    outputs, targets = batch(LABELS)
    core = L.TverskyLoss(alpha=0.3, beta=0.7, smooth=0.5, batch_dice=True)
    torch.testing.assert_close(loss(outputs, targets), reference(core, outputs, targets, NNUNET_WEIGHTS))
    assert trainer.my_init_kwargs[T.CHECKPOINT_KEY]["params"] == {"delta": 0.7, "smooth": 0.5}
    monkeypatch.delenv("UNIFOCAL_SMOOTH")
    with pytest.raises(SettingsError, match="other loss settings \\(smooth 0.5 there, default now"):
        make_trainer(T.TverskyTrainer)._build_loss()


def test_refusal_spells_out_default_settings(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_DELTA", "0.8")
    make_trainer(T.TverskyTrainer)._build_loss()
    monkeypatch.delenv("UNIFOCAL_DELTA")
    with pytest.raises(SettingsError, match="\\(delta 0.8 there, 0.7 now; .*\\(-tr TverskyTrainer_delta0.7\\)"):
        make_trainer(T.TverskyTrainer)._build_loss()


def test_unreadable_record_stops_a_new_training():
    trainer = make_trainer(T.TverskyTrainer)
    with open(f"{trainer.output_folder}/unifocal_loss.json", "w") as handle:
        handle.write("{")
    with pytest.raises(SettingsError, match="cannot tell which loss settings the training in this fold folder used"):
        trainer._build_loss()


@pytest.fixture
def checkpoint_file(tmp_path, monkeypatch):
    """A checkpoint saved by a UnifiedFocalTrainer (gamma 0.3) with nnU-Net's numpy logging values."""
    import numpy as np
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as module

    monkeypatch.setattr(module, "infer_dataset_class", lambda folder: None)  # no preprocessed data here
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.3")
    trainer = make_trainer(T.UnifiedFocalTrainer)
    trainer.initialize()
    trainer.logger.log("train_losses", np.float32(0.7), 0)
    trainer._best_ema = np.float32(0.25)
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    monkeypatch.delenv("UNIFOCAL_GAMMA")
    return path, trainer


@pytest.mark.parametrize("environment, note", [
    ({"UNIFOCAL_GAMMA": "abc", "UNIFOCAL_CONFIG": "/no/such/loss.json"},
     "the current UNIFOCAL_* settings are NOT used (they are invalid: UNIFOCAL_CONFIG=/no/such/loss.json: no such file)"),
    ({"UNIFOCAL_DELTA": "0.9"}, "the current environment asked for {'delta': 0.9}, which is NOT used"),
], ids=["invalid", "other"])
def test_checkpoint_loss_is_used_whatever_the_environment(checkpoint_file, monkeypatch, environment, note):
    path, saved = checkpoint_file
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    trainer = make_trainer(T.UnifiedFocalTrainer)
    trainer.load_checkpoint(str(path))
    assert trainer.my_init_kwargs[T.CHECKPOINT_KEY]["params"]["gamma"] == 0.3
    assert trainer._best_ema == pytest.approx(0.25) and trainer.logger.get_checkpoint()["train_losses"] == [0.7]
    for mine, theirs in zip(trainer.network.state_dict().values(), saved.network.state_dict().values()):
        torch.testing.assert_close(mine, theirs)
    outputs, targets = batch(LABELS)
    core = L.UnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.3, batch_dice=True)
    torch.testing.assert_close(trainer.loss(outputs, targets), reference(core, outputs, targets, NNUNET_WEIGHTS))
    assert note in open(trainer.log_file).read()


def test_checkpoint_loaded_into_a_trainer_built_with_other_settings(checkpoint_file, monkeypatch):
    """--val_best and other loads into an initialized trainer: the loss is rebuilt from the checkpoint."""
    path, _ = checkpoint_file
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.4")
    trainer = make_trainer(T.UnifiedFocalTrainer)
    (Path(trainer.output_folder) / "unifocal_loss.json").unlink()  # a fresh fold folder
    trainer.initialize()
    trainer.load_checkpoint(str(path))
    outputs, targets = batch(LABELS)
    core = L.UnifiedFocalLoss(weight=0.5, delta=0.6, gamma=0.3, batch_dice=True)
    torch.testing.assert_close(trainer.loss(outputs, targets), reference(core, outputs, targets, NNUNET_WEIGHTS))
    assert trainer.my_init_kwargs[T.CHECKPOINT_KEY]["params"]["gamma"] == 0.3
    assert "the current environment asked for {'gamma': 0.4}, which is NOT used" in open(trainer.log_file).read()


def test_a_file_that_is_no_training_checkpoint_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="model.pth: not an nnU-Net training checkpoint"):
        make_trainer(T.FocalTrainer).load_checkpoint(str(tmp_path / "model.pth"))


def test_a_checkpoint_that_would_run_code_is_refused(checkpoint_file, tmp_path):
    path, _ = checkpoint_file
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")  # unpickling calls open(): creates the marker file

    crafted = torch.load(path, weights_only=False)
    crafted["logging"]["payload"] = Payload()
    torch.save(crafted, tmp_path / "crafted.pth")
    torch.load(tmp_path / "crafted.pth", weights_only=False)  # nnU-Net's own loading would run it ...
    assert marker.exists()
    marker.unlink()
    trainer = make_trainer(T.UnifiedFocalTrainer)
    with pytest.raises(CheckpointError, match="crafted.pth: refused, it would call io.open when unpickled") as error:
        trainer.load_checkpoint(str(tmp_path / "crafted.pth"))  # ... ours refuses before anything runs
    assert not marker.exists()
    assert not trainer.was_initialized
    assert "weights_only` set to `False`" not in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("size, reason", [(0, "the file is empty \\(0 bytes\\)"),
                                          (0.5, "the file is truncated or damaged")])
def test_an_empty_or_truncated_checkpoint_is_one_line_naming_the_file(checkpoint_file, tmp_path, size, reason):
    path, _ = checkpoint_file
    data = path.read_bytes()
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(data[:int(len(data) * size)])
    with pytest.raises(CheckpointError, match=f"^checkpoint {damaged}: not a readable PyTorch checkpoint \\({reason}\\); "
                                              "copy it again") as error:
        make_trainer(T.UnifiedFocalTrainer).load_checkpoint(str(damaged))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    ("null", "expected a JSON object {...}, got null"),
    ("[1, 2]", "expected a JSON object {...}, got list"),
    ('{"loss": "focal", "loss": "combo", "params": {}}', "key 'loss' appears more than once"),
    ('{"loss": "focal"}', "not a unifocal loss record"),
])
def test_a_fold_record_that_is_no_record_stops_a_new_training_naming_the_file(monkeypatch, content, message):
    trainer = make_trainer(T.UnifiedFocalTrainer)
    record = Path(trainer.output_folder) / "unifocal_loss.json"
    record.write_text(content)
    with pytest.raises(SettingsError, match=f"{record}: cannot tell which loss settings .*\\({re.escape(message)}") as error:
        trainer._build_loss()
    assert "\n" not in str(error.value) and record.read_text() == content


def test_focal_tversky_names_a_per_class_gamma(monkeypatch):
    monkeypatch.setenv("UNIFOCAL_GAMMA", "1,1.5,2")
    with pytest.raises(SettingsError, match="invalid settings for the focal_tversky loss \\(gamma from UNIFOCAL_GAMMA\\): "
                                            "gamma must be a number \\(the exponent is 1/gamma\\)"):
        make_trainer(T.FocalTverskyTrainer)._build_loss()


def test_each_table_row_makes_a_trainer_and_its_short_variant():
    for row in TRAINERS:
        short = getattr(T, row.name + "Short")
        base = nnUNetTrainer if row.loss is None else getattr(T, row.name)
        assert issubclass(short, base) and short.__module__ == T.__name__ and row.doc in short.__doc__
        assert getattr(short, "unifocal_loss", None) == row.loss or row.loss is None
    assert not hasattr(T, "BaselineTrainer")  # nnU-Net's own nnUNetTrainer is the long baseline


def test_a_row_naming_a_parameter_its_loss_lacks_is_refused(monkeypatch):
    from nnunet_trainers import loss_builder, trainer_table

    row = trainer_table.TrainerRow("BrokenTrainer", "broken", "TverskyLoss", "test row", renames={"delta": "delta_fn"})
    monkeypatch.setattr(loss_builder, "row_of_loss", lambda loss: row)
    loss_builder.loss_plan.cache_clear()
    try:
        with pytest.raises(TypeError, match="trainer row BrokenTrainer: TverskyLoss has no parameter delta_fn"):
            loss_builder.loss_plan("broken")
    finally:
        loss_builder.loss_plan.cache_clear()
