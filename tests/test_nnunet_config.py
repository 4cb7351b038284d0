"""Settings of the nnU-Net trainers: parsing of the UNIFOCAL_* variables and the JSON file, sources,
errors, the short schedule. Pure Python, no nnunetv2 needed."""

import json

import pytest

from nnunet_trainers.config import AUTO, Settings, SettingsError, load_settings, short_schedule


def test_nothing_set_gives_empty_settings():
    settings = load_settings({})
    assert settings == Settings()
    assert settings.given() == {} and settings.source("gamma") == "default"


def test_single_variables():
    settings = load_settings({
        "UNIFOCAL_WEIGHT": "0.25", "UNIFOCAL_DELTA": " 0.7 ", "UNIFOCAL_GAMMA": "0.1,0.5;0.9",
        "UNIFOCAL_RARE_CLASSES": "1, 2", "UNIFOCAL_DS_WEIGHTS": "EXP",
    })
    assert settings.given() == {"weight": 0.25, "delta": 0.7, "gamma": [0.1, 0.5, 0.9], "rare_classes": [1, 2],
                                "ds_weights": "exp"}
    assert settings.source("delta") == "UNIFOCAL_DELTA"


@pytest.mark.parametrize("text, value", [("0.4", 0.4), ("auto", AUTO), ("AUTO", AUTO), ("0.2,0.3", (0.2, 0.3)),
                                         ("0.6,", (0.6,)), ("[0.2, 0.7]", (0.2, 0.7)), ("[0.4]", (0.4,)),
                                         ("", None)])
def test_gamma_forms(text, value):
    assert load_settings({"UNIFOCAL_GAMMA": text}).gamma == value


def test_ds_weights_numbers():
    assert load_settings({"UNIFOCAL_DS_WEIGHTS": "0.5, 0.3,0.2"}).ds_weights == (0.5, 0.3, 0.2)
    assert load_settings({"UNIFOCAL_RARE_CLASSES": "(1, 2)"}).rare_classes == (1, 2)


def test_config_file_and_override(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lambda": 0.7, "delta": 0.6, "gamma": [0.2, 0.4], "rare_classes": [2],
                                "ds_weights": "uniform"}))
    settings = load_settings({"UNIFOCAL_CONFIG": str(path), "UNIFOCAL_DELTA": "0.8", "UNIFOCAL_GAMMA": ""})
    assert settings.given() == {"weight": 0.7, "delta": 0.8, "gamma": [0.2, 0.4], "rare_classes": [2],
                                "ds_weights": "uniform"}
    assert settings.source("delta") == "UNIFOCAL_DELTA"
    assert settings.source("weight") == f"config file {path} [lambda]"
    assert settings.source("gamma") == f"config file {path} [gamma]"


def test_config_file_gamma_auto_and_single_number(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"gamma": "auto", "weight": 1}))
    settings = load_settings({"UNIFOCAL_CONFIG": str(path)})
    assert settings.gamma == AUTO and settings.weight == 1.0


@pytest.mark.parametrize("content, message", [
    ('{"gama": 0.5}', "unknown key 'gama'"),
    ('[0.5]', "expected a JSON object"),
    ('{"delta": 0.5,', "not valid JSON"),
    ('{"lambda": 0.5, "weight": 0.4}', "given twice"),
    ('{"delta": true}', "expected a number, got True"),
    ('{"rare_classes": [1.5]}', "expected an integer, got 1.5"),
    ('{"gamma": "NaN"}', "expected a finite number"),
])
def test_config_file_errors(tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(SettingsError, match=message) as error:
        load_settings({"UNIFOCAL_CONFIG": str(path)})
    assert str(path) in str(error.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="UNIFOCAL_CONFIG=.*no such file"):
        load_settings({"UNIFOCAL_CONFIG": str(tmp_path / "missing.json")})


@pytest.mark.parametrize("name, text, message", [
    ("UNIFOCAL_WEIGHT", "half", "UNIFOCAL_WEIGHT='half': expected a number"),
    ("UNIFOCAL_GAMMA", "0.2,x", "UNIFOCAL_GAMMA='0.2,x': expected a number"),
    ("UNIFOCAL_RARE_CLASSES", "kidney", "UNIFOCAL_RARE_CLASSES='kidney': expected an integer"),
    ("UNIFOCAL_DS_WEIGHTS", "linear", "UNIFOCAL_DS_WEIGHTS='linear': expected one of"),
    ("UNIFOCAL_DELTA", "inf", "expected a finite number"),
])
def test_variable_errors_name_the_variable(name, text, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({name: text})


def test_short_schedule():
    assert short_schedule({}) == {"num_epochs": 5, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 5}
    assert short_schedule({"UNIFOCAL_NUM_EPOCHS": "2", "UNIFOCAL_VAL_ITERATIONS": "1"}) == {
        "num_epochs": 2, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 1}
    with pytest.raises(SettingsError, match="UNIFOCAL_ITERATIONS_PER_EPOCH='2.5': expected an integer"):
        short_schedule({"UNIFOCAL_ITERATIONS_PER_EPOCH": "2.5"})


@pytest.mark.parametrize("text", ["1e308,1e308,0", "0,0,0"])
def test_overflowing_or_empty_ds_weights_fail_when_the_loss_is_resolved(text):
    from nnunet_trainers.loss_builder import TrainerState, resolve

    settings = load_settings({"UNIFOCAL_DS_WEIGHTS": text})
    state = TrainerState(has_regions=False, num_channels=3, deep_supervision=True, num_ds_outputs=3)
    with pytest.raises(SettingsError, match=r"ds_weights \[UNIFOCAL_DS_WEIGHTS\]: .*finite sum"):
        resolve("asymmetric_unified_focal", settings, state)


def test_infinite_ds_weight_fails_when_read():
    with pytest.raises(SettingsError, match="UNIFOCAL_DS_WEIGHTS='inf,1,0': expected a finite number"):
        load_settings({"UNIFOCAL_DS_WEIGHTS": "inf,1,0"})
