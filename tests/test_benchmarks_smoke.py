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


@pytest.fixture(scope="module")
def rows():
    cases = losses.make_cases(TINY, deep_supervision=True)
    return losses.run_cases(cases, repeats=2)


def test_every_case_has_the_expected_rows(rows):
    names = [c.name for c in losses.candidates()]
    by_case = {}
    for row in rows:
        by_case.setdefault(row["case"], []).append(row["loss"])
    assert set(by_case) == {"2x3x16x16x16", "2x2x32x32", "2x3x16x16x16 DS", "2x2x32x32 DS"}
    for case, present in by_case.items():
        binary = case.startswith("2x2x")
        # MONAI's AsymmetricUnifiedFocalLoss is binary-only: present exactly on the 2-class cases
        expected = [n for n in names if binary or n != "MONAI AsymmetricUnifiedFocalLoss"]
        assert present == expected


def test_rows_hold_finite_numbers_and_the_reference_ratio_is_one(rows):
    for row in rows:
        for key in ("median_ms", "q1_ms", "q3_ms", "ratio", "cpu_ms", "cpu_ratio", "best_cpu_ratio", "peak_mib",
                    "mem_ratio", "value"):
            assert math.isfinite(row[key]), (row["loss"], row["case"], key)
        assert row["median_ms"] > 0 and row["peak_mib"] > 0
        assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
        if row["loss"] == losses.REFERENCE:
            assert row["ratio"] == 1.0 and row["mem_ratio"] == 1.0


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

    rows = training.run(repeats=1, configurations=(("2d", (32, 32), 2, 3),))
    assert [r["trainer"] for r in rows] == ["nnUNetTrainer", "UnifiedFocalTrainer"]
    assert all(math.isfinite(r["median_ms"]) and r["median_ms"] > 0 for r in rows)
    assert rows[0]["ratio"] == 1.0 and math.isfinite(rows[1]["ratio"])
    assert "| configuration | trainer |" in report.training_table(rows)
