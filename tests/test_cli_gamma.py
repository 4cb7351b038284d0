"""``unifocal gamma`` on tiny label folders, nnU-Net raw and preprocessed layouts, and region datasets."""

import json

import numpy as np
import pytest

from unifocal.cli import main
from unifocal.gamma import propose_gamma


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _labels(tmp_path):
    """Two 10x10 label maps: 180 background, 16 of label 1, 4 of label 2 in total."""
    a = np.zeros((10, 10), np.uint8)
    a[0:2, 0:4] = 1
    a[5, 5:7] = 2
    b = np.zeros((10, 10), np.uint8)
    b[3:5, 3:7] = 1
    b[8, 0:2] = 2
    return a, b


def _json_output(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_folder_of_label_files(tmp_path, capsys):
    a, b = _labels(tmp_path)
    _png(tmp_path / "labels" / "a.png", a)
    _png(tmp_path / "labels" / "b.png", b)
    out = _json_output(capsys, ["gamma", str(tmp_path / "labels"), "--json"])
    assert out["voxel_counts"] == [180, 16, 4]
    expected = propose_gamma([180, 16, 4])
    assert out["frequencies"] == pytest.approx([0.9, 0.08, 0.02])
    assert out["gamma"] == pytest.approx(list(expected.gamma))
    assert out["rare_classes"] == [1, 2] and out["common_classes"] == [0]
    assert out["UNIFOCAL_GAMMA"] == ",".join(f"{g:.3g}" for g in expected.gamma)
    assert out["UNIFOCAL_RARE_CLASSES"] == "1,2"
    assert out["num_files"] == 2 and out["class_names"] == ["label 0", "label 1", "label 2"]
    # By the documented rule: background ratio 0.9 / 0.1 = 9 -> L = log10 9; lesion 0.9 / 0.02 = 45.
    l_bg, l_lesion = np.log10(9), np.log10(45)
    assert out["gamma"][0] == pytest.approx(l_bg / (1 + l_bg))
    assert out["gamma"][2] == pytest.approx(l_lesion / (1 + l_lesion))


def test_human_readable_output_and_paper_rule(tmp_path, capsys):
    a, b = _labels(tmp_path)
    _png(tmp_path / "labels" / "a.png", a)
    _png(tmp_path / "labels" / "b.png", b)
    assert main(["gamma", str(tmp_path / "labels"), "--rule", "paper"]) == 0
    text = capsys.readouterr().out
    assert "2 files, 200 counted voxels" in text
    assert "nnUNetv2_train DATASET CONFIGURATION FOLD -tr UnifiedFocalTrainer_gamma0.5-0.5-0.5_rare1-2\n" in text
    assert "UnifiedFocalLoss(gamma=[0.5, 0.5, 0.5], rare_classes=[1, 2], common_classes=[0])" in text
    assert "--loss#gamma '[0.5, 0.5, 0.5]' --loss#rare_classes '[1, 2]' --loss#common_classes '[0]'" in text


def test_num_classes_and_nifti(tmp_path, capsys):
    import nibabel

    volume = np.zeros((4, 4, 4), np.uint8)
    volume[0, 0, :2] = 1
    folder = tmp_path / "nifti"
    folder.mkdir()
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / "case.nii.gz")
    out = _json_output(capsys, ["gamma", str(folder), "--num-classes", "3", "--json"])
    # Class 2 never occurs: frequency 0, rare, gamma at the cap, with a warning that no data supports it.
    assert out["voxel_counts"] == [62, 2, 0]
    assert out["gamma"][2] == pytest.approx(0.9)
    assert any("'label 2' (label 2) does not occur" in w for w in out["warnings"])


def test_nnunet_raw_dataset_uses_labels_tr_and_names(tmp_path, capsys, monkeypatch):
    from unifocal.synthetic import write_nnunet_dataset

    dataset = write_nnunet_dataset(tmp_path / "raw", dataset_id=5, num_train=3, num_test=2, seed=4)
    out = _json_output(capsys, ["gamma", str(dataset.folder), "--json"])
    assert out["class_names"] == ["background", "organ", "lesion"]
    assert out["num_files"] == 3  # labelsTr only, not the held-out labelsTs
    assert out["frequencies"] == pytest.approx(list(dataset.frequencies))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    by_id = _json_output(capsys, ["gamma", "5", "--json"])
    assert by_id["voxel_counts"] == out["voxel_counts"]


