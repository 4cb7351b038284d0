"""Challenge metrics equal to each challenge's official evaluation code on the same files.

The label files in tests/data/challenge were scored by the official code (KiTS23 and KiTS19 repositories,
DeepMind's surface-distance, the BraTS-evaluation package on panoptica); official_values.json keeps its
numbers and names the code and commits."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from unifocal.io import read_label, read_spacing
from unifocal.metrics import CHALLENGES, LESION_METRICS, challenge_metrics

DATA = Path(__file__).parent / "data" / "challenge"
OFFICIAL = json.loads((DATA / "official_values.json").read_text())
BRATS_REGIONS = ("et", "netc", "snfh", "rc", "tc", "wt")  # the official package's names, CHALLENGES' order


def _pair(folder, case):
    reference = DATA / folder / "reference" / case
    return read_label(DATA / folder / "prediction" / case), read_label(reference), read_spacing(reference)


def _official(values):
    return np.array([math.nan if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize("case", sorted(OFFICIAL["kits23"]))
def test_kits23_dice_and_surface_dice_equal_the_official_code(case):
    prediction, reference, spacing = _pair("kits", case)
    result = challenge_metrics(prediction, reference, "kits23", spacing)
    np.testing.assert_allclose(result["DSC"], OFFICIAL["kits23"][case]["dice"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(result["NSD"], OFFICIAL["kits23"][case]["surface_dice"], rtol=0, atol=1e-6)


def test_kits23_surface_dice_differs_from_counting_boundary_voxels():
    # What the area weighting changes on 3-5 mm slices: the first case's kidney + masses region.
    prediction, reference, spacing = _pair("kits", "case_00000.nii.gz")
    kits = CHALLENGES["kits23"]
    from unifocal.metrics import surface_metrics

    voxels = surface_metrics(prediction, reference, kits.regions, spacing, kits.tolerances)["NSD"]
    official = OFFICIAL["kits23"]["case_00000.nii.gz"]["surface_dice"]
    assert abs(voxels[0] - official[0]) > 0.01


def test_kits19_dice_equals_the_official_code():
    for case, values in OFFICIAL["kits19"].items():
        prediction, reference, spacing = _pair("kits", case)
        prediction[prediction == 3], reference[reference == 3] = 1, 1  # KiTS19 has no cyst label
        result = challenge_metrics(prediction, reference, "kits19", spacing)
        np.testing.assert_allclose(result["DSC"], _official(values["dice"]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", sorted(OFFICIAL["brats_gli"]))
def test_brats_lesion_wise_metrics_equal_the_official_package(case):
    prediction, reference, _ = _pair("brats", case)
    result = challenge_metrics(prediction, reference, "brats-gli")
    official = OFFICIAL["brats_gli"][case]
    keys = {"lesion DSC": "lesionwise_dsc_mean", "lesion NSD": "lesionwise_nsd_mean",
            "lesion HD95": "lesionwise_hd95_mean", "lesion F1": "all_instance_f1", "DSC": "global_dsc"}
    assert set(LESION_METRICS) < set(keys)
    for ours, theirs in keys.items():
        expected = _official([official[region][theirs] for region in BRATS_REGIONS])
        np.testing.assert_allclose(result[ours], expected, rtol=0, atol=1e-6, err_msg=ours)
    # The global HD95 of a region in one file only is the official 373 (mm, SRI space).
    one_sided = [k for k, region in enumerate(BRATS_REGIONS) if official[region]["global_hd95"] == 373.0]
    assert [result["HD95"][k] for k in one_sided] == [373.0] * len(one_sided)


def test_brats2023_regions_are_the_official_wt_tc_et():
    # BraTS 2023 files use the labels of the GLI task's WT, TC and ET: the same numbers.
    prediction, reference, _ = _pair("brats", "BraTS-GLI-00000-000.nii.gz")
    prediction[prediction == 4], reference[reference == 4] = 0, 0
    result = challenge_metrics(prediction, reference, "brats2023")
    official = OFFICIAL["brats_gli"]["BraTS-GLI-00000-000.nii.gz"]
    expected = [official[region]["lesionwise_dsc_mean"] for region in ("wt", "tc", "et")]
    np.testing.assert_allclose(result["lesion DSC"], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("key, folder, case", [("kits23", "kits", "case_00000.nii.gz"),
                                               ("brats-gli", "brats", "BraTS-GLI-00000-000.nii.gz")])
def test_region_masks_give_the_label_maps_values(key, folder, case):
    # What the bundles validate (a multi-label network's region channels) scores as compare does.
    from unifocal.metrics import mask_metrics

    prediction, reference, spacing = _pair(folder, case)
    challenge = CHALLENGES[key]
    expected = challenge_metrics(prediction, reference, key, spacing)
    for k, region in enumerate(challenge.regions):
        result = mask_metrics(np.isin(prediction, region), np.isin(reference, region), key, challenge.tolerances[k],
                              spacing)
        assert set(result) == set(expected)
        for name in expected:
            np.testing.assert_allclose(result[name], expected[name][k:k + 1], rtol=0, atol=1e-12, err_msg=name)
