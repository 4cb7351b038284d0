"""``unifocal compare`` on tiny prediction folders: per-case numbers, Wilcoxon p-values checked against scipy,
the Markdown/CSV outputs, region mode, and nnU-Net results-folder layouts."""

import csv
import json
import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from unifocal import report as unifocal_report
from unifocal.cli import main


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    """Evaluate in this process by default: each worker process imports MONAI anew, seconds per tiny run
    (test_parallel_jobs_match_in_process covers -j)."""
    monkeypatch.setattr(unifocal_report, "available_cores", lambda: 1)


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".png"):
        from PIL import Image

        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    else:
        import nibabel

        nibabel.save(nibabel.Nifti1Image(np.asarray(array, dtype=np.uint8), np.eye(4)), path)


def _reference(i):
    ref = np.zeros((8, 8), np.uint8)
    ref[1:5, 1:5] = 1  # 16 pixels
    ref[6:8, 5 + (i % 2): 7 + (i % 2)] = 2  # 4 pixels
    return ref


def _method_a(i, ref):
    pred = ref.copy()
    pred[1, 1:1 + i] = 0  # misses i organ pixels
    return pred


def _method_b(i, ref):
    pred = ref.copy()
    pred[1:3, 1:5] = 0  # misses 8 organ pixels
    if i % 3 == 0:
        pred[pred == 2] = 0  # misses the lesion in cases 0 and 3
    return pred


N_CASES = 6


@pytest.fixture
def folders(tmp_path):
    for i in range(N_CASES):
        ref = _reference(i)
        _save(tmp_path / "ref" / f"case{i}.png", ref)
        _save(tmp_path / "a" / f"case{i}.png", _method_a(i, ref))
        _save(tmp_path / "b" / f"case{i}.png", _method_b(i, ref))
    return tmp_path