def test_ignore_label_and_regions_from_dataset_json(tmp_path, capsys):
    folder = tmp_path / "Dataset001_Regions"
    labels = np.zeros((10, 10), np.uint8)
    labels[0, :5] = 1
    labels[1, :3] = 2
    labels[2, :2] = 3
    labels[9, :] = 4  # ignore
    _png(folder / "labelsTr" / "x.png", labels)
    meta = {"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3, "ignore": 4},
            "regions_class_order": [1, 2, 3], "file_ending": ".png", "channel_names": {"0": "a"}, "numTraining": 1}
    (folder / "dataset.json").write_text(json.dumps(meta))
    out = _json_output(capsys, ["gamma", str(folder), "--json"])
    assert out["multilabel"] is True and out["regions"] == [[1, 2, 3], [2, 3], [3]]
    assert out["ignore_label"] == 4
    # 90 counted pixels (the ignore row is left out): whole 10, core 5, enhancing 2.
    assert out["voxel_counts"] == [10, 5, 2]
    assert out["frequencies"] == pytest.approx([10 / 90, 5 / 90, 2 / 90])
    expected = propose_gamma([10 / 90, 5 / 90, 2 / 90], multilabel=True)
    assert out["gamma"] == pytest.approx(list(expected.gamma))
    assert "UNIFOCAL_RARE_CLASSES" not in out


def test_preprocessed_folder_and_configuration(tmp_path, capsys):
    import blosc2

    folder = tmp_path / "Dataset002_Pre"
    (folder / "gt_segmentations").mkdir(parents=True)
    (folder / "custom_2d").mkdir()
    meta = {"labels": {"background": 0, "fg": 1}, "file_ending": ".png", "channel_names": {"0": "a"}, "numTraining": 1}
    (folder / "dataset.json").write_text(json.dumps(meta))
    plans = {"configurations": {"2d": {"data_identifier": "custom_2d"}}}
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    raw = np.zeros((8, 8), np.uint8)
    raw[:2, :2] = 1
    _png(folder / "gt_segmentations" / "c.png", raw)
    seg = -np.ones((1, 1, 6, 6), np.int8)  # -1: outside the crop, not counted
    seg[0, 0, :3, :3] = 0
    seg[0, 0, 0, 0] = 1
    blosc2.asarray(seg, urlpath=str(folder / "custom_2d" / "c_seg.b2nd"))
    blosc2.asarray(seg.astype(np.float32), urlpath=str(folder / "custom_2d" / "c.b2nd"))
    out = _json_output(capsys, ["gamma", str(folder), "--json"])
    assert out["voxel_counts"] == [60, 4]
    out = _json_output(capsys, ["gamma", str(folder), "--configuration", "2d", "--json"])
    assert out["voxel_counts"] == [8, 1] and out["source"].endswith("custom_2d")


def test_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="no such folder") as stop:
        main(["gamma", str(tmp_path / "missing")])
    assert stop.value.code == 2
    (tmp_path / "empty").mkdir()
    assert main(["gamma", str(tmp_path / "empty")]) == 2
    assert "no label files" in capsys.readouterr().err
    a, b = _labels(tmp_path)
    _png(tmp_path / "labels" / "a.png", a)
    with pytest.raises(SystemExit, match="--num-classes must be >= 2"):
        main(["gamma", str(tmp_path / "labels"), "--num-classes", "1"])
    # A value the class list does not have names the file that holds it.
    outside = r"a\.png: label value 2 is not a class \(--num-classes: 0\.\.1\); --label-threshold"
    with pytest.raises(SystemExit, match=outside):
        main(["gamma", str(tmp_path / "labels"), "--num-classes", "2"])


def _npy(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(array))


