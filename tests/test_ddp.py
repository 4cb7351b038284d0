"""torch.distributed (gloo, 2 processes on CPU): with ``ddp=True`` batch_dice statistics are all-reduced
across ranks and voxel means divide by the global count of counted voxels (ignore labels and masks give
the ranks different counts); without it a loss runs no collective, so one rank can compute it alone.

Relations checked (world size W, each rank holding B / W samples):
- value: the single-process loss on the whole batch equals the average of the rank values (the batch-level
  Tversky term is the same on every rank; the voxel-mean focal part averages over equal halves);
- input gradients: _AllGatherSum's backward sums the gradient of the global statistics over ranks, so a
  rank's gradient w.r.t. its own logits is W times the single-process gradient for that slice (the local
  voxel mean has the same factor W); DDP's averaging of parameter gradients divides that W out again,
- so parameter gradients after DDP equal the single-process gradients.
"""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from ddp_ranks import WORLD, on_ranks, share

from unifocal.losses import (
    CrossEntropyLoss,
    DiceCELoss,
    DiceLoss,
    ExponentialLogarithmicLoss,
    HybridFocalLoss,
    LogCoshDiceLoss,
    UnifiedFocalLoss,
)

B = 4
IGNORE = 9

LOSSES = {
    "unified_batch": lambda: UnifiedFocalLoss(batch_dice=True, ddp=True),
    "symmetric_batch_per_class": lambda: UnifiedFocalLoss(batch_dice=True, asymmetric=False, gamma=(0.2, 0.5, 0.7),
                                                          ddp=True),
    "multilabel_batch": lambda: UnifiedFocalLoss(batch_dice=True, multilabel=True, ddp=True),
    "hybrid_batch": lambda: HybridFocalLoss(batch_dice=True, ddp=True),
    "unified_per_sample": lambda: UnifiedFocalLoss(ddp=True),
    "dice_batch": lambda: DiceLoss(batch_dice=True, include_background=False, smooth=1e-5, ddp=True),
    "masked_unified_batch": lambda: UnifiedFocalLoss(batch_dice=True, ddp=True),
    "ignore_unified_batch": lambda: UnifiedFocalLoss(batch_dice=True, ignore_index=IGNORE, ddp=True),
    "ignore_weighted_ce": lambda: CrossEntropyLoss(class_weight=(0.2, 1.0, 3.0), ignore_index=IGNORE, ddp=True),
    "masked_multilabel_dice_ce": lambda: DiceCELoss(batch_dice=True, multilabel=True, ddp=True),
    # the squared denominator is a batch sum like TP; the frequency weights count the global batch's voxels
    "squared_dice_batch": lambda: DiceLoss(squared=True, batch_dice=True, ddp=True),
    "squared_log_cosh_dice_batch": lambda: LogCoshDiceLoss(squared=True, batch_dice=True, ddp=True),
    "masked_exp_log": lambda: ExponentialLogarithmicLoss(ddp=True),
}
BATCH_LEVEL = ("dice_batch", "squared_dice_batch", "squared_log_cosh_dice_batch")  # every rank holds the value


def make_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(B, 3, 6, 5, generator=g, dtype=torch.float64) * 2,
        "labels": torch.randint(0, 3, (B, 1, 6, 5), generator=g),
        "regions": torch.rand(B, 3, 6, 5, generator=g) > 0.6,
        "image": torch.randn(B, 1, 6, 5, generator=g, dtype=torch.float64),
        # uneven between the ranks' halves: rank 0 keeps most voxels, rank 1 few
        "mask": torch.rand(B, 1, 6, 5, generator=g) < torch.tensor([0.9, 0.8, 0.3, 0.2]).view(B, 1, 1, 1),
    }


def target_for(name, data):
    if "multilabel" in name:
        return data["regions"]
    if name.startswith("ignore"):
        return data["labels"].masked_fill(~data["mask"], IGNORE)
    return data["labels"]


def call(name, x, data, part=slice(None)):
    mask = data["mask"][part] if name.startswith("masked") else None
    return LOSSES[name]()(x, target_for(name, data)[part], mask=mask)


def conv_model():
    torch.manual_seed(0)
    return nn.Conv2d(1, 3, 3, padding=1).double()