def _dice(pred, ref, c):
    p, g = pred == c, ref == c
    denominator = p.sum() + g.sum()
    return math.nan if denominator == 0 else 2 * (p & g).sum() / denominator


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_compare_numbers_tables_and_wilcoxon(folders, capsys):
    out = folders / "cmp"
    rc = main(["compare", f"A={folders / 'a'}", f"B={folders / 'b'}", "--reference", str(folders / "ref"),
               "--baseline", "B", "--labels", "1", "2", "--names", "organ", "lesion", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    per_case = _read_csv(out / "per_case.csv")
    assert len(per_case) == 2 * N_CASES * 2
    # Hand-computed: method A case 3 misses 3 of 16 organ pixels -> TP 13, FN 3, DSC 26/29, recall 13/16.
    row = next(r for r in per_case if r["method"] == "A" and r["case"] == "case3" and r["class"] == "organ")
    assert (int(row["TP"]), int(row["FP"]), int(row["FN"])) == (13, 0, 3)
    assert float(row["DSC"]) == pytest.approx(26 / 29)
    assert float(row["IoU"]) == pytest.approx(13 / 16)
    assert float(row["recall"]) == pytest.approx(13 / 16)
    assert float(row["precision"]) == 1.0
    # Method B case 0 has no lesion prediction: DSC 0, precision 0/0 -> NaN -> empty CSV cell.
    row = next(r for r in per_case if r["method"] == "B" and r["case"] == "case0" and r["class"] == "lesion")
    assert float(row["DSC"]) == 0.0 and row["precision"] == ""

    dice_a = [_dice(_method_a(i, _reference(i)), _reference(i), 1) for i in range(N_CASES)]
    dice_b = [_dice(_method_b(i, _reference(i)), _reference(i), 1) for i in range(N_CASES)]
    summary = _read_csv(out / "summary.csv")
    organ_a = next(r for r in summary if (r["method"], r["class"], r["metric"]) == ("A", "organ", "DSC"))
    expected = wilcoxon(dice_a, dice_b)
    assert float(organ_a["mean"]) == pytest.approx(np.mean(dice_a))
    assert float(organ_a["sd"]) == pytest.approx(np.std(dice_a, ddof=1))
    assert float(organ_a["p_value"]) == pytest.approx(expected.pvalue)
    assert float(organ_a["wilcoxon_statistic"]) == pytest.approx(expected.statistic)
    assert int(organ_a["n_pairs"]) == N_CASES and organ_a["baseline"] == "B"
    # A beats B on every case: all 6 differences positive -> exact two-sided p = 2 / 2^6.
    assert float(organ_a["p_value"]) == pytest.approx(2 / 64)
    # Lesion precision: B has NaN in cases 0 and 3, so the test uses the 4 other pairs, all differences 0.
    lesion_precision = next(r for r in summary if (r["method"], r["class"], r["metric"]) == ("A", "lesion", "precision"))
    assert int(lesion_precision["n_pairs"]) == 4 and float(lesion_precision["p_value"]) == 1.0
    # The class mean row: per case the mean over organ and lesion.
    mean_a = next(r for r in summary if (r["method"], r["class"], r["metric"]) == ("A", "class mean", "DSC"))
    assert float(mean_a["mean"]) == pytest.approx(np.mean([(d + 1.0) / 2 for d in dice_a]))

    table = (out / "table.md").read_text()
    assert "### organ (label 1; NSD tolerance 1)" in table and "### class mean" in table
    assert f"| B (baseline) | {np.mean(dice_b):.3f} ± {np.std(dice_b, ddof=1):.3f} |" in table
    assert f"| A | {np.mean(dice_a):.3f} ± {np.std(dice_a, ddof=1):.3f} (p=0.031*) |" in table
    assert table in printed
    assert (out / "boxplots.png").stat().st_size > 1000


def test_region_mode_and_empty_one(folders, capsys):
    out = folders / "regions"
    rc = main(["compare", str(folders / "a"), str(folders / "b"), "-r", str(folders / "ref"),
               "--regions", "1,2", "2", "--empty", "one", "--no-plot", "-o", str(out)])
    assert rc == 0
    per_case = _read_csv(out / "per_case.csv")
    # Default names: folder names, region labels; baseline: the first method.
    assert {r["method"] for r in per_case} == {"a", "b"}
    row = next(r for r in per_case if r["method"] == "b" and r["case"] == "case0" and r["class"] == "region 1+2")
    # Region {1, 2}: reference 20 pixels, B predicts 8 of them -> DSC 16/28.
    assert float(row["DSC"]) == pytest.approx(16 / 28)
    row = next(r for r in per_case if r["method"] == "b" and r["case"] == "case0" and r["class"] == "region 2")
    assert float(row["precision"]) == 1.0  # 0/0 with --empty one
    assert not (out / "boxplots.png").exists()
    summary = _read_csv(out / "summary.csv")
    assert {r["baseline"] for r in summary if r["method"] == "b"} == {"a"}


def test_classes_from_reference_values_and_missing_cases(folders, capsys):
    (folders / "a" / "case5.png").unlink()
    command = ["compare", str(folders / "a"), str(folders / "b"), "-r", str(folders / "ref"), "--no-plot",
               "-o", str(folders / "out")]
    assert main(command) == 2  # every case, unless a flag says otherwise
    assert capsys.readouterr().err.strip() == ("unifocal compare: b and a predict different cases, e.g. case5; "
                                               "--cases common evaluates the shared ones")
    assert main(command + ["--cases", "common"]) == 0
    captured = capsys.readouterr()
    assert "label values found in the reference" in captured.out
    assert "a has no prediction for 1 reference case(s), e.g. case5" in captured.err
    per_case = _read_csv(folders / "out" / "per_case.csv")
    assert {r["case"] for r in per_case} == {f"case{i}" for i in range(5)}
    assert {r["class"] for r in per_case} == {"label 1", "label 2"}


def _nnunet_results(root, trainers):
    """A fake nnU-Net results tree: two folds of 3D NIfTI validation predictions per trainer, plus
    nnUNet_preprocessed/<Dataset>/gt_segmentations."""
    dataset = "Dataset004_Fake"
    meta = {"labels": {"background": 0, "organ": 1, "lesion": 2}, "file_ending": ".nii.gz",
            "channel_names": {"0": "CT"}, "numTraining": N_CASES}
    # 3D volumes: two identical slices, so every count doubles and every ratio stays as in 2D.
    for i in range(N_CASES):
        _save(root / "pre" / dataset / "gt_segmentations" / f"case{i}.nii.gz", np.stack([_reference(i)] * 2))
    for trainer, make in trainers.items():
        folder = root / "results" / dataset / f"{trainer}__nnUNetPlans__2d"
        folder.mkdir(parents=True)
        (folder / "dataset.json").write_text(json.dumps(meta))
        for i in range(N_CASES):
            validation = folder / f"fold_{i % 2}" / "validation"
            _save(validation / f"case{i}.nii.gz", np.stack([make(i, _reference(i))] * 2))
            (validation / "summary.json").write_text("{}")
    return root / "results" / dataset


def test_nnunet_results_folders(tmp_path, capsys, monkeypatch):
    results = _nnunet_results(tmp_path, {"TrainerA": _method_a, "TrainerB": _method_b})
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    out = tmp_path / "out"
    # A dataset results folder expands to every trainer; reference and classes come from nnU-Net's layout.
    rc = main(["compare", str(results), "--baseline", "TrainerB", "--no-plot", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "classes (" in printed and "organ=1, lesion=2" in printed
    per_case = _read_csv(out / "per_case.csv")
    assert {r["method"] for r in per_case} == {"TrainerA", "TrainerB"}
    assert len({r["case"] for r in per_case}) == N_CASES  # both folds
    row = next(r for r in per_case if r["method"] == "TrainerA" and r["case"] == "case3" and r["class"] == "organ")
    assert (int(row["TP"]), int(row["FP"]), int(row["FN"])) == (26, 0, 6)
    assert float(row["DSC"]) == pytest.approx(26 / 29)
    # One fold of one trainer, with an explicit name and reference.
    rc = main(["compare", f"A0={results / 'TrainerA__nnUNetPlans__2d'}", "--folds", "0", "--no-plot",
               "-r", str(tmp_path / "pre" / "Dataset004_Fake" / "gt_segmentations"), "-o", str(out), "--overwrite",
               "--cases", "predicted"])
    assert rc == 0
    assert {r["case"] for r in _read_csv(out / "per_case.csv")} == {"case0", "case2", "case4"}
    # Without --reference the trainer folder's gt_segmentations is the reference, and its fold's predicted
    # (validation) cases are what is evaluated, as nnU-Net evaluates a fold.
    assert main(["compare", f"A0={results / 'TrainerA__nnUNetPlans__2d'}", "--folds", "0", "--no-plot",
                 "-o", str(out), "--overwrite"]) == 0
    assert {r["case"] for r in _read_csv(out / "per_case.csv")} == {"case0", "case2", "case4"}


def test_usage_errors(folders, capsys):
    assert main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "-b", "nope", "-o",
                 str(folders / "x")]) == 2
    assert "baseline 'nope'" in capsys.readouterr().err
    assert main(["compare", str(folders / "a"), str(folders / "a"), "-r", str(folders / "ref")]) == 2
    assert "duplicate method names" in capsys.readouterr().err
    assert main(["compare", str(folders / "a")]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["compare", str(folders / "missing"), "-r", str(folders / "ref")]) == 2


def test_npz_probabilities_next_to_predictions_and_cross_format_reference(tmp_path, capsys, monkeypatch):
    results = _nnunet_results(tmp_path, {"TrainerA": _method_a})
    # nnUNetv2_train --npz writes softmax .npz (and .pkl) files next to the predicted label files.
    for validation in results.glob("*/fold_*/validation"):
        for nifti in list(validation.glob("*.nii.gz")):
            np.savez(validation / nifti.name.replace(".nii.gz", ".npz"), probabilities=np.zeros((3, 2, 8, 8)))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    rc = main(["compare", str(results), "--no-plot", "-o", str(tmp_path / "out")])
    assert rc == 0
    assert len({r["case"] for r in _read_csv(tmp_path / "out" / "per_case.csv")}) == N_CASES
    # PNG predictions against a NIfTI reference folder: the reference's own single ending is used.
    for i in range(N_CASES):
        _save(tmp_path / "png" / f"case{i}.png", _method_a(i, _reference(i)))
        _save(tmp_path / "nii_ref" / f"case{i}.nii.gz", _reference(i))
    rc = main(["compare", str(tmp_path / "png"), "-r", str(tmp_path / "nii_ref"), "--no-plot",
               "-o", str(tmp_path / "out2")])
    assert rc == 0
    row = next(r for r in _read_csv(tmp_path / "out2" / "per_case.csv") if r["case"] == "case3" and r["class"] == "label 1")
    assert float(row["DSC"]) == pytest.approx(26 / 29)


def _line_case(root, i, spacing=(2.0, 1.0, 0.5), ending=".nii.gz"):
    """The hand-computed pair of test_surface_metrics: a 10-voxel reference line along axis 2, predicted
    2 mm away along axis 0, plus (case 1 only) an outlier voxel at (1, 4, 0)."""
    reference = np.zeros((3, 6, 10), np.uint8)
    prediction = np.zeros_like(reference)
    reference[0, 0, :] = 1
    prediction[1, 0, :] = 1
    if i == 1:
        prediction[1, 4, 0] = 1
    for folder, array in (("ref", reference), ("pred", prediction)):
        path = root / folder / f"case{i}{ending}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if ending == ".nii.gz":
            import nibabel

            nibabel.save(nibabel.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
        else:
            import SimpleITK

            image = SimpleITK.GetImageFromArray(array)  # array axes z, y, x: header spacing reversed
            image.SetSpacing(spacing[::-1])
            SimpleITK.WriteImage(image, str(path))


@pytest.mark.parametrize("ending", [".nii.gz", ".mha"])
def test_surface_metrics_on_header_spacing(tmp_path, capsys, ending):
    for i in range(2):
        _line_case(tmp_path, i, ending=ending)
    out = tmp_path / "out"
    rc = main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--nsd-tolerance", "2",
               "--no-plot", "-o", str(out)])
    assert rc == 0
    rows = {r["case"]: r for r in _read_csv(out / "per_case.csv")}
    assert float(rows["case0"]["HD95"]) == pytest.approx(2.0)
    assert float(rows["case1"]["HD95"]) == pytest.approx(2.0 + 0.5 * (math.sqrt(20.0) - 2.0), rel=1e-6)
    assert float(rows["case0"]["NSD"]) == 1.0
    assert float(rows["case1"]["NSD"]) == pytest.approx(20 / 21)
    assert rows["case1"]["spacing"] == "2x1x0.5"
    table = (out / "table.md").read_text()
    assert "mm (voxel size from the reference headers)" in table and "NSD tolerance 2)" in table


@pytest.mark.parametrize("flags", [[], ["--no-surface"]])
def test_prediction_voxel_size_must_match_the_reference(tmp_path, capsys, flags):
    _line_case(tmp_path, 0)
    _line_case(tmp_path / "other", 0, spacing=(1.0, 1.0, 1.0))
    (tmp_path / "other" / "pred" / "case0.nii.gz").replace(tmp_path / "pred" / "case0.nii.gz")
    rc = main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--no-plot", "-o",
               str(tmp_path / "out"), *flags])
    assert rc == 2
    assert capsys.readouterr().err.strip().endswith(
        f"case case0: prediction {tmp_path / 'pred' / 'case0.nii.gz'} and reference {tmp_path / 'ref' / 'case0.nii.gz'} "
        "lie in different voxel grids: voxel size (1, 1, 1) vs (2, 1, 0.5) mm; resample the prediction to the "
        "reference image")
    assert not (tmp_path / "out").exists()