@pytest.mark.parametrize("stray", [1_000_000, 2_000_000_000])
def test_stray_label_value_is_reported_not_made_a_class(tmp_path, capsys, stray):
    # Without a class list the classes were 0..max, and the proposal quadratic in their number: one stray
    # voxel of 10^6 ran for minutes, 2e9 asked for 15 GiB. Only the values that occur are counted now.
    a, b = _labels(tmp_path)
    b = b.astype(np.int32)
    b[9, 9] = stray
    _npy(tmp_path / "labels" / "a.npy", a)
    _npy(tmp_path / "labels" / "b.npy", b)
    assert main(["gamma", str(tmp_path / "labels")]) == 1
    captured = capsys.readouterr()
    assert f"{stray - 3} of the values 0..{stray} never occur (the first is 3)" in captured.err
    assert f"label value {stray}: 1 voxels, first in {tmp_path / 'labels' / 'b.npy'}" in captured.err
    assert f"--ignore-label {stray} leaves a stray value out" in captured.err
    assert "UNIFOCAL_GAMMA" not in captured.out
    assert f"{stray:>10}             1" in captured.out  # the table of counted values
    out = _json_output(capsys, ["gamma", str(tmp_path / "labels"), "--ignore-label", str(stray), "--json"])
    assert out["voxel_counts"] == [179, 16, 4]


