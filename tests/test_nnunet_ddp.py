"""The trainer-built loss under torch.distributed (gloo, 2 CPU processes) equals the single-process loss
on the concatenated batch, gradients included.

batch_dice=True (as the plans set it for most nnU-Net configurations): the Tversky statistics are summed
over the batch and all-reduced across ranks. Each rank's loss is its local focal mean plus the global
Tversky term; DDP then averages the parameter gradients over ranks. So the mean of the rank losses must
equal the loss of the whole batch, and each rank's gradient divided by the world size must equal the
whole-batch gradient of its own samples. Both modes, with an ignore label that removes the same number of
voxels from every sample (so that the per-rank means of the focal part average to the global mean).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnunet_trainers.config import Settings
from nnunet_trainers.loss_builder import ResolvedLoss, TrainerState, build_loss, resolve

WORLD = 2
PER_RANK = 2
SIZES = (32, 16, 8)

WORKER = r"""
import sys
import torch
import torch.distributed as dist

rank, mode, init_file, out_file, tests_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
sys.path.insert(0, tests_dir)
from test_nnunet_ddp import PER_RANK, WORLD, make_batch, state_for
from nnunet_trainers.config import Settings
from nnunet_trainers.loss_builder import build_loss, resolve

dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
state = state_for(mode, is_ddp=True)
resolved = resolve("asymmetric_unified_focal", Settings(), state)
loss = build_loss(resolved, state)
outputs, targets = make_batch(mode)
part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
local = [o[part].detach().clone().requires_grad_(True) for o in outputs]
value = loss(local, [t[part] for t in targets])
value.backward()
torch.save({"value": value.detach(), "grads": [o.grad for o in local], "ds_weights": resolved.ds_weights}, out_file)
dist.destroy_process_group()
"""


def state_for(mode: str, is_ddp: bool) -> TrainerState:
    return TrainerState(has_regions=mode == "regions", num_channels=2 if mode == "regions" else 3, ignore_label=3,
                        batch_dice=True, deep_supervision=True, num_ds_outputs=len(SIZES), is_ddp=is_ddp)


def make_batch(mode: str):
    """The global batch (WORLD * PER_RANK samples), nnU-Net style deep-supervision lists."""
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 3, (WORLD * PER_RANK, 1, SIZES[0], SIZES[0]), generator=g)
    labels[:, :, 4:8] = 3  # the same ignored band in every sample
    outputs, targets = [], []
    for size in SIZES:
        step = SIZES[0] // size
        small = labels[:, :, ::step, ::step]
        channels = 2 if mode == "regions" else 3
        outputs.append(torch.randn(labels.shape[0], channels, size, size, generator=g, dtype=torch.float64))
        if mode == "regions":
            fg = torch.cat([(small >= 1) & (small != 3), small == 2], 1)
            targets.append(torch.cat([fg, small == 3], 1))
        else:
            targets.append(small.to(torch.int16))
    return outputs, targets


@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_ddp_loss_equals_single_process_loss(tmp_path, mode):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tests_dir = str(Path(__file__).parent)
    init_file = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(rank), mode, str(init_file),
                               str(tmp_path / f"rank{rank}.pt"), tests_dir], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(WORLD)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]

    weights = ranks[0]["ds_weights"]
    assert weights[-1] > 0 and weights[-1] < 1e-5  # nnU-Net's DDP fix: no unused head
    single = state_for(mode, is_ddp=False)
    reference_loss = build_loss(ResolvedLoss("asymmetric_unified_focal", dict(resolve(
        "asymmetric_unified_focal", Settings(), single).params), ds_weights=weights), single)
    outputs, targets = make_batch(mode)
    outputs = [o.requires_grad_(True) for o in outputs]
    expected = reference_loss(outputs, targets)
    expected.backward()

    mean_value = sum(r["value"] for r in ranks) / WORLD
    torch.testing.assert_close(mean_value, expected.detach(), rtol=1e-10, atol=1e-12)
    for rank, result in enumerate(ranks):
        part = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        for grad, full in zip(result["grads"], outputs):
            torch.testing.assert_close(grad / WORLD, full.grad[part], rtol=1e-9, atol=1e-12)

    # the all-reduce mattered: a rank's loss on its own samples alone is different
    alone = reference_loss([o[:PER_RANK].detach() for o in outputs], [t[:PER_RANK] for t in targets])
    assert abs(alone.item() - ranks[0]["value"].item()) > 1e-4
