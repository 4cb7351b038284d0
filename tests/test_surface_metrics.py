"""HD95 and NSD (unifocal.metrics.surface_metrics): hand-computed distances on small volumes with anisotropic
voxels, equality with MONAI's compute_hausdorff_distance / compute_surface_dice, the empty-class rules,
challenge regions and tolerances, and the voxel size read from image headers (unifocal.io.read_spacing)."""

import math

import numpy as np
import pytest

from unifocal.io import read_spacing
from unifocal.metrics import (
    CHALLENGES,
    DEFAULT_NSD_TOLERANCE,
    challenge_of,
    default_tolerances,
    surface_metrics,
    surface_settings,
)

pytest.importorskip("monai")

SPACING = (2.0, 1.0, 0.5)


def _line_and_outlier():
    """Reference: a line of 10 voxels along axis 2 at (0, 0, k). Prediction: the line one voxel further
    along axis 0 (2 mm away), plus one voxel at (1, 4, 0). Every voxel of both is a boundary voxel."""
    reference = np.zeros((3, 6, 10), np.int16)
    prediction = np.zeros_like(reference)
    reference[0, 0, :] = 1
    prediction[1, 0, :] = 1
    prediction[1, 4, 0] = 1
    return prediction, reference


def test_hand_computed_anisotropic_distances():
    prediction, reference = _line_and_outlier()
    result = surface_metrics(prediction, reference, [1], SPACING, tolerances=2.0)
    # Prediction -> reference: 10 distances of 2 mm (axis 0) and sqrt(2^2 + 4^2) mm for the outlier; the
    # 95th percentile of 11 sorted values (linear interpolation) sits halfway between the 10th and 11th.
    # Reference -> prediction: 10 distances of 2 mm.
    outlier = math.sqrt(20.0)
    assert result["HD95"][0] == pytest.approx(2.0 + 0.5 * (outlier - 2.0), rel=1e-6)
    # NSD: 10 + 10 of the 21 boundary voxels lie within 2 mm; none within 1.9 mm.
    assert result["NSD"][0] == pytest.approx(20 / 21)
    assert surface_metrics(prediction, reference, [1], SPACING, tolerances=1.9)["NSD"][0] == 0.0
    # The same shift along axis 2 (0.5 mm voxels) is 0.5 mm.
    shifted = np.zeros_like(reference)
    shifted[0, 0, 1:] = 1
    shifted[0, 0, 0] = 0
    result = surface_metrics(shifted, reference, [1], SPACING, tolerances=0.5)
    # Reference -> prediction: nine 0s and one 0.5 mm; the 95th percentile is at position 0.95 * 9 = 8.55.
    assert result["HD95"][0] == pytest.approx(0.55 * 0.5)
    assert result["NSD"][0] == 1.0
    grown = reference.copy()
    grown[0, 1, :] = 1  # one more row, 1 mm away along axis 1
    result = surface_metrics(grown, reference, [1], SPACING, tolerances=0.9)
    # Prediction -> reference: 10 zeros and 10 distances of 1 mm: 95th percentile 1; the other way 0.
    assert result["HD95"][0] == pytest.approx(1.0)
    assert result["NSD"][0] == pytest.approx(20 / 30)


def test_unit_spacing_by_default_and_singleton_axes_dropped():
    prediction, reference = _line_and_outlier()
    voxels = surface_metrics(prediction, reference, [1])
    assert voxels["HD95"][0] == pytest.approx(1.0 + 0.5 * (math.sqrt(17.0) - 1.0), rel=1e-6)
    # A 2D slice stored with a length-1 axis is measured in 2D (erosion across that axis would make
    # every voxel a boundary voxel), and the length-1 axis's spacing is ignored.
    flat_pred, flat_ref = prediction[1:2, :, :] * 0, reference[0:1, :, :]
    flat_pred[0, 0, 2:] = 1
    volume = surface_metrics(flat_pred, flat_ref, [1], (7.0, 1.0, 0.5))
    plane = surface_metrics(flat_pred[0], flat_ref[0], [1], (1.0, 0.5))
    assert volume["HD95"][0] == pytest.approx(plane["HD95"][0])
    assert volume["NSD"][0] == pytest.approx(plane["NSD"][0])


def _blobs(seed, shape=(18, 22, 14)):
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    label = np.zeros(shape, np.uint8)
    for value, radius in ((1, 6.0), (2, 3.0), (3, 2.5)):
        centre = rng.uniform(4, np.array(shape) - 4)
        label[np.linalg.norm(grid - centre, axis=-1) < radius] = value
    return label


