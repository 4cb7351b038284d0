"""Rare-class gamma assignment: counting and the documented rule, with hand-computed numbers."""

import math

import numpy as np
import pytest

from unifocal.gamma import (
    GAMMA_MAX,
    GAMMA_MIN,
    count_label_values,
    count_labels,
    count_regions,
    gamma_from_imbalance,
    propose_gamma,
)
from unifocal.losses import UnifiedFocalLoss


def test_count_labels_streams_and_skips_ignore_and_padding():
    cases = [np.array([[0, 0, 1], [2, 9, -1]]), np.array([0, 1, 1, 9])]
    counts = count_labels(iter(cases), num_classes=3, ignore_label=9)
    np.testing.assert_array_equal(counts, [3, 3, 1])


def test_count_labels_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        count_labels([np.array([0, 3])], num_classes=3)


def test_count_label_values_counts_only_what_occurs():
    # Fortran order and a huge stray value (np.unique path) next to small ones (np.bincount path).
    cases = [np.asfortranarray(np.array([[0, 0, 1], [2, 9, -1]])), np.array([0, 1, 2_000_000_000, 9]),
             np.array([-1, 9])]
    found = count_label_values(iter(cases), ignore_label=9)
    assert found.counts == {0: 3, 1: 2, 2: 1, 2_000_000_000: 1}
    assert found.values == [0, 1, 2, 2_000_000_000]
    assert found.first_seen == {0: 0, 1: 0, 2: 0, 2_000_000_000: 1} and found.num_maps == 3
    found = count_label_values([np.array([3, 0, 3], np.uint8)])
    np.testing.assert_array_equal(found.dense(5), [1, 0, 0, 2, 0])


def test_count_regions_nnunet_style():
    # BraTS-style regions: whole tumour (1,2,3), tumour core (2,3), enhancing (3)
    labels = [np.array([0, 1, 2, 3, 3, 0, 0, 0])]
    counts, total = count_regions(labels, [(1, 2, 3), (2, 3), (3,)])
    np.testing.assert_array_equal(counts, [4, 3, 2])
    assert total == 8


@pytest.mark.parametrize(
    "ratio, expected",
    [
        (1.0, 0.0),  # balanced: no focal modification
        (0.5, 0.0),
        (10.0, 0.5),  # one decade: the paper's default
        (100.0, 2 / 3),
        (1000.0, 0.75),
        (1.1, GAMMA_MIN),  # log10(1.1)/(1+log10(1.1)) = 0.0398 -> clipped up
        (1e12, GAMMA_MAX),  # 12/13 = 0.923 -> clipped down
        (math.inf, GAMMA_MAX),
    ],
)
def test_gamma_from_imbalance(ratio, expected):
    assert gamma_from_imbalance(ratio) == pytest.approx(expected, abs=1e-12)


def test_frequency_rule_kits_like():
    # background 97 %, kidney 2.5 %, tumour 0.5 % (counts need not be normalised)
    proposal = propose_gamma([970, 25, 5])
    assert proposal.rare_classes == (1, 2) and proposal.common_classes == (0,)
    level0 = math.log10(0.97 / 0.03)  # background vs all other voxels
    level1 = math.log10(0.97 / 0.025)
    level2 = math.log10(0.97 / 0.005)
    expected = [level / (1 + level) for level in (level0, level1, level2)]
    assert proposal.gamma == pytest.approx(expected, abs=1e-12)
    assert proposal.gamma[2] > proposal.gamma[1]  # rarer class, larger gamma
    assert proposal.frequencies == pytest.approx((0.97, 0.025, 0.005))


def test_frequency_rule_large_foreground_class_is_common():
    # a 35 % organ in a 3-class problem is above the uniform share 1/3: common, and not dominating (gamma 0)
    proposal = propose_gamma([0.6, 0.35, 0.05])
    assert proposal.rare_classes == (2,) and proposal.common_classes == (0, 1)
    assert proposal.gamma[1] == 0.0
    level = math.log10(0.6 / 0.05)
    assert proposal.gamma[2] == pytest.approx(level / (1 + level))


def test_paper_rule_is_one_setting():
    proposal = propose_gamma([0.9, 0.07, 0.03], rule="paper")
    assert proposal.gamma == (0.5, 0.5, 0.5)
    assert proposal.rare_classes == (1, 2) and proposal.common_classes == (0,)


def test_multilabel_regions():
    proposal = propose_gamma([0.05, 0.01], multilabel=True)
    levels = [math.log10(0.95 / 0.05), math.log10(0.99 / 0.01)]
    assert proposal.gamma == pytest.approx([lv / (1 + lv) for lv in levels])
    assert proposal.loss_kwargs() == {"gamma": list(proposal.gamma), "multilabel": True}


def test_many_classes():
    # The rule is linear in the class count (it used to compare every class with the list of rare ones).
    counts = np.ones(20_000)
    counts[0] = 10**6
    proposal = propose_gamma(counts)
    assert proposal.rare_classes == tuple(range(1, 20_000)) and proposal.common_classes == (0,)
    assert proposal.gamma[1] == pytest.approx(gamma_from_imbalance(10**6))


def test_absent_class_gets_the_largest_gamma():
    assert propose_gamma([100, 10, 0]).gamma[2] == GAMMA_MAX


@pytest.mark.parametrize("bad", [[1.0], [0.5, -0.1], [0.0, 0.0], [float("nan"), 1.0]])
def test_bad_frequencies(bad):
    with pytest.raises(ValueError):
        propose_gamma(bad)


def test_unknown_rule():
    with pytest.raises(ValueError, match="rule"):
        propose_gamma([0.9, 0.1], rule="magic")


def test_proposal_feeds_the_loss():
    import torch

    proposal = propose_gamma([970, 25, 5])
    loss = UnifiedFocalLoss(**proposal.loss_kwargs())
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    value = loss(logits, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