def _save_affine(path, array, affine):
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array, np.uint8), affine), path)


def test_compared_in_world_space(tmp_path, capsys):
    """The reference stored x-flipped with the matching affine is the same segmentation: DSC 1. A prediction
    on a shifted grid is an error naming the case and the origin."""
    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:4, 0:2] = 1
    labels[4, 2, 3] = 2
    affine = np.diag([0.8, 0.9, 2.0, 1.0])
    flipped = affine.copy()
    flipped[0, 0], flipped[0, 3] = -0.8, 0.8 * 5  # voxel i of the flipped array is voxel 5 - i of the original
    _save_affine(tmp_path / "pred" / "c.nii.gz", labels, affine)
    _save_affine(tmp_path / "ref" / "c.nii.gz", labels[::-1], flipped)
    assert main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--no-plot", "--labels", "1", "2",
                 "-o", str(tmp_path / "out")]) == 0
    rows = _read_csv(tmp_path / "out" / "per_case.csv")
    assert [(float(r["DSC"]), float(r["HD95"])) for r in rows] == [(1.0, 0.0), (1.0, 0.0)]
    shifted = affine.copy()
    shifted[:3, 3] = (0.0, 1.8, 0.0)
    _save_affine(tmp_path / "pred" / "c.nii.gz", labels, shifted)
    assert main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--no-plot", "--labels", "1",
                 "--no-surface", "-o", str(tmp_path / "out2")]) == 2
    # Compared after reorientation: the origin is the reoriented prediction's first voxel.
    assert "lie in different voxel grids: origin (4, 1.8, 0) vs (4, 0, 0) mm" in capsys.readouterr().err


