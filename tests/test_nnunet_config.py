"""Settings of the nnU-Net trainers: parsing of the UNIFOCAL_* variables and the JSON file, sources,
errors, the short schedule. Pure Python, no nnunetv2 needed."""

import json

import pytest

import argparse
import re

from nnunet_trainers.config import (AUTO, SETTINGS, Settings, SettingsError, add_setting_arguments, load_settings,
                                    settings_environment, settings_from_args, short_schedule)
from nnunet_trainers.loss_builder import TrainerState, build_loss, resolve

LABEL_STATE = TrainerState(has_regions=False, num_channels=3)


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
    ('{"delta": 0.5, "delta": 0.6}', "key 'delta' appears more than once; give each key once"),
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


@pytest.mark.parametrize("environ, message", [
    ({"UNIFOCAL_GAMA": "0.3"}, "UNIFOCAL_GAMA is not a setting of the UnifiedFocalTrainer trainer's "
                               "loss \\(UnifiedFocalLoss\\); did you mean 'UNIFOCAL_GAMMA'\\?"),
    ({"UNIFOCAL_DELTAA": "0.7"}, "did you mean 'UNIFOCAL_DELTA'"),
    ({"UNIFOCAL_EPOCHS": "3"}, "did you mean 'UNIFOCAL_NUM_EPOCHS'"),
    ({"UNIFOCAL_BATCH_DICE": "true"}, "UNIFOCAL_BATCH_DICE \\[UNIFOCAL_BATCH_DICE\\]: this trainer sets it from nnU-Net"),
])
def test_unknown_variables_stop_the_run_naming_the_closest(environ, message):
    with pytest.raises(SettingsError, match=message):
        resolve("asymmetric_unified_focal", load_settings(environ), LABEL_STATE)


def test_unknown_config_keys_stop_the_run_naming_the_closest(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"gama": 0.5}')
    with pytest.raises(SettingsError, match=f"gama \\[config file {path} \\[gama\\]\\] is not a setting .*; did you "
                                            "mean 'gamma'\\?"):
        resolve("asymmetric_unified_focal", load_settings({"UNIFOCAL_CONFIG": str(path)}), LABEL_STATE)


def test_a_misspelt_schedule_variable_is_reported_by_the_short_trainers():
    with pytest.raises(SettingsError, match="UNIFOCAL_EPOCHS is not a unifocal setting; did you mean 'UNIFOCAL_NUM_EPOCHS'"):
        short_schedule({"UNIFOCAL_EPOCHS": "2"})


@pytest.mark.parametrize("name, text, message", [
    ("UNIFOCAL_GAMMA", "0.3,,0.5", "has an empty item"),
    ("UNIFOCAL_DS_WEIGHTS", ",0.5,0.5", "has an empty item"),
    ("UNIFOCAL_RARE_CLASSES", "1,,2", "has an empty item"),
    ("UNIFOCAL_GAMMA", "0,5", "is ambiguous \\(a decimal comma, or a list of two numbers\\?\\); write 0.5"),
    ("UNIFOCAL_DELTA", "0,7", "expected a number, got '0,7'; write decimals with a point"),
])
def test_lists_refuse_empty_items_and_a_decimal_comma(name, text, message):
    with pytest.raises(SettingsError, match=f"{name}='{re.escape(text)}': .*{message}"):
        load_settings({name: text})


def test_two_whole_numbers_are_a_list_when_written_unambiguously():
    for text in ("0, 5", "0;5", "[0,5]"):
        assert load_settings({"UNIFOCAL_GAMMA": text}).gamma == (0.0, 5.0)
    assert load_settings({"UNIFOCAL_RARE_CLASSES": "1,2"}).rare_classes == (1, 2)  # class indices: no decimals


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_bytes('{"gamma": 0.5, "note": "Gr\u00f6\u00dfe"}'.encode("latin-1"))
    with pytest.raises(SettingsError, match=f"^UNIFOCAL_CONFIG={path}: not UTF-8 text \\(byte 26\\); save it as UTF-8"):
        load_settings({"UNIFOCAL_CONFIG": str(path)})


def test_other_parameters_of_the_loss_are_settings(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"include_background": false}')
    settings = load_settings({"UNIFOCAL_CONFIG": str(path), "UNIFOCAL_SMOOTH": "0.25"})
    assert settings.other == {"include_background": False, "smooth": 0.25}
    resolved = resolve("tversky", settings, LABEL_STATE)
    assert resolved.params == {"delta": 0.7, "smooth": 0.25, "include_background": False}
    loss = build_loss(resolved, LABEL_STATE).loss
    assert (loss.alpha, loss.beta, loss.smooth, loss.include_background) == (pytest.approx(0.3), 0.7, 0.25, False)
    with pytest.raises(SettingsError, match="invalid settings for the tversky loss \\(smooth from UNIFOCAL_SMOOTH\\): smooth must be > 0"):
        resolve("tversky", load_settings({"UNIFOCAL_SMOOTH": "0"}), LABEL_STATE)
    with pytest.raises(SettingsError, match="UNIFOCAL_ALPHA .*: this trainer sets it from nnU-Net's plans and mode"):
        resolve("tversky", load_settings({"UNIFOCAL_ALPHA": "0.5"}), LABEL_STATE)
    with pytest.raises(SettingsError, match="UNIFOCAL_CE_WEIGHT .*: this trainer sets it from 'UNIFOCAL_WEIGHT'"):
        resolve("combo", load_settings({"UNIFOCAL_CE_WEIGHT": "0.5"}), LABEL_STATE)


def test_the_table_gives_the_options_and_the_environment_of_a_run():
    parser = argparse.ArgumentParser()
    add_setting_arguments(parser, ["gamma", "delta", "weight", "rare_classes"])
    args = parser.parse_args(["--gamma", "0.1,0.5,0.7", "--delta", "0.7", "--rare-classes", "1,2"])
    settings = settings_from_args(args)
    assert settings.given() == {"gamma": [0.1, 0.5, 0.7], "delta": 0.7, "rare_classes": [1, 2]}
    assert settings.source("gamma") == "--gamma"
    environment = settings_environment(Settings.of({**settings.given(), "weight": 0.25, "smooth": 0.5,
                                                    "include_background": False}))
    assert environment == {"UNIFOCAL_GAMMA": "[0.1, 0.5, 0.7]", "UNIFOCAL_DELTA": "0.7", "UNIFOCAL_WEIGHT": "0.25",
                           "UNIFOCAL_RARE_CLASSES": "[1, 2]", "UNIFOCAL_SMOOTH": "0.5",
                           "UNIFOCAL_INCLUDE_BACKGROUND": "false"}
    assert load_settings(environment).given() == Settings.of({**settings.given(), "weight": 0.25, "smooth": 0.5,
                                                              "include_background": False}).given()
    assert settings_environment(Settings(gamma=AUTO)) == {"UNIFOCAL_GAMMA": "auto"}
    with pytest.raises(SettingsError, match="--delta 0,7: expected a number"):
        settings_from_args(parser.parse_args(["--delta", "0,7"]))
    assert [setting.env for setting in SETTINGS] == ["UNIFOCAL_GAMMA", "UNIFOCAL_DELTA", "UNIFOCAL_WEIGHT",
                                                     "UNIFOCAL_RARE_CLASSES", "UNIFOCAL_DS_WEIGHTS"]
