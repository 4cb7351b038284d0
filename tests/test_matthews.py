"""MatthewsCorrelationLoss (Abhishek & Hamarneh 2021) against an independent float64 formula, scikit-learn's
MCC on hard predictions, gradcheck, and two gloo ranks against one process."""

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import matthews_corrcoef

from ddp_ranks import WORLD, loss_on_ranks, share
from unifocal.losses import MatthewsCorrelationLoss, matthews_correlation_loss


def reference(prob, onehot, counted, smooth, batch_dice):
    """1 - MCC per class from the counts, averaged over classes: (B,) values, numpy float64 loops."""
    prob, onehot, counted = (np.asarray(a, dtype=np.float64) for a in (prob, onehot, counted))
    groups = [range(len(prob))] if batch_dice else [[b] for b in range(len(prob))]
    values = []
    for samples in groups:
        per_class = []
        for c in range(prob.shape[1]):
            p, y, m = (np.concatenate([a[b, c if a is not counted else 0].ravel() for b in samples])
                       for a in (prob, onehot, counted))
            tp, fp = np.sum(m * y * p), np.sum(m * (1 - y) * p)
            fn, tn = np.sum(m * y * (1 - p)), np.sum(m * (1 - y) * (1 - p))
            spread = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            per_class.append(1 - (tp * tn - fp * fn + smooth) / (spread + smooth))
        values += [np.mean(per_class)] * len(samples)
    return torch.tensor(values, dtype=torch.float64)


def case(seed=0, classes=3, batch=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, 6, 5, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (batch, 1, 6, 5), generator=g)
    mask = torch.rand(batch, 1, 6, 5, generator=g) < 0.7
    return logits, labels, mask


@pytest.mark.parametrize("batch_dice", [False, True])
def test_label_map_with_ignore_index_equals_the_float64_formula(batch_dice):
    logits, labels, mask = case()
    target = labels.masked_fill(~mask, 255)
    onehot = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1)
    expected = reference(logits.softmax(1), onehot, mask, 1.0, batch_dice)
    value = MatthewsCorrelationLoss(batch_dice=batch_dice, ignore_index=255, reduction="none")(logits, target)
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-14)
    mean = matthews_correlation_loss(logits, target, batch_dice=batch_dice, ignore_index=255)
    torch.testing.assert_close(mean, expected.mean(), rtol=1e-12, atol=1e-14)


def test_regions_with_a_mask_without_channel_0_equal_the_float64_formula():
    logits, labels, mask = case(seed=1)
    regions = torch.cat([labels > 0, labels == 2], 1)
    loss = MatthewsCorrelationLoss(multilabel=True, include_background=False, smooth=0.5, reduction="none")
    expected = reference(logits[:, 1:2].sigmoid(), regions[:, 1:2], mask, 0.5, False)
    torch.testing.assert_close(loss(logits[:, :2], regions, mask=mask), expected, rtol=1e-12, atol=1e-14)


def test_hard_binary_predictions_give_scikit_learns_mcc():
    g = torch.Generator().manual_seed(2)
    truth, predicted = torch.rand(1, 1, 40, 30, generator=g) < 0.2, torch.rand(1, 1, 40, 30, generator=g) < 0.3
    prob = torch.cat([~predicted, predicted], 1).double()  # probabilities exactly 0 or 1
    value = MatthewsCorrelationLoss(smooth=1e-9, from_logits=False)(prob, truth.long())
    expected = matthews_corrcoef(truth.ravel().numpy(), predicted.ravel().numpy())
    assert 1 - value.item() == pytest.approx(expected, rel=1e-9)  # both classes have the same MCC
    assert MatthewsCorrelationLoss(from_logits=False)(torch.cat([~truth, truth], 1).double(), truth.long()) == 0


def test_gradients_match_finite_differences():
    logits, labels, mask = case(seed=3, batch=2)
    for options in ({}, {"batch_dice": True}, {"multilabel": True}):
        target = torch.nn.functional.one_hot(labels[:, 0], 3).movedim(-1, 1) if options.get("multilabel") else labels
        x = logits.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda t: MatthewsCorrelationLoss(**options)(t, target, mask=mask), (x,))


def test_two_ranks_equal_one_process():
    logits, labels, mask = case(seed=4)
    settings = ({"batch_dice": False}, {"batch_dice": True})
    ranks = loss_on_ranks([functools.partial(MatthewsCorrelationLoss, ddp=True, **s) for s in settings],
                          logits, labels, mask)
    for i, options in enumerate(settings):
        x = logits.clone().requires_grad_()
        single = MatthewsCorrelationLoss(**options)(x, labels, mask=mask)
        single.backward()
        values = [rank[i][0] for rank in ranks]
        torch.testing.assert_close(sum(values) / WORLD, single.detach(), rtol=1e-12, atol=1e-14)
        if options["batch_dice"]:  # batch-level: every rank holds the global value itself
            assert all(torch.isclose(value, single) for value in values)
        for rank, results in enumerate(ranks):
            torch.testing.assert_close(results[i][1] / WORLD, x.grad[share(rank, len(logits))], rtol=1e-10,
                                       atol=1e-13)


def test_the_guide_shows_this_loss_as_it_is():
    root = Path(__file__).resolve().parents[1]
    source = (root / "unifocal" / "losses" / "matthews.py").read_text()
    assert f"```python\n{source.rstrip()}\n```" in (root / "docs" / "losses.md").read_text()