def test_spacing_for_header_less_files(folders, capsys):
    args = ["compare", str(folders / "a"), "-r", str(folders / "ref"), "--labels", "2", "--no-plot"]
    assert main(args + ["-o", str(folders / "px")]) == 0
    assert main(args + ["--spacing", "0.5", "2", "-o", str(folders / "mm")]) == 0
    pixels = {r["case"]: r for r in _read_csv(folders / "px" / "per_case.csv")}
    mm = {r["case"]: r for r in _read_csv(folders / "mm" / "per_case.csv")}
    assert "voxel units" in (folders / "px" / "table.md").read_text()
    assert pixels["case0"]["spacing"] == "" and mm["case0"]["spacing"] == "0.5x2"
    organ = ["compare", str(folders / "b"), "-r", str(folders / "ref"), "--labels", "1", "--no-plot"]
    assert main(organ + ["-o", str(folders / "b_px")]) == 0
    assert main(organ + ["--spacing", "0.5", "2", "-o", str(folders / "b_mm")]) == 0
    # B removes rows 1-2 of the 4x4 organ: every remaining boundary distance runs along axis 0.
    px = float(_read_csv(folders / "b_px" / "per_case.csv")[0]["HD95"])
    assert px == pytest.approx(2.0)
    assert float(_read_csv(folders / "b_mm" / "per_case.csv")[0]["HD95"]) == pytest.approx(0.5 * px)
    assert main(args + ["--spacing", "1", "-o", str(folders / "bad")]) == 2
    assert "voxel size (1.0,) has 1 values for a 2D label map" in capsys.readouterr().err


