"""``unifocal nnunet-path`` and nnU-Net's own trainer lookup through ``nnUNet_extTrainer``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnunet_trainers
from unifocal.cli import main


def test_prints_the_ext_folder(capsys):
    assert main(["nnunet-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == nnunet_trainers.ext_trainer_path() and path.is_dir()
    modules = sorted(p.name for p in path.glob("*.py"))
    assert modules == ["__init__.py", "unifocal_nnunet_trainers.py"]


def test_export_line_keeps_other_folders(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    assert main(["nnunet-path", "--export"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == f"export nnUNet_extTrainer={nnunet_trainers.ext_trainer_path()}{os.pathsep}{tmp_path}"


def test_works_without_importing_nnunetv2():
    code = ("import sys; from unifocal.cli import main; import nnunet_trainers; rc = main(['nnunet-path']); "
            "assert rc == 0 and 'nnunetv2' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(nnunet_trainers.ext_trainer_path())


def test_nnunet_finds_every_trainer(monkeypatch, capsys):
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    import nnunet_trainers.trainers as trainers

    monkeypatch.setenv("nnUNet_extTrainer", str(nnunet_trainers.ext_trainer_path()))
    for name in nnunet_trainers.TRAINER_NAMES:
        found = recursive_find_trainer_class_by_name(name)
        assert found is getattr(trainers, name)
        assert getattr(nnunet_trainers, name) is found
    assert "unifocal_nnunet_trainers" not in sys.modules  # nnU-Net cleaned up its temporary import
    assert main(["nnunet-path", "--check"]) == 0
    assert "nnUNet_extTrainer includes" in capsys.readouterr().err


def test_unknown_name_is_not_found(monkeypatch):
    pytest.importorskip("nnunetv2")
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", str(nnunet_trainers.ext_trainer_path()))
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer NoSuchTrainer"):
        recursive_find_trainer_class_by_name("NoSuchTrainer")


def test_check_reads_the_environment_as_the_trainers_do(monkeypatch, capsys):
    pytest.importorskip("nnunetv2")
    monkeypatch.setenv("UNIFOCAL_GAMMA", "0.3")
    monkeypatch.setenv("UNIFOCAL_SMOOTH", "0.5")
    assert main(["nnunet-path", "--check"]) == 0
    assert "loss settings from the environment: gamma=0.3 (UNIFOCAL_GAMMA), smooth=0.5 (UNIFOCAL_SMOOTH)" in \
        capsys.readouterr().err
    monkeypatch.setenv("UNIFOCAL_GAMA", "0.3")
    assert main(["nnunet-path", "--check"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "UNIFOCAL_GAMA is not a setting of any unifocal trainer; did you mean 'UNIFOCAL_GAMMA'?")
    monkeypatch.delenv("UNIFOCAL_GAMA")
    monkeypatch.setenv("UNIFOCAL_EPOCHS", "3")
    assert main(["nnunet-path", "--check"]) == 2
    assert "did you mean 'UNIFOCAL_NUM_EPOCHS'?" in capsys.readouterr().err
