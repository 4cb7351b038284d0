"""Smoke test of the benchmark code (benchmarks/) on tiny shapes: it runs and its tables are complete.
No timing is asserted; the numbers of a real run are in docs/performance.md."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("nnunetv2")
pytest.importorskip("monai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds benchmarks/

from benchmarks import losses, report  # noqa: E402

TINY = ((2, 3, 16, 16, 16), (2, 2, 32, 32))
TINY_REGIONS = ((2, 3, 16, 16, 16),)


@pytest.fixture(scope="module")
def rows():
    cases = losses.make_cases(TINY, deep_supervision=True)
    cases += losses.make_cases(TINY_REGIONS, deep_supervision=True, regions=True)
    return losses.run_cases(cases, repeats=2)


@pytest.fixture(scope="module")
def family_rows():
    cases = [losses.Case((2, 3, 8, 8, 8)), losses.Case((2, 3, 8, 8, 8), regions=True)]
    return losses.run_cases(cases, repeats=1, family=True)


def test_every_case_has_the_expected_rows(rows):
    names = [c.name for c in losses.candidates()]
    by_case = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row["loss"])
    assert set(by_case) == {"2x3x16x16x16", "2x2x32x32", "2x3x16x16x16 DS", "2x2x32x32 DS",
                            "2x3x16x16x16 regions", "2x3x16x16x16 regions DS"}
    for case, present in by_case.items():
        binary = case.startswith("2x2x")
        if "regions" in case:  # nnU-Net's region loss as reference, the unifocal losses; MONAI's are label-map rows
            expected = [losses.REGION_REFERENCE] + [n for n in names if n.startswith("unifocal")]
        else:  # MONAI's AsymmetricUnifiedFocalLoss is binary-only: present exactly on the 2-class cases
            expected = [n for n in names if n != losses.REGION_REFERENCE
                        and (binary or n != "MONAI AsymmetricUnifiedFocalLoss")]
        assert present == expected


def test_rows_hold_finite_numbers_and_the_reference_ratio_is_one(rows):
    for row in rows:
        for key in ("median_ms", "q1_ms", "q3_ms", "ratio", "cpu_ms", "cpu_ratio", "best_cpu_ratio", "peak_mib",
                    "mem_ratio", "value"):
            assert math.isfinite(row[key]), (row["loss"], row["case"], key)
        assert row["median_ms"] > 0 and row["peak_mib"] > 0
        assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
        assert row["reference"] == (losses.REGION_REFERENCE if row["regions"] else losses.REFERENCE)
        if row["loss"] == row["reference"]:
            assert row["ratio"] == 1.0 and row["mem_ratio"] == 1.0


def test_region_inputs_are_nested_bool_masks():
    outputs, targets = losses.make_inputs(losses.Case((2, 3, 32, 32, 32), True, regions=True), torch.device("cpu"))
    assert all(t.dtype == torch.bool and t.shape[1] == 3 for t in targets)
    full = targets[0]
    assert bool((full[:, 1] <= full[:, 0]).all() and (full[:, 2] <= full[:, 1]).all())  # nested
    assert 0 < full[:, 2].float().mean() < full[:, 1].float().mean() < full[:, 0].float().mean() < 0.5


def test_every_family_member_has_a_row_in_both_modes_next_to_its_peer(family_rows):
    members = [c for c in losses.family_candidates() if c.name.startswith("unifocal")]
    assert len(members) >= 15
    for regions in (False, True):
        present = {r["loss"]: r for r in family_rows if r["regions"] == regions}
        for member in members:
            row = present[member.name]
            assert math.isfinite(row["value"]) and math.isfinite(row["cpu_ratio"])
            if member.peer is not None:
                assert row["peer"] == member.peer and member.peer in present
                assert math.isfinite(row["peer_cpu_ratio"]) and math.isfinite(row["peer_mem_ratio"])
    table = report.loss_table(family_rows)
    assert "| peer | peer CPU-time ratio | peer memory ratio |" in table.splitlines()[0]


def test_deep_supervision_inputs_follow_nnunet():
    outputs, targets = losses.make_inputs(losses.Case((2, 3, 32, 32, 32), True), torch.device("cpu"))
    assert [tuple(o.shape[2:]) for o in outputs] == [(32,) * 3, (16,) * 3, (8,) * 3]
    assert all(t.dtype == torch.int16 and t.shape[1] == 1 for t in targets)
    assert losses.nnunet_ds_weights(3) == [2 / 3, 1 / 3, 0.0]


def test_peak_memory_counts_what_a_call_allocates():
    x = torch.zeros(1000, 1000, requires_grad=True)  # 4 MB
    def square_sum(a, _):
        return (a * a).sum()  # the product (4 MB) and, in the backward, the gradient (4 MB)
    peak = losses.peak_extra_memory(square_sum, x, None, torch.device("cpu"))
    assert 8e6 <= peak <= 13e6


def test_tables_and_result_files(rows, tmp_path):
    table = report.loss_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| case | loss | median ms | IQR ms | time ratio | CPU ms | CPU-time ratio | best-CPU")
    assert len(lines) == 2 + len(rows)
    info = report.machine_info(torch.device("cpu"))
    md, js = report.write_results(tmp_path, info, rows, [], {"quick": True})
    assert md.read_text().count("\n| ") == len(rows) + 1
    data = json.loads(js.read_text())
    assert data["machine"]["cpu_count"] >= 1 and len(data["machine"]["loadavg_end"]) == 3
    assert len(data["losses"]) == len(rows)


def test_training_iteration_benchmark_runs():
    from benchmarks import training

    rows = training.run(repeats=1, configurations=(("2d", (32, 32), 2, 3, False), ("2d", (32, 32), 2, 4, True)))
    assert [r["trainer"] for r in rows] == ["nnUNetTrainer", "UnifiedFocalTrainer"] * 2
    assert [r["regions"] for r in rows] == [False, False, True, True]
    assert "3 regions" in rows[2]["configuration"]
    assert all(math.isfinite(r["median_ms"]) and r["median_ms"] > 0 for r in rows)
    assert rows[0]["ratio"] == 1.0 and math.isfinite(rows[1]["ratio"]) and math.isfinite(rows[3]["cpu_ratio"])
    assert "| configuration | trainer |" in report.training_table(rows)


def test_region_dataset_json_declares_nested_regions_for_nnunet():
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from benchmarks import training

    dataset_json = training._dataset_json(4, regions=True)
    manager = LabelManager(dataset_json["labels"], dataset_json["regions_class_order"])
    assert manager.has_regions and manager.num_segmentation_heads == 3


def test_autograd_alone_rows_give_the_fused_losses_value_next_to_them():
    """``--autograd``: the two Unified Focal losses without their hand-written passes, compared (peer ratio)
    with themselves; the value is the same loss."""
    cases = [losses.Case((2, 3, 8, 8, 8)), losses.Case((2, 3, 8, 8, 8), regions=True)]
    names = ["unifocal AsymmetricUnifiedFocalLoss (autograd alone)", "unifocal SymmetricUnifiedFocalLoss (autograd alone)"]
    rows = losses.run_cases(cases, repeats=1, autograd=True, names=names)
    for regions in (False, True):
        present = {r["loss"]: r for r in rows if r["regions"] == regions}
        for name in names:
            fused = present[name.removesuffix(" (autograd alone)")]
            assert present[name]["peer"] == fused["loss"] and math.isfinite(present[name]["peer_cpu_ratio"])
            assert present[name]["value"] == pytest.approx(fused["value"], rel=1e-5)
