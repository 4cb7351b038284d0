"""Bad files give one line naming the file and the problem, exit status 2 and no traceback, in every command
(the readers of unifocal.io name the file; unifocal.cli turns the error into one line; --debug shows it)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from unifocal.cli import main
from unifocal.io import InputError, label_classes, load_dataset_json, read_label


def _nifti(path, array):
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), str(path))


def _volume():
    volume = np.zeros((24, 24, 24), np.uint8)
    volume[2:9, 3:12, 4:20] = 1
    volume[10:14, 5:7, 1:3] = 2
    return volume


@pytest.fixture
def bad_inputs(tmp_path):
    """Folders holding one bad file each: a truncated .nii.gz, an object .npy, a broken dataset.json."""
    _nifti(tmp_path / "good" / "case.nii.gz", _volume())
    data = (tmp_path / "good" / "case.nii.gz").read_bytes()
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "case.nii.gz").write_bytes(data[: len(data) * 2 // 3])
    (tmp_path / "objects").mkdir()
    np.save(tmp_path / "objects" / "case.npy", np.array([{"label": 1}], dtype=object), allow_pickle=True)
    dataset = tmp_path / "Dataset001_Broken"
    _nifti(dataset / "labelsTr" / "case.nii.gz", _volume())
    (dataset / "dataset.json").write_text('{"labels": {"background": 0, "organ": 1,')
    return {
        "truncated": tmp_path / "truncated" / "case.nii.gz",
        "objects": tmp_path / "objects" / "case.npy",
        "dataset": dataset / "dataset.json",
    }


@pytest.mark.parametrize("kind, problem", [
    ("truncated", "cannot read this .nii.gz file"),
    ("objects", "cannot read this .npy file (ValueError: Object arrays cannot be loaded"),
    ("dataset", "not valid JSON (Expecting"),
])
def test_gamma_bad_file_is_one_line_naming_it(bad_inputs, capsys, kind, problem):
    bad = bad_inputs[kind]
    source = bad.parent
    assert main(["gamma", str(source)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("scanning")]
    assert len(lines) == 1 and lines[0].startswith(f"unifocal gamma: {bad}: {problem}")
    # --debug (before or after the command) shows the original error with its traceback.
    with pytest.raises(InputError, match=str(bad)):
        main(["gamma", str(source), "--debug"])
    with pytest.raises(InputError):
        main(["--debug", "gamma", str(source)])


def test_compare_bad_files(bad_inputs, tmp_path, capsys):
    good = bad_inputs["truncated"].parent.parent / "good"
    # A truncated prediction.
    rc = main(["compare", f"A={bad_inputs['truncated'].parent}", "--reference", str(good), "--labels", "1", "2",
               "--no-plot", "-o", str(tmp_path / "out1")])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{bad_inputs['truncated']}: cannot read this .nii.gz file" in err and "Traceback" not in err
    # A broken dataset.json given for the classes.
    rc = main(["compare", f"A={good}", "--reference", str(good), "--dataset-json", str(bad_inputs["dataset"]),
               "--no-plot", "-o", str(tmp_path / "out2")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"unifocal compare: {bad_inputs['dataset']}: not valid JSON")


def test_real_exit_status_and_no_traceback(bad_inputs):
    result = subprocess.run([sys.executable, "-m", "unifocal", "gamma", str(bad_inputs["objects"].parent)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"unifocal gamma: {bad_inputs['objects']}: ")
    # A command's own usage error (SystemExit with a message) exits with 2 too, printed once.
    result = subprocess.run([sys.executable, "-m", "unifocal", "gamma", str(bad_inputs["objects"].parent / "nope")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"unifocal gamma: {bad_inputs['objects'].parent / 'nope'}: no such folder (nor a dataset in $nnUNet_raw)"]


@pytest.mark.parametrize("argv, line", [
    (["sweep", "--gammas", "abc"], "unifocal sweep: argument --gammas: invalid float value: 'abc'"),
    (["gamma"], "unifocal gamma: the following arguments are required: source"),
    (["gamma", ".", "--no-such-option", "1"], "unifocal gamma: unrecognized arguments: --no-such-option 1"),
    (["no-such-command"], "unifocal: argument COMMAND: invalid choice: 'no-such-command'"),
])
def test_usage_errors_are_one_line(argv, line, capsys):
    """argparse's own errors too: the message and where the usage is, without the usage block."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line) and lines[0].endswith("--help)")


def test_readers_name_the_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"a\.png: cannot read this \.png file \(UnidentifiedImageError"):
        read_label(tmp_path / "a.png")
    (tmp_path / "b.nrrd").write_bytes(b"not a nrrd")
    with pytest.raises(InputError, match=r"b\.nrrd: cannot read this \.nrrd file \(RuntimeError: .*\)$"):
        read_label(tmp_path / "b.nrrd")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match=r"list\.json: expected a JSON object \{\.\.\.\}, got list"):
        load_dataset_json(tmp_path / "list.json")
    (tmp_path / "latin1.json").write_bytes('{"name": "\xe9"}'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.json: not UTF-8 text \(byte 10\); save it as UTF-8 JSON"):
        load_dataset_json(tmp_path / "latin1.json")
    # A key given twice: json.load would keep the last one silently (here: a different label table).
    (tmp_path / "twice.json").write_text('{"labels": {"background": 0, "tumour": 1}, "labels": {"background": 0}}')
    with pytest.raises(InputError, match=r"twice\.json: key 'labels' appears more than once; give each key once"):
        load_dataset_json(tmp_path / "twice.json")
    # Label values must be integers, not booleans or strings, and are named with the file.
    for labels in ({"background": 0, "organ": True}, {"background": 0, "organ": "1"}, {"background": 0, "r": [1, 2.5]}):
        with pytest.raises(InputError, match="ds.json: label .* must be an integer label value"):
            label_classes({"labels": labels}, "ds.json")
    with pytest.raises(InputError, match="ds.json: no 'labels' mapping"):
        label_classes(json.loads('{"name": "x"}'), "ds.json")