def test_spacing_option_refused_for_files_with_a_header(tmp_path, capsys):
    _line_case(tmp_path, 0)
    rc = main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--spacing", "1", "1", "1",
               "-o", str(tmp_path / "out")])
    assert rc == 2
    assert "has a voxel size in its header" in capsys.readouterr().err


def _kits_case(i):
    """KiTS labels: 1 kidney, 2 tumour, 3 cyst."""
    reference = np.zeros((12, 12, 6), np.uint8)
    reference[1:10, 1:10, 1:5] = 1
    reference[3:6, 3:6, 2:4] = 2
    if i % 2:
        reference[7:9, 7:9, 2:4] = 3
    prediction = reference.copy()
    prediction[1, 1:10, 1:5] = 0
    if i == 0:
        prediction[prediction == 2] = 1  # tumour missed
    return reference, prediction


def test_challenge_regions_by_flag_and_from_dataset_json(tmp_path, capsys):
    import nibabel

    for i in range(4):
        reference, prediction = _kits_case(i)
        for folder, array in (("ref", reference), ("pred", prediction)):
            (tmp_path / folder).mkdir(exist_ok=True)
            nibabel.save(nibabel.Nifti1Image(array, np.diag([0.8, 0.8, 3.0, 1.0])), tmp_path / folder / f"c{i}.nii.gz")
    out = tmp_path / "flag"
    assert main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--challenge", "kits23",
                 "--no-plot", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kidney + masses=(1, 2, 3), masses=(2, 3), tumour=(2,)" in printed
    assert "NSD tolerance (KiTS21/KiTS23's): kidney + masses 1.03, masses 1.13, tumour 1.15" in printed
    rows = _read_csv(out / "per_case.csv")
    tumour = next(r for r in rows if r["case"] == "c0" and r["class"] == "tumour")
    # The missed tumour: DSC 0, NSD 0, HD95 = the image diagonal (12 * 0.8, 12 * 0.8, 6 * 3 mm).
    assert float(tumour["DSC"]) == 0.0 and float(tumour["NSD"]) == 0.0
    assert float(tumour["HD95"]) == pytest.approx(math.sqrt(2 * 9.6**2 + 18.0**2), rel=1e-6)
    # nnU-Net's region dataset.json next to the reference: same regions, KiTS's tolerances recognised.
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}, "file_ending": ".nii.gz"}))
    (tmp_path / "ref" / "dataset.json").write_text((tmp_path / "dataset.json").read_text())
    assert main(["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--no-plot",
                 "--hd95-one-empty", "nan", "-o", str(tmp_path / "json")]) == 0
    printed = capsys.readouterr().out
    assert "NSD tolerance (KiTS21/KiTS23's): kidney 1.03, masses 1.13, tumor 1.15" in printed
    tumour = next(r for r in _read_csv(tmp_path / "json" / "per_case.csv") if r["case"] == "c0" and r["class"] == "tumor")
    assert tumour["HD95"] == "" and float(tumour["NSD"]) == 0.0  # --hd95-one-empty nan: left out