def _worker(rank, world, data):
    part = share(rank, B, world)
    results = {}
    for name in LOSSES:
        x = data["logits"][part].clone().requires_grad_()
        value = call(name, x, data, part)
        value.backward()
        results[name] = (value.detach(), x.grad)
    # nnU-Net's batch Dice under DDP (its AllGatherGrad) on the same slice
    from nnunetv2.training.loss.dice import SoftDiceLoss
    from nnunetv2.utilities.helpers import softmax_helper_dim1

    x = data["logits"][part].clone().requires_grad_()
    value = SoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=True, do_bg=False, smooth=1e-5, ddp=True)(
        x, data["labels"][part]
    )
    value.backward()
    results["nnunet_dice_batch"] = (value.detach(), x.grad)
    # a DDP-wrapped model: parameter gradients are averaged over ranks
    model = nn.parallel.DistributedDataParallel(conv_model())
    loss = UnifiedFocalLoss(batch_dice=True, ddp=True)(model(data["image"][part]), data["labels"][part])
    loss.backward()
    results["ddp_model"] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    dist.barrier()
    if rank == 0:  # validation or logging on one rank: without ddp=True no collective, so no wait for rank 1
        alone = UnifiedFocalLoss(batch_dice=True)(data["logits"][part], data["labels"][part], mask=data["mask"][part])
        results["alone"] = alone
    return results


@pytest.fixture(scope="module")
def rank_results():
    data = make_data()
    return data, on_ranks(_worker, data)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rank_average_equals_single_process(rank_results, name):
    data, ranks = rank_results
    single = call(name, data["logits"], data)
    torch.testing.assert_close(sum(r[name][0] for r in ranks) / WORLD, single, rtol=1e-12, atol=1e-14)
    if name in BATCH_LEVEL:  # purely batch-level: every rank holds the global value itself
        for result in ranks:
            torch.testing.assert_close(result[name][0], single, rtol=1e-12, atol=1e-14)
    else:  # the local focal / per-sample parts differ between ranks
        assert not torch.isclose(ranks[0][name][0], ranks[1][name][0])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rank_gradient_over_world_size_equals_single_process_gradient(rank_results, name):
    data, ranks = rank_results
    x = data["logits"].clone().requires_grad_()
    call(name, x, data).backward()
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result[name][1] / WORLD, x.grad[share(rank, B)], rtol=1e-10, atol=1e-13)


def test_batch_dice_matches_nnunet_under_ddp(rank_results):
    data, ranks = rank_results
    for result in ranks:
        ours_value, ours_grad = result["dice_batch"]
        theirs_value, theirs_grad = result["nnunet_dice_batch"]
        torch.testing.assert_close(ours_value, 1 + theirs_value.double(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=1e-7)


def test_ddp_parameter_gradients_equal_single_process(rank_results):
    data, ranks = rank_results
    model = conv_model()
    single = UnifiedFocalLoss(batch_dice=True)(model(data["image"]), data["labels"])
    single.backward()
    torch.testing.assert_close(sum(r["ddp_model"][0] for r in ranks) / WORLD, single.detach(), rtol=1e-12, atol=1e-14)
    for result in ranks:
        for grad, param in zip(result["ddp_model"][1], model.parameters()):
            torch.testing.assert_close(grad, param.grad, rtol=1e-10, atol=1e-13)


def test_a_loss_computed_on_one_rank_alone_runs_no_collective(rank_results):
    """Rank 0 computes a batch-Dice loss built without ddp=True while rank 1 has left: it returns (no hang,
    no collective timeout) the loss of rank 0's own samples."""
    data, ranks = rank_results
    part = slice(0, B // WORLD)
    expected = UnifiedFocalLoss(batch_dice=True)(data["logits"][part], data["labels"][part], mask=data["mask"][part])
    torch.testing.assert_close(ranks[0]["alone"], expected, rtol=0, atol=0)
    assert "alone" not in ranks[1]


def test_masked_ranks_count_different_voxels(rank_results):
    """The masks give the two halves very different voxel counts, so a local voxel mean would differ from
    the global one: the equalities above for the masked and ignore cases rely on the global count."""
    data, _ = rank_results
    counts = data["mask"].flatten(1).sum(1)
    assert counts[: B // WORLD].sum() > 2 * counts[B // WORLD :].sum()
