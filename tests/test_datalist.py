"""``unifocal datalist``: decathlon data lists with k-fold splits from nnU-Net raw datasets and the KiTS19, KiTS23,
BraTS 2021 and BraTS 2023 GLI downloads, each in its exact layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unifocal.cli import main
from unifocal.datalist import find_cases, fold_lists


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # the command lists files, it does not read images


def make_nnunet(root: Path, labelled: int = 7, test: int = 2) -> Path:
    (root / "labelsTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "lesion": 1},
        "numTraining": labelled, "file_ending": ".nii.gz"}))
    for i in range(labelled):
        _touch(root / "labelsTr" / f"case_{i:03d}.nii.gz")
        for c in range(2):
            _touch(root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz")
    for i in range(test):
        for c in range(2):
            _touch(root / "imagesTs" / f"new_{i:03d}_{c:04d}.nii.gz")
    return root


def make_kits19(root: Path, subfolder: str = "data") -> Path:
    """The KiTS19 repository (data/case_*); the KiTS21 / KiTS23 repositories name the folder dataset/."""
    for i in (0, 1, 2, 3, 4):
        _touch(root / subfolder / f"case_{i:05d}" / "imaging.nii.gz")
        _touch(root / subfolder / f"case_{i:05d}" / "segmentation.nii.gz")
    _touch(root / subfolder / "case_00210" / "imaging.nii.gz")  # a test case: no segmentation
    return root


def make_brats(root: Path) -> Path:
    for i in (0, 2, 5, 7):
        for part in ("flair", "t1", "t1ce", "t2") + (("seg",) if i != 7 else ()):
            _touch(root / f"BraTS2021_{i:05d}" / f"BraTS2021_{i:05d}_{part}.nii.gz")
    return root


def make_brats_gli(root: Path) -> Path:
    """BraTS 2023 GLI training data: BraTS-GLI-XXXXX-YYY/BraTS-GLI-XXXXX-YYY-{seg,t1c,t1n,t2f,t2w}.nii.gz."""
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000", "BraTS-GLI-00002-001", "BraTS-GLI-01337-000"):
        for part in ("seg", "t1c", "t1n", "t2f", "t2w")[case.endswith("01337-000"):]:  # the last is a test case
            _touch(root / case / f"{case}-{part}.nii.gz")
    return root


def _check_folds(lists: list, root: Path, count: int) -> None:
    names = [json.dumps(case, sort_keys=True) for case in lists[0]["training"] + lists[0]["validation"]]
    assert len(names) == len(set(names)) == count
    validated = [json.dumps(case, sort_keys=True) for fold in lists for case in fold["validation"]]
    assert sorted(validated) == sorted(names)  # every case validated in exactly one fold
    for fold in lists:
        training = {json.dumps(c, sort_keys=True) for c in fold["training"]}
        assert training.isdisjoint(json.dumps(c, sort_keys=True) for c in fold["validation"])
        assert len(training) + len(fold["validation"]) == count
        for case in fold["training"] + fold["validation"]:
            for path in ([case["image"]] if isinstance(case["image"], str) else case["image"]) + [case["label"]]:
                assert not Path(path).is_absolute() and (root / path).is_file(), path


def test_nnunet_layout_multichannel_folds(tmp_path):
    root = make_nnunet(tmp_path / "Dataset001_Test")
    cases = find_cases(root)
    assert cases.layout == "nnunet" and len(cases.labelled) == 7
    assert cases.labelled["case_002"] == {"image": ["imagesTr/case_002_0000.nii.gz", "imagesTr/case_002_0001.nii.gz"],
                                          "label": "labelsTr/case_002.nii.gz"}
    lists = fold_lists(cases, 3)
    assert [len(f["validation"]) for f in lists] == [3, 2, 2]
    _check_folds(lists, root, 7)
    assert lists[1]["test"] == [["imagesTs/new_000_0000.nii.gz", "imagesTs/new_000_0001.nii.gz"],
                                ["imagesTs/new_001_0000.nii.gz", "imagesTs/new_001_0001.nii.gz"]]
    assert fold_lists(cases, 3) == lists and fold_lists(cases, 3, seed=1) != lists  # seeded


def test_kits_and_brats_download_layouts(tmp_path):
    kits = find_cases(make_kits19(tmp_path / "kits19"))
    assert kits.layout == "kits" and sorted(kits.labelled) == [f"case_{i:05d}" for i in range(5)]
    assert kits.labelled["case_00003"] == {"image": "data/case_00003/imaging.nii.gz",
                                           "label": "data/case_00003/segmentation.nii.gz"}
    assert kits.test == {"case_00210": "data/case_00210/imaging.nii.gz"}
    _check_folds(fold_lists(kits, 5), tmp_path / "kits19", 5)

    brats = find_cases(make_brats(tmp_path / "brats"))
    assert brats.layout == "brats2021" and sorted(brats.labelled) == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00005"]
    assert brats.labelled["BraTS2021_00002"]["image"] == [
        f"BraTS2021_00002/BraTS2021_00002_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    assert list(brats.test) == ["BraTS2021_00007"]
    _check_folds(fold_lists(brats, 2), tmp_path / "brats", 3)

    kits23 = find_cases(make_kits19(tmp_path / "kits23", subfolder="dataset"))
    assert kits23.layout == "kits" and kits23.labelled["case_00001"] == {
        "image": "dataset/case_00001/imaging.nii.gz", "label": "dataset/case_00001/segmentation.nii.gz"}

    gli = find_cases(make_brats_gli(tmp_path / "gli"))
    assert gli.layout == "brats2023" and sorted(gli.labelled) == [
        "BraTS-GLI-00000-000", "BraTS-GLI-00002-000", "BraTS-GLI-00002-001"]
    # the channels in the BraTS 2021 order (FLAIR, T1, T1ce, T2), so one network reads both conventions
    assert gli.labelled["BraTS-GLI-00002-001"] == {
        "image": [f"BraTS-GLI-00002-001/BraTS-GLI-00002-001-{m}.nii.gz" for m in ("t2f", "t1n", "t1c", "t2w")],
        "label": "BraTS-GLI-00002-001/BraTS-GLI-00002-001-seg.nii.gz"}
    assert list(gli.test) == ["BraTS-GLI-01337-000"]
    _check_folds(fold_lists(gli, 3), tmp_path / "gli", 3)


def test_overwrite_with_fewer_folds_stops_at_the_earlier_runs_fold_files(tmp_path, capsys):
    root = make_kits19(tmp_path / "kits19")
    assert main(["datalist", str(root), "--folds", "5"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_text() for p in root.glob("datalist*.json")}
    assert main(["datalist", str(root), "--folds", "3", "--overwrite"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "datalist_fold3.json is a fold of an earlier run with more folds (2 such" in error
    assert {p.name: p.read_text() for p in root.glob("datalist*.json")} == before  # nothing written or removed
    (root / "datalist_fold3.json").unlink()
    (root / "datalist_fold4.json").unlink()
    assert main(["datalist", str(root), "--folds", "3", "--overwrite"]) == 0
    assert sorted(p.name for p in root.glob("datalist_fold*.json")) == [f"datalist_fold{k}.json" for k in range(3)]


def test_cli_writes_fold_files_that_monai_reads_and_never_replaces_them_silently(tmp_path, capsys):
    from monai.data import load_decathlon_datalist

    root = make_kits19(tmp_path / "kits19")
    assert main([ "datalist", str(root), "--folds", "5"]) == 0
    written = sorted(p.name for p in root.glob("datalist*.json"))
    assert written == ["datalist.json"] + [f"datalist_fold{k}.json" for k in range(5)]
    assert (root / "datalist.json").read_text() == (root / "datalist_fold0.json").read_text()
    training = load_decathlon_datalist(str(root / "datalist_fold2.json"), True, "training", str(root))
    assert len(training) == 4 and all(Path(case["label"]).is_file() for case in training)
    assert "kits layout: 5 labelled cases in 5 folds (1, 1, 1, 1, 1), 1 test images" in capsys.readouterr().out

    (root / "datalist_fold3.json").write_text("mine")
    assert main(["datalist", str(root), "--folds", "5"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "datalist" in error and "--overwrite" in error
    assert (root / "datalist_fold3.json").read_text() == "mine"
    assert main(["datalist", str(root), "--folds", "5", "--overwrite"]) == 0
    assert json.loads((root / "datalist_fold3.json").read_text())["validation"]


@pytest.mark.parametrize("setup, argv, message", [
    (lambda root: make_kits19(root), ["--folds", "6"], "folds=6 is more than the 5 labelled cases"),
    (lambda root: make_kits19(root), ["--folds", "1"], "folds must be an integer of at least 2"),
    (lambda root: root.mkdir(), [], "is neither an nnU-Net raw dataset (no dataset.json) nor a challenge download "
     "(no case folders such as case_00000/imaging.nii.gz, BraTS2021_00000/BraTS2021_00000_flair.nii.gz, "
     "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz)"),
    (lambda root: (make_nnunet(root), (root / "imagesTr" / "case_004_0001.nii.gz").unlink()), [],
     "case_004_0001.nii.gz is missing"),
    (lambda root: (root.mkdir(), (root / "dataset.json").write_text("{broken")), [], "dataset.json: not valid JSON"),
    (lambda root: (make_brats(root), (root / "BraTS2021_00005" / "BraTS2021_00005_t1ce.nii.gz").unlink()), [],
     "lacks BraTS2021_00005_t1ce.nii.gz"),
    (lambda root: (make_brats_gli(root), (root / "BraTS-GLI-00000-000" / "BraTS-GLI-00000-000-t1n.nii.gz").unlink()),
     [], "lacks BraTS-GLI-00000-000-t1n.nii.gz: every BraTS 2023+ case needs"),
])
def test_cli_errors_are_one_line_with_status_2(setup, argv, message, tmp_path, capsys):
    root = tmp_path / "dataset"
    setup(root)
    assert main(["datalist", str(root), *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error, error
    assert not list(root.glob("datalist*.json"))  # nothing written
