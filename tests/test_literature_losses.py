"""Generalized Dice, sensitivity-specificity, log-cosh Dice, Combo, Dice+CE, exponential logarithmic,
distance-penalised CE, shape-aware, boundary and Hausdorff-DT losses: hand-computed values, agreement
with MONAI, the Combo special case of the Unified Focal loss, gradients and edge cases."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

import unifocal.losses as L
from unifocal.losses._base import functional

LOSSES = {
    "GeneralizedDiceLoss": L.GeneralizedDiceLoss,
    "SensitivitySpecificityLoss": L.SensitivitySpecificityLoss,
    "LogCoshDiceLoss": L.LogCoshDiceLoss,
    "ComboLoss": L.ComboLoss,
    "DiceCELoss": L.DiceCELoss,
    "ExponentialLogarithmicLoss": L.ExponentialLogarithmicLoss,
    "DistancePenalizedCELoss": L.DistancePenalizedCELoss,
    "ShapeAwareLoss": L.ShapeAwareLoss,
    "BoundaryLoss": L.BoundaryLoss,
    "HausdorffDTLoss": L.HausdorffDTLoss,
}
NAMES = sorted(LOSSES)


def probs(foreground):
    """(1, 2, 1, W) float64 probabilities [1 - p, p] of a binary line image."""
    p = torch.tensor(foreground, dtype=torch.float64).view(1, 1, 1, -1)
    return torch.cat([1 - p, p], 1)


def labels(values):
    return torch.tensor(values).view(1, 1, 1, -1)


def close(value, expected, tol=1e-12):
    assert value.item() == pytest.approx(expected, rel=tol, abs=tol)


# --- hand-computed values ----------------------------------------------------------------------------------------
# Shared example: labels y = [0, 0, 0, 1], foreground probabilities p1 = [0.1, 0.4, 0.2, 0.6], p0 = 1 - p1.
#   class 0: TP = 0.9 + 0.6 + 0.8 = 2.3, FN = 0.1 + 0.4 + 0.2 = 0.7, FP = 0.4
#   class 1: TP = 0.6,                   FN = 0.4,                   FP = 0.1 + 0.4 + 0.2 = 0.7
Y4 = labels([0, 0, 0, 1])
P4 = probs([0.1, 0.4, 0.2, 0.6])
DICE0 = (2 * 2.3 + 1) / (2 * 2.3 + 0.4 + 0.7 + 1)  # 5.6 / 6.7 with smooth 1
DICE1 = (2 * 0.6 + 1) / (2 * 0.6 + 0.7 + 0.4 + 1)  # 2.2 / 3.3


def test_generalized_dice_hand_computed():
    # Volumes V0 = 3, V1 = 1: weights 1/9 and 1, normalised 0.1 and 0.9.
    overlap = 0.1 * 2.3 + 0.9 * 0.6  # 0.77
    errors = 0.1 * (0.4 + 0.7) + 0.9 * (0.7 + 0.4)  # 1.1
    expected = 1 - (2 * overlap + 1) / (2 * overlap + errors + 1)  # 1.1 / 3.64
    close(L.GeneralizedDiceLoss(from_logits=False)(P4, Y4), expected)
    assert expected == pytest.approx(1.1 / 3.64)


def test_generalized_dice_absent_class_gets_rarest_weight():
    # Three classes, class 2 absent from the target: its weight is that of class 1 (the rarest present):
    # raw weights 1/9, 1, 1 -> 1/19, 9/19, 9/19.
    p = torch.tensor([[0.7, 0.5, 0.6, 0.1], [0.1, 0.3, 0.2, 0.8], [0.2, 0.2, 0.2, 0.1]], dtype=torch.float64)
    x = p.view(1, 3, 1, 4)
    # class 0: TP = 1.8, FP = 0.1, FN = 0.3 + 0.5 + 0.4 = 1.2 | class 1: TP = 0.8, FP = 0.6, FN = 0.2
    # class 2: TP = 0, FP = 0.7, FN = 0
    w = [1 / 19, 9 / 19, 9 / 19]
    overlap = w[0] * 1.8 + w[1] * 0.8  # 9 / 19
    errors = w[0] * 1.3 + w[1] * 0.8 + w[2] * 0.7  # 14.8 / 19
    expected = errors / (2 * overlap + errors + 1)
    assert expected == pytest.approx(14.8 / 51.8)
    close(L.GeneralizedDiceLoss(from_logits=False)(x, Y4), expected)


def test_sensitivity_specificity_hand_computed():
    r, s = 0.05, 1e-5
    # class 1: error on its voxel (1 - 0.6)^2 = 0.16; on the others 0.01 + 0.16 + 0.04 = 0.21 over 3 voxels
    loss1 = r * 0.16 / (1 + s) + (1 - r) * 0.21 / (3 + s)
    # class 0: error on its voxels 0.01 + 0.16 + 0.04 = 0.21; on the other (0 - 0.4)^2 = 0.16
    loss0 = r * 0.21 / (3 + s) + (1 - r) * 0.16 / (1 + s)
    close(L.SensitivitySpecificityLoss(from_logits=False)(P4, Y4), (loss0 + loss1) / 2)


def test_log_cosh_dice_hand_computed():
    dice_loss = ((1 - DICE0) + (1 - DICE1)) / 2
    close(L.LogCoshDiceLoss(from_logits=False)(P4, Y4), math.log(math.cosh(dice_loss)))


def test_combo_hand_computed():
    alpha, beta = 0.4, 0.7
    # background voxels weighted 1 - beta, the foreground voxel beta; mean over the 4 voxels
    ce = ((1 - beta) * -(math.log(0.9) + math.log(0.6) + math.log(0.8)) + beta * -math.log(0.6)) / 4
    expected = alpha * ce - (1 - alpha) * (DICE0 + DICE1) / 2
    close(L.ComboLoss(ce_weight=alpha, beta=beta, from_logits=False)(P4, Y4), expected)
    # Taghanaki et al.'s form: the Dice of the foreground only
    close(L.ComboLoss(ce_weight=alpha, beta=beta, include_background=False, from_logits=False)(P4, Y4),
          alpha * ce - (1 - alpha) * DICE1)
    # multilabel, channels [p0, p1] against [y == 0, y == 1]: include_background=False leaves channel 0 out, as
    # for every loss; channel 1's binary Dice averages its own (DICE1) and its complement's (DICE0), and the cross
    # entropy stays the mean BCE of both channels (channel 0: beta on its three positives, 1 - beta on voxel 3)
    ce0 = (beta * -(math.log(0.9) + math.log(0.6) + math.log(0.8)) + (1 - beta) * -math.log(0.6)) / 4
    regions = torch.cat([Y4 == 0, Y4 == 1], 1)
    close(L.ComboLoss(ce_weight=alpha, beta=beta, include_background=False, multilabel=True, from_logits=False)(
        P4, regions), alpha * (ce + ce0) / 2 - (1 - alpha) * (DICE0 + DICE1) / 2)
    with pytest.raises(ValueError, match="include_background=False leaves no channel"):
        L.ComboLoss(include_background=False, multilabel=True, from_logits=False)(P4[:, 1:], Y4.bool())


def test_dice_ce_hand_computed():
    ce = -(math.log(0.9) + math.log(0.6) + math.log(0.8) + math.log(0.6)) / 4
    dice = ((1 - DICE0) + (1 - DICE1)) / 2
    close(L.DiceCELoss(dice_weight=0.3, ce_weight=2.0, from_logits=False)(P4, Y4), 0.3 * dice + 2.0 * ce)


def test_exponential_logarithmic_hand_computed():
    g = 0.3
    dice = ((-math.log(DICE0)) ** g + (-math.log(DICE1)) ** g) / 2
    # class frequencies f0 = 3, f1 = 1 of 4 voxels: w0 = (4/3)^0.5, w1 = (4/1)^0.5 = 2
    w0, w1 = math.sqrt(4 / 3), 2.0
    ce = (w0 * sum((-math.log(q)) ** g for q in (0.9, 0.6, 0.8)) + w1 * (-math.log(0.6)) ** g) / 4
    close(L.ExponentialLogarithmicLoss(from_logits=False)(P4, Y4), 0.8 * dice + 0.2 * ce)
    # fixed class weights replace the frequency weights
    ce_fixed = (1.0 * sum((-math.log(q)) ** g for q in (0.9, 0.6, 0.8)) + 5.0 * (-math.log(0.6)) ** g) / 4
    loss = L.ExponentialLogarithmicLoss(class_weight=[1.0, 5.0], from_logits=False)(P4, Y4)
    close(loss, 0.8 * dice + 0.2 * ce_fixed)


@pytest.mark.parametrize("options", [{}, {"class_weight": [1.0, 2.0, 3.0, 4.0]}, {"gamma_ce": 1.0}])
def test_exponential_logarithmic_label_map_equals_one_hot_with_mask(options):
    # a label map takes each voxel's own class only (one power per voxel); the one-hot target the dense form
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    target = torch.randint(0, 4, (2, 1, 6, 5), generator=generator)
    target[0, 0, 0, :3] = 255
    onehot = F.one_hot(target.clamp(max=3)[:, 0], 4).movedim(-1, 1).double()
    from_labels = L.ExponentialLogarithmicLoss(ignore_index=255, **options)(logits, target)
    dense = L.ExponentialLogarithmicLoss(**options)(logits, onehot, mask=(target != 255).double())
    grads = [torch.autograd.grad(value, logits)[0] for value in (from_labels, dense)]
    torch.testing.assert_close(from_labels, dense, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-14)
    assert 0.1 < float(from_labels.detach()) < 10
    assert grads[0][0, :, 0, :3].abs().max() == 0  # ignored voxels: no gradient


@pytest.mark.parametrize("cls, options", [(L.SensitivitySpecificityLoss, {}), (L.DiceLoss, {"squared": True}),
                                          (L.HausdorffDTLoss, {}), (L.BoundaryLoss, {})],
                         ids=lambda v: getattr(v, "__name__", ""))
def test_channel_losses_in_region_mode_read_the_sigmoid_channels_only(cls, options, monkeypatch):
    # One region channel x equals the exclusive two-class problem with logits [0, x] without its background;
    # the region path reads sigmoid(x) and the target directly, no complement-first (2R-class) tensor.
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 1, 5, 6, dtype=torch.float64, generator=generator)
    target = torch.rand(2, 1, 5, 6, generator=generator) > 0.6
    mask = torch.rand(2, 1, 5, 6, generator=generator) > 0.2
    exclusive = cls(**options) if cls is L.BoundaryLoss else cls(include_background=False, **options)
    two_classes = torch.cat([torch.zeros_like(logits), logits], 1)
    expected = [exclusive(two_classes, target.long(), mask=m) for m in (None, mask)]
    import unifocal.losses._inputs as inputs_module

    def fail(*args):
        raise AssertionError("a complement-first tensor was formed")

    monkeypatch.setattr(inputs_module, "complement_first", fail)
    for m, value in zip((None, mask), expected):
        region_value = cls(multilabel=True, **options)(logits, target, mask=m)
        torch.testing.assert_close(region_value, value, rtol=1e-10, atol=1e-12)
    assert all(0 < float(value) < 5 for value in expected)


# Line image for the distance-based losses: labels [0, 0, 0, 1, 1, 1].
#   background region {0,1,2}: distance to the nearest other label 3, 2, 1; foreground {3,4,5}: 1, 2, 3
#   distance of the background voxels to the foreground: 3, 2, 1
Y6 = labels([0, 0, 0, 1, 1, 1])
FG6 = [0.1, 0.2, 0.7, 0.9, 0.6, 0.8]
P6 = probs(FG6)
TRUE_PROB6 = [0.9, 0.8, 0.3, 0.9, 0.6, 0.8]  # probability of each voxel's own label


def weighted_ce(weights, prob=TRUE_PROB6):
    return sum(w * -math.log(q) for w, q in zip(weights, prob)) / len(prob)


def test_shape_aware_hand_computed():
    close(L.ShapeAwareLoss(from_logits=False)(P6, Y6), weighted_ce([1 + d for d in (3, 2, 1, 1, 2, 3)]))
    # spacing 2.0 along the line doubles the distances; the singleton axis's spacing does not matter
    expected = weighted_ce([1 + 2 * d for d in (3, 2, 1, 1, 2, 3)])
    close(L.ShapeAwareLoss(spacing=(5.0, 2.0), from_logits=False)(P6, Y6), expected)


def test_distance_penalized_ce_hand_computed():
    # per region d in {1, 2, 3}: D = 1 - (d - 1) / (3 - 1) = 1, 0.5, 0; weight 1 + D
    weights = [1 + (1 - (d - 1) / 2) for d in (3, 2, 1, 1, 2, 3)]
    assert weights == [1.0, 1.5, 2.0, 2.0, 1.5, 1.0]
    close(L.DistancePenalizedCELoss(from_logits=False)(P6, Y6), weighted_ce(weights))


def test_distance_penalized_ce_thin_structure_is_all_contour():
    # A one-voxel structure: D = 1 on it (weight 2); the background region {0,1,3,4} has d = 2, 1, 1, 2 -> D = 0, 1, 1, 0
    y = labels([0, 0, 1, 0, 0])
    x = probs([0.2, 0.3, 0.6, 0.1, 0.4])
    own = [0.8, 0.7, 0.6, 0.9, 0.6]
    expected = sum(w * -math.log(q) for w, q in zip([1, 2, 2, 2, 1], own)) / 5
    close(L.DistancePenalizedCELoss(from_logits=False)(x, y), expected)


def test_boundary_hand_computed():
    # signed distance of the foreground: outside 3, 2, 1; inside -(d - 1) = 0, -1, -2
    phi = [3, 2, 1, 0, -1, -2]
    expected = sum(p * f for p, f in zip(FG6, phi)) / 6
    close(L.BoundaryLoss(from_logits=False)(P6, Y6), expected)


def test_hausdorff_dt_hand_computed():
    # target contour distances (inside + outside): 3, 2, 1, 1, 2, 3
    # prediction p1 > 0.5 at {2,3,4,5}: inside 1, 2, 3, 4 and outside (voxels 0, 1) 2, 1
    d_target = [3, 2, 1, 1, 2, 3]
    d_pred = [2, 1, 1, 2, 3, 4]
    y = [0, 0, 0, 1, 1, 1]
    fg = sum((p - t) ** 2 * (dp**2 + dt**2) for p, t, dp, dt in zip(FG6, y, d_pred, d_target)) / 6
    # the background channel has the same squared errors and, here, the same two distance maps
    close(L.HausdorffDTLoss(from_logits=False)(P6, Y6), fg)
    close(L.HausdorffDTLoss(include_background=False, from_logits=False)(P6, Y6), fg)
    alpha = 1.5
    fg_15 = sum((p - t) ** 2 * (dp**alpha + dt**alpha) for p, t, dp, dt in zip(FG6, y, d_pred, d_target)) / 6
    close(L.HausdorffDTLoss(alpha=alpha, from_logits=False)(P6, Y6), fg_15)


# --- peer agreement with MONAI -------------------------------------------------------------------------------


def random_case(shape, classes=3, seed=0, batch=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, classes, *shape, generator=g, dtype=dtype) * 2
    y = torch.randint(0, classes, (batch, 1, *shape), generator=g)
    return x, y


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
@pytest.mark.parametrize("include_background", [True, False])
def test_generalized_dice_matches_monai(shape, include_background):
    monai = pytest.importorskip("monai.losses")
    x, y = random_case(shape)
    ours = L.GeneralizedDiceLoss(smooth=0.5, include_background=include_background, reduction="none")(x, y)
    start = 0 if include_background else 1
    for b in range(x.shape[0]):
        volumes = F.one_hot(y[b, 0], 3).flatten(0, -2).sum(0)[start:].double()
        scale = float((1 / volumes**2).sum())  # all classes present: no guard involved
        ref = monai.GeneralizedDiceLoss(include_background=include_background, softmax=True, to_onehot_y=True,
                                        smooth_nr=0.5 * scale, smooth_dr=0.5 * scale)(x[b : b + 1], y[b : b + 1])
        assert ours[b].item() == pytest.approx(ref.item(), rel=1e-7)
    # batch_dice: one weight vector for the batch, as MONAI's batch=True
    volumes = F.one_hot(y[:, 0], 3).flatten(0, -2).sum(0)[start:].double()
    scale = float((1 / volumes**2).sum())
    ref = monai.GeneralizedDiceLoss(include_background=include_background, softmax=True, to_onehot_y=True,
                                    smooth_nr=0.5 * scale, smooth_dr=0.5 * scale, batch=True)(x, y)
    ours = L.GeneralizedDiceLoss(smooth=0.5, include_background=include_background, batch_dice=True)(x, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-7)


def test_generalized_dice_absent_class_matches_monai_guard():
    monai = pytest.importorskip("monai.losses")
    x, y = random_case((8, 8), classes=4, seed=3, batch=1)
    y = y.clamp_max(2)  # class 3 absent
    volumes = F.one_hot(y[0, 0], 4).flatten(0, -2).sum(0).double()
    raw = torch.where(volumes > 0, 1 / volumes.clamp_min(1) ** 2, (1 / volumes[volumes > 0] ** 2).max())
    scale = float(raw.sum())
    ref = monai.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, smooth_nr=scale, smooth_dr=scale)(x, y)
    assert L.GeneralizedDiceLoss()(x, y).item() == pytest.approx(ref.item(), rel=1e-7)


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
def test_dice_ce_matches_monai(shape):
    monai = pytest.importorskip("monai.losses")
    x, y = random_case(shape)
    for include_background, batch in [(True, False), (False, True)]:
        ref = monai.DiceCELoss(include_background=include_background, softmax=True, to_onehot_y=True, smooth_nr=1.0,
                               smooth_dr=1.0, batch=batch, lambda_dice=0.7, lambda_ce=1.3)(x, y)
        ours = L.DiceCELoss(dice_weight=0.7, ce_weight=1.3, include_background=include_background, batch_dice=batch)(x, y)
        assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    # a single sigmoid channel: binary cross entropy
    x1, y1 = x[:, :1], (y > 0).double()
    ref = monai.DiceCELoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)(x1, y1)
    assert L.DiceCELoss(multilabel=True)(x1, y1).item() == pytest.approx(ref.item(), rel=1e-12)


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
@pytest.mark.parametrize("include_background", [True, False])
def test_hausdorff_dt_matches_monai(shape, include_background):
    monai = pytest.importorskip("monai.losses")
    x, y = random_case(shape)
    ref = monai.HausdorffDTLoss(alpha=1.7, include_background=include_background, softmax=True, to_onehot_y=True)(x, y)
    ours = L.HausdorffDTLoss(alpha=1.7, include_background=include_background)(x, y)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)  # MONAI's distance maps are float32
    onehot = F.one_hot(y[:, 0], 3).movedim(-1, 1).double()
    ref = monai.HausdorffDTLoss(sigmoid=True, include_background=True)(x, onehot)
    assert L.HausdorffDTLoss(multilabel=True)(x, onehot).item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("shape", [(9, 11), (5, 6, 7)])
def test_boundary_matches_monai(shape):
    monai = pytest.importorskip("monai.losses")
    x, y = random_case(shape)
    ref = monai.BoundaryLoss(include_background=False, softmax=True, to_onehot_y=True)(x, y)
    assert L.BoundaryLoss()(x, y).item() == pytest.approx(ref.item(), rel=1e-6)
    onehot = F.one_hot(y[:, 0], 3).movedim(-1, 1).double()
    ref = monai.BoundaryLoss(sigmoid=True, include_background=True)(x, onehot)
    assert L.BoundaryLoss(multilabel=True)(x, onehot).item() == pytest.approx(ref.item(), rel=1e-6)


# --- the Combo special case of the Unified Focal loss --------------------------------------------------------


@pytest.mark.parametrize("multilabel", [False, True])
def test_unified_focal_equals_combo_plus_half(multilabel):
    x, y = random_case((4, 5, 6), classes=3, seed=7)
    options = {}
    if multilabel:
        y = F.one_hot(y[:, 0], 3).movedim(-1, 1).double()
    else:
        y[:, :, 0, 0, :2] = 255
        options["ignore_index"] = 255
    for batch_dice in (False, True):
        for reduction in ("mean", "none"):
            combo = L.combo_loss(x, y, ce_weight=0.5, beta=0.5, smooth=1.0, batch_dice=batch_dice, multilabel=multilabel,
                                 reduction=reduction, **options)
            unified = L.unified_focal_loss(x, y, weight=0.5, gamma=0.0, delta=0.5, smooth=0.5, batch_dice=batch_dice,
                                           multilabel=multilabel, reduction=reduction, **options)
            torch.testing.assert_close(unified, combo + 0.5, rtol=0, atol=1e-14)


# --- gradients -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("multilabel", [False, True])
def test_gradcheck_float64(name, multilabel):
    x, y = random_case((4, 5), classes=3, seed=11, batch=2)
    if multilabel:
        y = F.one_hot(y[:, 0], 3).movedim(-1, 1).double()
    loss = LOSSES[name](multilabel=multilabel)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (x,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def edge_cases():
    """(x, y, options) of edge cases: empty foreground, absent classes, ignored voxels, fully ignored samples."""
    x, y = random_case((6, 7), classes=3, seed=5)
    background = torch.zeros_like(y)
    absent = y.clamp_max(1)
    ignored = y.clone()
    ignored[:, :, :3] = 9
    all_ignored = y.clone()
    all_ignored[0] = 9
    onehot_empty = torch.zeros(2, 3, 6, 7, dtype=torch.float64)
    return {
        "all-background": (x, background, {}),
        "absent-class": (x, absent, {}),
        "ignore": (x, ignored, {"ignore_index": 9}),
        "ignore-whole-sample": (x, all_ignored, {"ignore_index": 9}),
        "multilabel-empty": (x, onehot_empty, {"multilabel": True}),
    }


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", sorted(edge_cases()))
def test_edge_cases_finite_loss_and_gradient(name, case):
    x, y, options = edge_cases()[case]
    x = x.float().requires_grad_(True)
    for reduction in ("mean", "none"):
        value = LOSSES[name](reduction=reduction, **options)(x, y)
        assert torch.isfinite(value).all()
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_ignored_voxels_do_not_matter(name):
    x, y = random_case((6, 7), classes=3, seed=2)
    y[:, :, 2:4, 1:5] = 255
    ignored = (y == 255).expand_as(x)
    loss = LOSSES[name](ignore_index=255)
    x = x.requires_grad_(True)
    value = loss(x, y)
    (grad,) = torch.autograd.grad(value, x)
    assert (grad[ignored] == 0).all()
    changed = torch.where(ignored, torch.randn_like(x) * 5, x.detach())
    assert loss(changed, y).item() == pytest.approx(value.item(), rel=1e-12)


def test_documented_empty_foreground_behaviour():
    x, _ = random_case((6, 7), classes=3, seed=4)
    background = torch.zeros(2, 1, 6, 7, dtype=torch.long)
    x = x.requires_grad_(True)
    # boundary loss: no foreground contour -> 0 with zero gradient
    value = L.BoundaryLoss()(x, background)
    (grad,) = torch.autograd.grad(value, x)
    assert value.item() == 0 and (grad == 0).all()
    # distance-penalised and shape-aware CE: no contour -> plain cross entropy
    ce = L.CrossEntropyLoss()(x, background)
    close(L.DistancePenalizedCELoss()(x, background), ce.item())
    close(L.ShapeAwareLoss()(x, background), ce.item())
    # generalized Dice without the background: no class present -> equal weights, false positives still cost
    value = L.GeneralizedDiceLoss(include_background=False)(x, background)
    (grad,) = torch.autograd.grad(value, x)
    assert 0 < value.item() < 1 and grad.abs().sum() > 0


def test_multilabel_single_channel_equals_two_softmax_classes():
    # sigmoid(x) = softmax([0, x])[1]: a single multilabel channel is a two-class exclusive problem
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 1, 6, 5, generator=g, dtype=torch.float64) * 2
    y = (torch.rand(2, 1, 6, 5, generator=g) > 0.6).double()
    two = torch.cat([torch.zeros_like(x), x], 1)
    for name in ("ComboLoss", "DistancePenalizedCELoss", "ShapeAwareLoss", "BoundaryLoss", "HausdorffDTLoss"):
        multilabel = LOSSES[name](multilabel=True)(x, y)
        exclusive = LOSSES[name]()(two, y.long())
        assert multilabel.item() == pytest.approx(exclusive.item(), rel=1e-12), name


def test_bf16_autocast_cpu_gives_finite_gradients():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    image = torch.randn(2, 2, 8, 8)
    _, y = random_case((8, 8), classes=3, seed=6)
    for name in NAMES:
        conv.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = conv(image)
            assert logits.dtype == torch.bfloat16
            value = LOSSES[name]()(logits, y)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        value.backward()
        assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", NAMES)
def test_2d_equals_3d_with_singleton_depth(name):
    x, y = random_case((6, 7), classes=3, seed=8)
    for reduction in ("mean", "none"):
        flat = LOSSES[name](reduction=reduction)(x, y)
        deep = LOSSES[name](reduction=reduction)(x.unsqueeze(-1), y.unsqueeze(-1))
        torch.testing.assert_close(flat, deep, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reductions(name):
    x, y = random_case((5, 6), classes=3, seed=10)
    none = LOSSES[name](reduction="none")(x, y)
    assert none.shape == (2,)
    torch.testing.assert_close(LOSSES[name](reduction="sum")(x, y), none.sum())
    if name in ("GeneralizedDiceLoss", "SensitivitySpecificityLoss", "LogCoshDiceLoss"):
        # per-sample values, equal counts: the batch mean is their mean
        torch.testing.assert_close(LOSSES[name]()(x, y), none.mean())


def test_functional_forms_equal_modules():
    x, y = random_case((5, 6), classes=3, seed=12)
    pairs = [
        (L.generalized_dice_loss, L.GeneralizedDiceLoss, {"smooth": 0.3}),
        (L.sensitivity_specificity_loss, L.SensitivitySpecificityLoss, {"sensitivity_weight": 0.2}),
        (L.log_cosh_dice_loss, L.LogCoshDiceLoss, {"squared": True}),
        (L.combo_loss, L.ComboLoss, {"ce_weight": 0.3, "beta": 0.8}),
        (L.dice_ce_loss, L.DiceCELoss, {"class_weight": [0.5, 1.0, 2.0]}),
        (L.exponential_logarithmic_loss, L.ExponentialLogarithmicLoss, {"gamma_ce": 1.0}),
        (L.distance_penalized_ce_loss, L.DistancePenalizedCELoss, {"spacing": (1.0, 2.0)}),
        (L.shape_aware_loss, L.ShapeAwareLoss, {"spacing": (0.5, 1.0)}),
        (L.boundary_loss, L.BoundaryLoss, {"spacing": (2.0, 1.0)}),
        (L.hausdorff_dt_loss, L.HausdorffDTLoss, {"alpha": 1.0}),
    ]
    for functional_form, module, options in pairs:
        assert functional_form(x, y, **options).item() == module(**options)(x, y).item()


# --- argument validation -------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ("GeneralizedDiceLoss", {"smooth": 0}),
    ("GeneralizedDiceLoss", {"reduction": "max"}),
    ("SensitivitySpecificityLoss", {"sensitivity_weight": 1.5}),
    ("SensitivitySpecificityLoss", {"smooth": -1}),
    ("LogCoshDiceLoss", {"smooth": 0}),
    ("ComboLoss", {"ce_weight": -0.1}),
    ("ComboLoss", {"beta": 2}),
    ("DiceCELoss", {"dice_weight": -1}),
    ("DiceCELoss", {"class_weight": [1, -1, 1]}),
    ("ExponentialLogarithmicLoss", {"gamma_dice": 0}),
    ("ExponentialLogarithmicLoss", {"ce_weight": float("inf")}),
    ("ExponentialLogarithmicLoss", {"class_weight": []}),
    ("DistancePenalizedCELoss", {"spacing": (1.0, 0.0)}),
    ("ShapeAwareLoss", {"spacing": 1.0}),
    ("BoundaryLoss", {"spacing": (1.0, float("nan"))}),
    ("HausdorffDTLoss", {"alpha": 0}),
    ("HausdorffDTLoss", {"reduction": "avg"}),
]


@pytest.mark.parametrize("name, options", BAD_ARGUMENTS)
def test_bad_arguments_raise(name, options):
    with pytest.raises(ValueError):
        LOSSES[name](**options)


def test_bad_inputs_raise_at_forward():
    x, y = random_case((5, 6), classes=3)
    for name in ("DistancePenalizedCELoss", "ShapeAwareLoss", "BoundaryLoss", "HausdorffDTLoss"):
        with pytest.raises(ValueError, match="spacing has 3 values"):
            LOSSES[name](spacing=(1.0, 1.0, 1.0))(x, y)
    with pytest.raises(ValueError, match="class_weight has 2 values"):
        L.DiceCELoss(class_weight=[1.0, 2.0])(x, y)
    with pytest.raises(ValueError, match="target label values"):
        L.ComboLoss()(x, y + 3)
    with pytest.raises(ValueError, match="ce_weight"):
        L.combo_loss(x, y, ce_weight=3)
    with pytest.raises(ValueError, match="include_background=False leaves no channel"):
        L.GeneralizedDiceLoss(include_background=False, multilabel=True)(x[:, :1], (y > 0).double())


FUNCTIONALS = sorted(n for n in L.__all__ if n.endswith("_loss") and n != "deep_supervision_weights")


@pytest.mark.parametrize("name", FUNCTIONALS)
def test_every_functional_is_its_module(name):
    """Each functional form is generated from its class: same name (snake case), docstring, options in its
    signature, same value."""
    classes = [cls for cls in (getattr(L, n) for n in L.__all__) if isinstance(cls, type)]
    module = next(cls for cls in classes if getattr(L, name).__doc__ == cls.__doc__)
    assert getattr(L, name).__name__ == functional(module).__name__ == name
    parameters = inspect.signature(getattr(L, name)).parameters
    assert list(parameters) == ["input", "target", "mask", *inspect.signature(module).parameters]
    x, y = random_case((5, 4), seed=3)
    mask = torch.rand(2, 1, 5, 4, generator=torch.Generator().manual_seed(4)) > 0.3
    torch.testing.assert_close(getattr(L, name)(x, y, mask=mask, reduction="none"),
                               module(reduction="none")(x, y, mask=mask), rtol=0, atol=0)