def test_gaps_in_the_label_values(tmp_path, capsys):
    labels = np.zeros((4, 5), np.uint8)
    labels[0, :3] = 1
    labels[1, :2] = 3
    _png(tmp_path / "labels" / "x.png", labels)
    assert main(["gamma", str(tmp_path / "labels"), "--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["gamma"] is None and out["label_values"] == ["0", "1", "3"] and out["voxel_counts"] == [15, 3, 2]
    assert "1 of the values 0..3 never occur (the first is 2)" in captured.err
    # With the class count given, label 2 is a class that does not occur here.
    out = _json_output(capsys, ["gamma", str(tmp_path / "labels"), "--num-classes", "4", "--json"])
    assert out["voxel_counts"] == [15, 3, 0, 2]
    assert out["warnings"] == ["class 'label 2' (label 2) does not occur in the 1 files: the rule gives it the cap "
                               "0.9, which no data supports"]


@pytest.mark.parametrize("extra", [[], ["--num-classes", "3"]])
def test_all_background_warns_and_proposes_nothing(tmp_path, capsys, extra):
    _png(tmp_path / "labels" / "x.png", np.zeros((4, 4)))
    _png(tmp_path / "labels" / "y.png", np.zeros((2, 3)))
    assert main(["gamma", str(tmp_path / "labels"), *extra]) == 1
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "in the 2 files (every counted voxel is background)" in captured.err
    assert "nothing to propose" in captured.err
    assert "rare" not in captured.out and "UNIFOCAL_GAMMA" not in captured.out


def test_binary_masks_0_255(tmp_path, capsys):
    # The 2D bundle's masks: 0 background, 255 foreground (docs of unifocal/bundles/binary2d_unified_focal).
    a, b = _labels(tmp_path)
    _png(tmp_path / "masks" / "a.png", np.where(a > 0, 255, 0))
    _png(tmp_path / "masks" / "b.png", np.where(b > 0, 255, 0))
    out = _json_output(capsys, ["gamma", str(tmp_path / "masks"), "--json"])
    assert out["voxel_counts"] == [180, 20] and out["label_values"] == ["0", "255"]
    assert out["class_names"] == ["background", "foreground"]
    assert out["gamma"] == pytest.approx(list(propose_gamma([180, 20]).gamma))
    assert out["rare_classes"] == [1]
    assert "exactly 0 and 255: read as binary masks" in out["warnings"][0]
    # The bundle README's command (a binary class list) reads them the same way.
    assert _json_output(capsys, ["gamma", str(tmp_path / "masks"), "--num-classes", "2", "--json"])["voxel_counts"] \
        == [180, 20]
    outside = r"label value 255 is not a class \(--num-classes: 0\.\.2\); --ignore-label 255"
    with pytest.raises(SystemExit, match=outside):
        main(["gamma", str(tmp_path / "masks"), "--num-classes", "3"])
    # Any other value set is not a binary mask: 0/1/255 (e.g. 255 as a boundary or ignore value) is not mapped.
    c = np.where(a > 0, 255, 0)
    c[9, 9] = 1
    _png(tmp_path / "masks" / "a.png", c)
    assert main(["gamma", str(tmp_path / "masks")]) == 1
    assert "--label-threshold T for binary masks" in capsys.readouterr().err
    # An explicit threshold reads any mask as binary (compression noise included), as the bundle does.
    noisy = np.where(a > 0, 250, 3)
    _png(tmp_path / "masks" / "a.png", noisy)
    out = _json_output(capsys, ["gamma", str(tmp_path / "masks"), "--label-threshold", "127", "--json"])
    assert out["voxel_counts"] == [180, 20] and out["label_values"] == ["<=127", ">127"]


def test_printed_command_lines_quote_paths(tmp_path, capsys):
    import shlex

    from unifocal.synthetic import write_nnunet_dataset

    dataset = write_nnunet_dataset(tmp_path / "raw", dataset_id=5, num_train=2, num_test=1, seed=4)
    name = "Dataset005_it's a \"quoted\" name"
    folder = dataset.folder.rename(dataset.folder.parent / name)
    assert main(["gamma", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    train = shlex.split(next(line for line in lines if "nnUNetv2_train" in line))
    assert train[train.index("nnUNetv2_train") + 1] == name
    assert train[-2] == "-tr" and train[-1].startswith("UnifiedFocalTrainer_gamma") and train[-1].endswith("_rare1-2")
    monai = shlex.split(next(line for line in lines if "monai.bundle" in line))
    gamma = json.loads(monai[monai.index("--loss#gamma") + 1])
    assert len(gamma) == 3 and monai[monai.index("--loss#rare_classes") + 1] == "[1, 2]"


def _nifti(path, array):
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array, np.uint8), np.eye(4)), path)


def _tumour(et_label):
    """A 4x4x4 label map: 4 voxels of label 1, 2 of label 2, 1 of ``et_label``."""
    volume = np.zeros((4, 4, 4), np.uint8)
    volume[0, 0, :] = 1
    volume[1, 0, :2] = 2
    volume[2, 0, 0] = et_label
    return volume


def test_challenge_downloads_as_they_come(tmp_path, capsys):
    """The KiTS19 repository (data/case_*/segmentation.nii.gz), the KiTS23 one before its images are fetched
    (dataset/case_*/), BraTS 2021 (BraTS2021_*/*_seg.nii.gz) and BraTS 2023 GLI (BraTS-GLI-*/*-seg.nii.gz):
    each read as it comes; BraTS by its regions, in the BraTS bundle's channel order TC, WT, ET."""
    for case in ("case_00000", "case_00001"):
        _nifti(tmp_path / "kits19" / "data" / case / "segmentation.nii.gz", _tumour(2))
        _nifti(tmp_path / "kits19" / "data" / case / "imaging.nii.gz", np.zeros((4, 4, 4)))
    _nifti(tmp_path / "kits19" / "data" / "case_00210" / "imaging.nii.gz", np.zeros((4, 4, 4)))  # test case
    out = _json_output(capsys, ["gamma", str(tmp_path / "kits19"), "--json"])
    assert out["num_files"] == 2 and out["voxel_counts"] == [2 * 57, 2 * 4, 2 * 3]
    assert out["rare_classes"] == [1, 2]

    _nifti(tmp_path / "kits23" / "dataset" / "case_00000" / "segmentation.nii.gz", _tumour(3))
    out = _json_output(capsys, ["gamma", str(tmp_path / "kits23"), "--json"])
    assert out["num_files"] == 1 and out["voxel_counts"] == [57, 4, 2, 1] and out["multilabel"] is False

    for layout, case, seg, et in (("brats2021", "BraTS2021_00000", "BraTS2021_00000_seg", 4),
                                  ("gli", "BraTS-GLI-00002-001", "BraTS-GLI-00002-001-seg", 3)):
        _nifti(tmp_path / layout / case / f"{seg}.nii.gz", _tumour(et))
        out = _json_output(capsys, ["gamma", str(tmp_path / layout), "--json"])
        assert out["multilabel"] is True and out["class_names"] == ["TC", "WT", "ET"]
        assert out["regions"] == [[1, et], [1, 2, et], [et]] and out["voxel_counts"] == [5, 7, 1]
        assert out["gamma"] == pytest.approx(list(propose_gamma([5 / 64, 7 / 64, 1 / 64], multilabel=True).gamma))
    with pytest.raises(SystemExit, match="a BraTS download is counted by its regions"):
        main(["gamma", str(tmp_path / "gli"), "--num-classes", "4"])