# MONAI's own functions pass its deprecated always_return_as_numpy internally (MONAI 1.5-1.6).
@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_equals_monai_functions_with_anisotropic_spacing_and_regions():
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    classes = [1, 2, 3, (1, 2, 3), (2, 3)]
    tolerances = [1.0, 1.5, 0.8, 2.0, 1.2]
    spacing = (0.7, 1.3, 2.5)
    for seed in range(3):
        reference, prediction = _blobs(seed), _blobs(seed + 10)
        # nibabel hands out Fortran-ordered arrays.
        ours = surface_metrics(np.asfortranarray(prediction), reference, classes, spacing, tolerances)

        def one_hot(label):
            return torch.from_numpy(np.stack([np.isin(label, c) for c in classes])[None].astype(np.float32))

        hd95 = compute_hausdorff_distance(one_hot(prediction), one_hot(reference), include_background=True,
                                          percentile=95, spacing=spacing)
        nsd = compute_surface_dice(one_hot(prediction), one_hot(reference), tolerances, include_background=True,
                                   spacing=spacing)
        np.testing.assert_allclose(ours["HD95"], hd95[0].double().numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours["NSD"], nsd[0].double().numpy(), rtol=1e-6)


def test_empty_class_rules():
    reference = np.zeros((4, 5, 6), np.uint8)
    prediction = np.zeros_like(reference)
    reference[1:3, 1:3, 1:3] = 1
    prediction[0, 0, 0] = 2
    spacing = (3.0, 2.0, 1.0)
    diagonal = math.sqrt(12.0**2 + 10.0**2 + 6.0**2)
    # Class 1: reference only; class 2: prediction only; class 3: neither.
    result = surface_metrics(prediction, reference, [1, 2, 3], spacing)
    assert result["HD95"][:2] == pytest.approx([diagonal, diagonal])
    assert result["NSD"][:2].tolist() == [0.0, 0.0]
    assert math.isnan(result["HD95"][2]) and math.isnan(result["NSD"][2])
    challenge_rule = surface_metrics(prediction, reference, [1, 2, 3], spacing, empty=1.0, one_empty=math.nan)
    assert math.isnan(challenge_rule["HD95"][0]) and math.isnan(challenge_rule["HD95"][1])
    assert (challenge_rule["HD95"][2], challenge_rule["NSD"][2]) == (0.0, 1.0)
    assert surface_metrics(prediction, reference, [1], spacing, one_empty=373.13)["HD95"][0] == 373.13


def test_ignored_voxels_leave_the_prediction():
    reference = np.zeros((6, 6, 6), np.int16)
    reference[1:4, 1:4, 1:4] = 1
    reference[5, :, :] = 9
    reference[0, 0, 0] = -1
    prediction = (reference == 1).astype(np.int16)
    polluted = prediction.copy()
    polluted[5, :, :] = 1  # far from the object, but where the reference is ignored
    polluted[0, 0, 0] = 1  # where the reference is "outside the crop"
    clean = surface_metrics(prediction, reference, [1], ignore_label=9)
    assert (clean["HD95"][0], clean["NSD"][0]) == (0.0, 1.0)
    result = surface_metrics(polluted, reference, [1], ignore_label=9)
    assert (result["HD95"][0], result["NSD"][0]) == (0.0, 1.0)
    assert surface_metrics(polluted, reference, [1])["HD95"][0] > 0  # without the ignore label they count


