"""``unifocal compare`` on the challenges' files and on inputs it must refuse: each refusal is one line naming
the file or setting and the fix (docs/reliability.md)."""

import csv
import json
import os
import shutil
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from unifocal import report
from unifocal.cli import main

DATA = Path(__file__).parent / "data" / "challenge"
OFFICIAL = json.loads((DATA / "official_values.json").read_text())


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    monkeypatch.setattr(report, "available_cores", lambda: 1)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _error(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_kits23_report_equals_the_official_evaluation(tmp_path):
    assert main(["compare", str(DATA / "kits" / "prediction"), "-r", str(DATA / "kits" / "reference"),
                 "--challenge", "kits23", "--no-plot", "-o", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out" / "per_case.csv")
    for case, official in OFFICIAL["kits23"].items():
        ours = [r for r in rows if r["case"] == case.removesuffix(".nii.gz")]
        assert [float(r["DSC"]) for r in ours] == pytest.approx(official["dice"], abs=1e-6)
        assert [float(r["NSD"]) for r in ours] == pytest.approx(official["surface_dice"], abs=1e-6)


def test_brats_report_has_the_lesion_wise_columns(tmp_path):
    assert main(["compare", str(DATA / "brats" / "prediction"), "-r", str(DATA / "brats" / "reference"),
                 "--challenge", "brats-gli", "--no-plot", "-o", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out" / "per_case.csv")
    official = OFFICIAL["brats_gli"]["BraTS-GLI-00000-000.nii.gz"]
    row = next(r for r in rows if r["case"] == "BraTS-GLI-00000-000" and r["class"] == "WT")
    assert float(row["lesion DSC"]) == pytest.approx(official["wt"]["lesionwise_dsc_mean"], abs=1e-6)
    assert float(row["lesion HD95"]) == pytest.approx(official["wt"]["lesionwise_hd95_mean"], abs=1e-6)
    assert float(row["lesion F1"]) == pytest.approx(official["wt"]["all_instance_f1"], abs=1e-6)
    summary = _rows(tmp_path / "out" / "summary.csv")
    f1 = next(r for r in summary if r["class"] == "WT" and r["metric"] == "lesion F1")
    assert float(f1["mean"]) == pytest.approx(
        np.mean([OFFICIAL["brats_gli"][c]["wt"]["all_instance_f1"] for c in OFFICIAL["brats_gli"]]), abs=1e-6)


def _nii(path, array, affine=None):
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array, np.uint8), np.eye(4) if affine is None else affine), path)


def _pair(root, reference, prediction=None, name="c.nii.gz"):
    _nii(root / "ref" / name, reference)
    _nii(root / "pred" / name, reference if prediction is None else prediction)
    return ["compare", str(root / "pred"), "-r", str(root / "ref"), "--no-plot", "--no-surface", "-o",
            str(root / "out")]


def test_a_brats_file_of_the_other_convention_names_the_challenge_to_use(tmp_path, capsys):
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:4, 1:4, 1:4], labels[2, 2, 2] = 2, 4  # oedema and enhancing tumour labelled 4: BraTS 2021
    assert main(_pair(tmp_path, labels) + ["--challenge", "brats2023"]) == 2
    assert _error(capsys) == (f"unifocal compare: {tmp_path / 'ref' / 'c.nii.gz'}: label values [4] are not among "
                              "the BraTS 2023 labels ([0, 1, 2, 3]): these are BraTS 2018-2021 labels, use "
                              "--challenge brats2021")


def test_a_label_the_dataset_json_does_not_define_is_an_error(tmp_path, capsys):
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[0, 0, 0], labels[1, 1, 1] = 1, 7
    command = _pair(tmp_path, labels)
    (tmp_path / "ref" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "organ": 1}}))
    assert main(command) == 2
    assert _error(capsys) == (f"unifocal compare: {tmp_path / 'ref' / 'c.nii.gz'}: label values [7] are not among "
                              f"{tmp_path / 'ref' / 'dataset.json'} ([0, 1]); evaluate this file with the classes it "
                              "was made with")


def test_a_4d_file_is_an_error(tmp_path, capsys):
    command = _pair(tmp_path, np.zeros((4, 4, 4), np.uint8))
    _nii(tmp_path / "pred" / "c.nii.gz", np.zeros((4, 4, 4, 2), np.uint8))
    assert main(command + ["--labels", "1"]) == 2
    assert _error(capsys) == (f"unifocal compare: {tmp_path / 'pred' / 'c.nii.gz'}: a label map has at most 3 axes; "
                              "got shape (4, 4, 4, 2) (a 4D image or several channels: give one label map per case)")


def test_a_missing_reference_or_a_folder_in_its_place_is_an_error(tmp_path, capsys):
    labels = np.ones((3, 3, 3), np.uint8)
    command = _pair(tmp_path, labels) + ["--labels", "1"]
    _nii(tmp_path / "pred" / "d.nii.gz", labels)
    assert main(command) == 2
    assert _error(capsys) == ("unifocal compare: pred predicts 1 case(s) the reference lacks, e.g. d (a missing or "
                              "misnamed reference file); --cases common evaluates the shared ones")
    (tmp_path / "ref" / "d.nii.gz").mkdir()
    assert main(command) == 2
    assert _error(capsys) == (f"unifocal compare: {tmp_path / 'ref' / 'd.nii.gz'}: has a label file's name but is "
                              "not a file (a folder or a broken link); move it out of the folder")


def test_a_non_utf8_case_name_is_evaluated_and_written_escaped(tmp_path, capsys):
    labels = np.zeros((3, 3, 3), np.uint8)
    labels[1, 1, 1] = 1
    name = os.fsdecode(b"case\xff.nii.gz")
    command = _pair(tmp_path, labels, name=name) + ["--labels", "1"]
    assert main(command) == 0
    assert [r["case"] for r in _rows(tmp_path / "out" / "per_case.csv")] == ["case\\xff"]


def test_a_killed_worker_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    class KilledPool:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, *args):
            future = Future()
            future.set_exception(BrokenProcessPool("A process in the process pool was terminated abruptly"))
            return future

        def shutdown(self, **kwargs):
            pass

    monkeypatch.setattr(report.evaluation, "ProcessPoolExecutor", KilledPool)
    labels = np.ones((3, 3, 3), np.uint8)
    command = _pair(tmp_path, labels) + ["--labels", "1", "-j", "2"]
    _nii(tmp_path / "ref" / "d.nii.gz", labels)
    _nii(tmp_path / "pred" / "d.nii.gz", labels)
    assert main(command) == 2
    assert _error(capsys) == ("unifocal compare: a worker process ended while evaluating cases (killed, e.g. for "
                              "want of memory); rerun with fewer jobs than 2")
    assert not (tmp_path / "out").exists()