def test_both_empty_follows_empty_option(tmp_path, capsys):
    _line_case(tmp_path, 0)
    args = ["compare", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "--labels", "1", "5", "--no-plot"]
    assert main(args + ["-o", str(tmp_path / "nan")]) == 0
    absent = next(r for r in _read_csv(tmp_path / "nan" / "per_case.csv") if r["class"] == "label 5")
    assert absent["DSC"] == absent["HD95"] == absent["NSD"] == ""
    assert main(args + ["--empty", "one", "-o", str(tmp_path / "one")]) == 0
    absent = next(r for r in _read_csv(tmp_path / "one" / "per_case.csv") if r["class"] == "label 5")
    assert (float(absent["DSC"]), float(absent["HD95"]), float(absent["NSD"])) == (1.0, 0.0, 1.0)


def test_existing_report_is_not_replaced_without_overwrite(folders, capsys):
    out = folders / "cmp"
    out.mkdir()
    (out / "table.md").write_text("my earlier report")
    (out / "boxplots.png").write_text("an older run's plot")
    # Checked before any work: even the missing method folder is not looked at yet.
    rc = main(["compare", str(folders / "missing"), "-r", str(folders / "ref"), "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip() == f"unifocal compare: {out} holds a report (boxplots.png); pass --overwrite to replace it"
    assert (out / "table.md").read_text() == "my earlier report"
    assert main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "--no-plot", "-o", str(out),
                 "--overwrite"]) == 0
    assert (out / "table.md").read_text() != "my earlier report"
    # The old report went whole: no older plot next to the new table; nothing else was left beside the folder.
    assert sorted(p.name for p in out.iterdir()) == ["per_case.csv", "summary.csv", "table.md"]
    assert sorted(p.name for p in folders.iterdir() if p.name.startswith(".")) == []
    (folders / "file").write_text("x")
    assert main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "-o", str(folders / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_a_folder_holding_other_files_is_never_replaced(folders, capsys):
    out = folders / "mine"
    out.mkdir()
    (out / "table.md").write_text("an earlier report")
    (out / "notes.txt").write_text("mine")
    rc = main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "-o", str(out), "--overwrite"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        f"unifocal compare: {out} holds notes.txt, which is not a report file; choose a new or empty output "
        "folder (a report replaces its folder whole)")
    assert (out / "notes.txt").read_text() == "mine" and (out / "table.md").read_text() == "an earlier report"