def test_settings_are_checked():
    prediction, reference = _line_and_outlier()
    with pytest.raises(ValueError, match="NSD tolerance"):
        surface_metrics(prediction, reference, [1], tolerances=-1.0)
    with pytest.raises(ValueError, match="NSD tolerance"):
        surface_metrics(prediction, reference, [1], tolerances=math.nan)
    with pytest.raises(ValueError, match="NSD tolerance"):
        surface_metrics(prediction, reference, [1], tolerances=True)
    with pytest.raises(ValueError, match="NSD tolerance"):
        surface_metrics(prediction, reference, [1], tolerances=["1"])
    with pytest.raises(ValueError, match="2 NSD tolerances for 1 classes"):
        surface_metrics(prediction, reference, [1], tolerances=[1.0, 2.0])
    with pytest.raises(ValueError, match="one_empty"):
        surface_metrics(prediction, reference, [1], one_empty="max")
    with pytest.raises(ValueError, match="one_empty"):
        surface_settings(1, 1.0, one_empty=None)
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(prediction, reference, [1], spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(prediction, reference, [1], spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        surface_metrics(prediction[:2], reference, [1])


def test_challenge_regions_and_tolerances():
    kits = CHALLENGES["kits23"]
    assert kits.regions == ((1, 2, 3), (2, 3), (2,))
    # nnU-Net's Dataset220_KiTS2023 dataset.json, in its own order: recognised, KiTS's tolerances.
    assert challenge_of([(2,), (1, 2, 3), (3, 2)]) == "kits23"
    assert default_tolerances([(2,), (1, 2, 3), (3, 2)]) == [kits.tolerances[2], kits.tolerances[0],
                                                            kits.tolerances[1]]
    assert kits.tolerances[0] == pytest.approx(1.0331, abs=1e-4)
    # nnU-Net's Dataset137_BraTS21 regions vs the 2018-2021 and 2023 label numberings.
    assert challenge_of([(1, 2, 3), (2, 3), (3,)]) == "brats-nnunet"
    assert challenge_of([(1, 2, 4), (1, 4), (4,)]) == "brats2021"
    assert challenge_of([(1, 2, 3), (1, 3), (3,)]) == "brats2023"
    assert challenge_of([1, 2]) is None
    assert default_tolerances([1, 2]) == [DEFAULT_NSD_TOLERANCE] * 2


def test_read_spacing_from_headers(tmp_path):
    import nibabel
    import SimpleITK
    from PIL import Image

    array = np.zeros((4, 5, 6), np.uint8)
    nibabel.save(nibabel.Nifti1Image(array, np.diag([0.8, 0.9, 2.5, 1.0])), tmp_path / "a.nii.gz")
    assert read_spacing(tmp_path / "a.nii.gz") == pytest.approx((0.8, 0.9, 2.5))
    # SimpleITK: header order x, y, z; arrays z, y, x.
    image = SimpleITK.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.6, 3.0))
    SimpleITK.WriteImage(image, str(tmp_path / "a.mha"))
    assert read_spacing(tmp_path / "a.mha") == pytest.approx((3.0, 0.6, 0.7))
    Image.fromarray(array[0]).save(tmp_path / "a.png")
    assert read_spacing(tmp_path / "a.png") is None
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="broken.nii.gz: cannot read the image header"):
        read_spacing(tmp_path / "broken.nii.gz")
    # (nibabel itself replaces a zero NIfTI pixdim by 1; a MetaImage header keeps it.)
    header = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementSpacing = 0 1 1\nElementType = MET_UCHAR\n"
    (tmp_path / "zero.mha").write_bytes((header + "ElementDataFile = LOCAL\n").encode() + bytes(8))
    with pytest.raises(ValueError, match=r"zero.mha: the header's voxel size \(1.0, 1.0, 0.0\)"):
        read_spacing(tmp_path / "zero.mha")
    bad_nrrd = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nspace directions: (0,0,0) (0,1,0) (0,0,1)\n"
    (tmp_path / "bad.nrrd").write_bytes((bad_nrrd + "encoding: raw\n\n").encode() + bytes(8))
    with pytest.raises(ValueError, match="bad.nrrd: cannot read the image header") as error:
        read_spacing(tmp_path / "bad.nrrd")
    assert "\n" not in str(error.value)


def test_benchmark_runs_on_a_tiny_volume(tmp_path):
    """benchmarks/metrics.py on a 32 x 32 x 12 pair (no timing asserted; the numbers are in performance.md)."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds benchmarks/
    from benchmarks import metrics as benchmark

    reference, prediction = benchmark.kits_like_pair(0, (32, 32, 12), benchmark.SPACING)
    assert {1, 2} <= set(np.unique(reference).tolist()) and {1, 2} <= set(np.unique(prediction).tolist())
    assert benchmark.main(["--shape", "32,32,12", "--pairs", "0", "--out", str(tmp_path / "out"),
                           "--work", str(tmp_path)]) == 0
    (result,) = (tmp_path / "out").glob("*-metrics.json")
    single = json.loads(result.read_text())["one_pair"]
    assert {"read_s", "overlap_s", "surface_s", "total_s", "peak_rss_mib"} <= set(single)


def test_area_weighted_nsd_is_monais_subvoxel_surface_dice():
    import torch
    from monai.metrics import compute_surface_dice

    reference = np.zeros((7, 9, 8), np.uint8)
    reference[1:5, 2:7, 2:6] = 1
    prediction = np.roll(reference, 1, axis=0)
    prediction[3, 1, 3] = 1
    spacing, tolerance = (3.0, 0.8, 0.7), 1.1
    ours = surface_metrics(prediction, reference, [1], spacing, tolerance, nsd_surface="area")["NSD"][0]
    one_hot = [torch.from_numpy(np.stack([a == 0, a == 1]))[None].float() for a in (prediction, reference)]
    monai = compute_surface_dice(*one_hot, [tolerance], spacing=spacing, use_subvoxels=True)
    assert ours == pytest.approx(float(monai[0, 0]), abs=1e-6)
    assert ours != pytest.approx(surface_metrics(prediction, reference, [1], spacing, tolerance)["NSD"][0], abs=1e-3)
    with pytest.raises(ValueError, match="nsd_surface must be one of"):
        surface_metrics(prediction, reference, [1], nsd_surface="faces")
