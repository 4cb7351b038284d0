"""Trainer names that carry loss settings (nnunet_trainers.variants) and nnU-Net's own lookup of them."""

import pytest

from nnunet_trainers.config import AUTO, Settings, SettingsError
from nnunet_trainers.variants import combine_settings, parse_variant, variant_name

LOSSES = {"UnifiedFocalTrainer": "asymmetric_unified_focal", "FocalTrainer": "focal",
          "FocalTverskyTrainer": "focal_tversky", "BaselineTrainerShort": None}


@pytest.mark.parametrize("name, given", [
    ("UnifiedFocalTrainer_gamma0.3", {"gamma": 0.3}),
    ("UnifiedFocalTrainer_auto", {"gamma": AUTO}),
    ("UnifiedFocalTrainer_gamma0.1-0.5-0.7_delta0.7", {"gamma": [0.1, 0.5, 0.7], "delta": 0.7}),
    ("UnifiedFocalTrainer_auto_lambda0.25_rare1-2_dsexp",
     {"gamma": AUTO, "weight": 0.25, "rare_classes": [1, 2], "ds_weights": "exp"}),
    ("FocalTrainer_gamma2_ds0.5-0.3-0.2", {"gamma": 2.0, "ds_weights": [0.5, 0.3, 0.2]}),
])
def test_names_give_settings_and_back(name, given):
    base, settings = parse_variant(name, LOSSES)
    assert base == name.partition("_")[0] and settings.given() == given
    assert set(settings.sources.values()) == {f"trainer name {name}"}
    assert variant_name(base, settings) == name


def test_other_names_are_not_ours():
    for name in ("nnUNetTrainer_250epochs", "UnifiedFocalTrainer", "UnifiedFocalTrainer_", "__path__", "Focal_gamma2"):
        assert parse_variant(name, LOSSES) is None


@pytest.mark.parametrize("name, message", [
    ("UnifiedFocalTrainer_delta0.7_gamma0.3", "write these settings as 'UnifiedFocalTrainer_gamma0.3_delta0.7'"),
    ("UnifiedFocalTrainer_gamma0.30", "write these settings as 'UnifiedFocalTrainer_gamma0.3'"),
    ("UnifiedFocalTrainer_gamma1.0", "write these settings as 'UnifiedFocalTrainer_gamma1'"),
    ("UnifiedFocalTrainer_gamma0.3_gamma0.5", "gamma is given twice"),
    ("UnifiedFocalTrainer_auto_gamma0.5", "gamma is given twice"),
    ("UnifiedFocalTrainer_gama0.3", "'gama0.3' is not a setting; write gamma<x> \\(or auto\\)"),
    ("UnifiedFocalTrainer_gamma.5", "'.5' is not a value of UNIFOCAL_GAMMA as a trainer name writes it"),
    ("UnifiedFocalTrainer_gamma1e-3", "'1e-3' is not a value of UNIFOCAL_GAMMA"),
    ("UnifiedFocalTrainer_rare1.5", "'1.5' is not a value of UNIFOCAL_RARE_CLASSES"),
    ("UnifiedFocalTrainer_dscosine", "'cosine' is not a value of UNIFOCAL_DS_WEIGHTS"),
    ("FocalTrainer_delta0.7", "FocalTrainer's loss \\(focal\\) has no setting 'delta'; its settings are gamma, ds"),
    ("FocalTrainer_auto", "gamma 'auto' applies to the Unified Focal trainers only"),
    ("FocalTverskyTrainer_gamma1-2-3", "invalid settings for the focal_tversky loss: gamma must be a number"),
    ("UnifiedFocalTrainer_gamma1", "invalid settings for the asymmetric_unified_focal loss: gamma must lie in \\[0, 1\\)"),
    ("BaselineTrainerShort_gamma0.3", "BaselineTrainerShort trains nnU-Net's own loss and takes no loss settings"),
])
def test_invalid_names_say_what_to_write(name, message):
    with pytest.raises(SettingsError, match=message) as error:
        parse_variant(name, LOSSES)
    assert name in str(error.value)


def test_name_and_environment_combine():
    _, named = parse_variant("UnifiedFocalTrainer_gamma0.3", LOSSES)
    environment = Settings(gamma=0.3, delta=0.7, sources={"gamma": "UNIFOCAL_GAMMA", "delta": "UNIFOCAL_DELTA"})
    combined = combine_settings(named, environment, "UnifiedFocalTrainer_gamma0.3")
    assert combined.given() == {"delta": 0.7, "gamma": 0.3}
    assert combined.source("gamma") == "trainer name UnifiedFocalTrainer_gamma0.3"
    assert combined.source("delta") == "UNIFOCAL_DELTA"
    with pytest.raises(SettingsError, match="unset UNIFOCAL_GAMMA"):
        combine_settings(named, Settings(gamma=0.5, sources={"gamma": "UNIFOCAL_GAMMA"}), "UnifiedFocalTrainer_gamma0.3")


def test_nnunet_finds_trainers_by_settings_names(monkeypatch):
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    import nnunet_trainers
    import nnunet_trainers.trainers as trainers

    monkeypatch.setenv("nnUNet_extTrainer", str(nnunet_trainers.ext_trainer_path()))
    for name, base in [("UnifiedFocalTrainer_auto", trainers.UnifiedFocalTrainer),
                       ("TverskyTrainerShort_delta0.8", trainers.TverskyTrainerShort)]:
        found = recursive_find_trainer_class_by_name(name)
        assert found.__name__ == name and found.__bases__ == (base,)
        assert found is getattr(trainers, name) is getattr(nnunet_trainers, name)
    with pytest.raises(SettingsError, match="'UnifiedFocalTrainer_gamma0.30'.*write these settings as"):
        recursive_find_trainer_class_by_name("UnifiedFocalTrainer_gamma0.30")
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer nnUNetTrainer_7epochs"):
        recursive_find_trainer_class_by_name("nnUNetTrainer_7epochs")