def test_without_monai(folders, capsys, monkeypatch):
    from unifocal import metrics

    monkeypatch.setattr(metrics, "surface_metrics_available", lambda: False)
    monkeypatch.setattr(unifocal_report.evaluation, "surface_metrics_available", lambda: False)
    assert main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "-o", str(folders / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("unifocal compare: HD95 and NSD need MONAI: pip install 'unifocal[monai]', "
                           "or pass --no-surface")
    assert not (folders / "x").exists()
    assert main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "--no-surface", "--no-plot",
                 "-o", str(folders / "x")]) == 0
    assert "HD95" not in _read_csv(folders / "x" / "per_case.csv")[0]
    # demo and sweep evaluate with surface=None: the overlap metrics and a note without MONAI.
    evaluation = unifocal_report.evaluate({"a": {"case0": folders / "a" / "case0.png"}},
                                          {"case0": folders / "ref" / "case0.png"}, [1])
    assert evaluation.metrics == ["DSC", "IoU", "recall", "precision"]
    assert "MONAI is not installed" in unifocal_report.markdown_report(evaluation, None)


@pytest.mark.parametrize("flags, message", [
    (["--nsd-tolerance", "-1"], "need a finite number >= 0"),
    (["--nsd-tolerance", "nan"], "need a finite number >= 0"),
    (["--spacing", "0"], "need a finite number > 0"),
    (["-j", "0"], "need a finite integer >= 1"),
    (["--nsd-tolerance", "1", "2", "3"], "--nsd-tolerance needs one value or one per class (2); got 3"),
    (["--no-surface", "--spacing", "1", "1"], "--spacing, --nsd-tolerance and --nsd-surface are for HD95/NSD"),
    (["--labels", "1", "--names", "a", "b"], "--names needs one name per class"),
    (["--regions", "1,x"], "bad region '1,x'"),
])
def test_bad_options(folders, capsys, flags, message):
    try:
        rc = main(["compare", str(folders / "a"), "-r", str(folders / "ref"), "-o", str(folders / "x"), *flags])
    except SystemExit as exit:  # argparse
        rc = exit.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (folders / "x").exists()


@pytest.mark.slow
def test_parallel_jobs_match_in_process(folders, capsys):
    common = ["compare", f"A={folders / 'a'}", f"B={folders / 'b'}", "-r", str(folders / "ref"), "--no-plot"]
    assert main(common + ["-j", "1", "-o", str(folders / "one")]) == 0
    assert main(common + ["-j", "2", "-o", str(folders / "two")]) == 0
    assert _read_csv(folders / "one" / "per_case.csv") == _read_csv(folders / "two" / "per_case.csv")
    assert "evaluated 6/6 cases" in capsys.readouterr().err
