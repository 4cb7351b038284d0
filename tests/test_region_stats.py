"""Region (multilabel) statistics from the R sigmoid channels against the complement-first formulation.

With ``multilabel=True`` every loss sees 2R classes: per channel its complement (probability 1 - p, target
m - y) and the channel itself. :mod:`unifocal.losses._region_stats` forms their sums without the 2R-class
tensors; here the same sums are written out over the 2R classes in float64 (``_complement_first_tables``) and
both are compared, for the statistics and for every loss built on them (values and gradients).
"""

import pytest
import torch
import torch.nn.functional as F

import unifocal.losses as L
from unifocal.losses import _region_stats, _stats
from unifocal.losses._inputs import prepare


def _complement_first_tables(logits, target, mask, exponents, voxel_weight, cross_entropy):
    """The four (B, 2R) tables over explicit complement-first classes, by plain autograd."""
    r = logits.shape[1]
    counted = torch.ones_like(logits[:, :1]) if mask is None else mask
    prob = torch.cat([1 - torch.sigmoid(logits), torch.sigmoid(logits)], 1)
    log_prob = F.logsigmoid(torch.cat([-logits, logits], 1))
    classes = torch.cat([counted - target, target], 1)
    dims = tuple(range(2, logits.ndim))
    predicted = (prob * counted).sum(dims)
    true_positive = (classes * prob).sum(dims)
    actual = classes.sum(dims)
    ce = None
    if cross_entropy:
        gamma = torch.tensor(exponents * (2 * r if len(exponents) == 1 else 1), dtype=logits.dtype)
        gamma = gamma.view(1, -1, *([1] * len(dims)))
        weight = classes if voxel_weight is None else classes * voxel_weight
        ce = (weight * (1 - prob) ** gamma * -log_prob).sum(dims)
    return predicted, true_positive, actual, ce


def _inputs(shape=(2, 3, 5, 6, 4), soft=True, masked=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).requires_grad_()
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    if not soft:
        target = (target > 0.7).double()
    mask = (torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.25).double() if masked else None
    if mask is not None:
        target = target * mask
    return logits, target, mask


@pytest.mark.parametrize("exponents", [(0.0,), (0.5,), (0.5, 0.5, 0.5, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.5, 0.5, 0.5),
                                       (0.2, 0.7, 0.4, 0.3, 0.0, 2.0)])
@pytest.mark.parametrize("soft,masked,weighted", [(True, True, False), (False, False, False), (True, False, True)])
def test_tables_and_gradients_match_the_complement_first_sums(exponents, soft, masked, weighted):
    logits, target, mask = _inputs(soft=soft, masked=masked)
    weight = torch.rand((2, 1, 5, 6, 4), dtype=torch.float64) if weighted else None
    ours = _region_stats.region_statistics(logits, target, mask, exponents, weight, True)
    ref = _complement_first_tables(logits, target, mask, exponents, weight, True)
    coefficients = [torch.randn_like(t) for t in ref]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-10)
    assert not ours[2].requires_grad  # the actual volumes carry no gradient
    for skip in (None, 0, 1, 3):  # every subset of tables that a loss may read
        used = [i for i in (0, 1, 3) if i != skip]
        grad_ours = torch.autograd.grad(sum((ours[i] * coefficients[i]).sum() for i in used), logits,
                                        retain_graph=True)[0]
        grad_ref = torch.autograd.grad(sum((ref[i] * coefficients[i]).sum() for i in used), logits,
                                       retain_graph=True)[0]
        torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-10, atol=1e-12)


def test_hand_computed_sums_of_one_voxel_per_sample():
    logits = torch.tensor([[[0.0]], [[2.0]]], dtype=torch.float64)  # (B=2, R=1, S=1)
    target = torch.tensor([[[1.0]], [[0.0]]], dtype=torch.float64)
    predicted, tp, actual, ce = _region_stats.region_statistics(logits, target, None, (2.0,), None, True)
    p1 = 1 / (1 + torch.exp(torch.tensor(-2.0, dtype=torch.float64)))
    torch.testing.assert_close(predicted, torch.tensor([[0.5, 0.5], [1 - p1, p1]], dtype=torch.float64))
    torch.testing.assert_close(tp, torch.tensor([[0.0, 0.5], [1 - p1, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(actual, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    # sample 0: region true, -log 0.5 * 0.5^2; sample 1: complement true, -log(1 - p) * p^2
    expected = torch.tensor([[0.0, 0.25 * torch.log(torch.tensor(2.0)).item()],
                             [-torch.log(1 - p1).item() * p1.item() ** 2, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(ce, expected)


def test_gradcheck_of_the_fused_function():
    logits, target, mask = _inputs(shape=(2, 2, 3, 4), soft=True, masked=True)
    weight = torch.rand((2, 1, 3, 4), dtype=torch.float64)

    def tables(x):
        return _region_stats.region_statistics(x, target, mask, (0.5, 0.3, 0.0, 1.5), weight, True)

    assert torch.autograd.gradcheck(lambda x: [t for i, t in enumerate(tables(x)) if i != 2], (logits,))


def test_slabs_give_the_sums_of_one_pass(monkeypatch):
    logits, target, mask = _inputs(shape=(2, 3, 7, 9, 5))
    whole = _region_stats.region_statistics(logits, target, mask, (0.5,), None, True)
    grad_whole = torch.autograd.grad(sum(t.sum() for i, t in enumerate(whole) if i != 2), logits)[0]
    monkeypatch.setattr(_region_stats, "_SLAB_ELEMENTS", 50)  # 50 // 6 voxels per slab, the last one short
    assert _region_stats._slab_length(logits.detach().reshape(2, 3, -1)) < 315 // 30
    slabs = _region_stats.region_statistics(logits, target, mask, (0.5,), None, True)
    grad_slabs = torch.autograd.grad(sum(t.sum() for i, t in enumerate(slabs) if i != 2), logits)[0]
    for a, b in zip(whole, slabs):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(grad_whole, grad_slabs)


def test_extreme_logits_stay_exact_and_finite():
    x = torch.tensor([[[-200.0, -40.0, -17.0, 0.0, 17.0, 40.0, 200.0]]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[[1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]]], dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        xx = x.detach().to(dtype).requires_grad_()
        ours = _region_stats.region_statistics(xx, y.to(dtype), None, (0.5,), None, True)
        ref = _complement_first_tables(x, y, None, (0.5,), None, True)
        torch.testing.assert_close(ours[3].double(), ref[3], rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
        grad = torch.autograd.grad(ours[3].sum() + ours[1].sum(), xx)[0].double()
        ref_grad = torch.autograd.grad(ref[3].sum() + ref[1].sum(), x)[0]
        # autograd's (1 - p)^0.5 has an infinite slope where p rounds to 1 (NaN there); ours is bounded:
        # d/dx [-log p (1 - p)^g] -> -1 for p -> 0 and d/dx [-log(1 - p) p^g] -> 1 for p -> 1
        finite = torch.isfinite(ref_grad)
        assert not finite.all() and torch.isfinite(grad).all()
        torch.testing.assert_close(grad[finite], ref_grad[finite], rtol=1e-5,
                                   atol=1e-7 if dtype == torch.float32 else 1e-14)
        torch.testing.assert_close(grad[0, 0, [0, -1]], torch.tensor([-1.0, 1.0], dtype=torch.float64))


def test_small_cross_entropy_terms_keep_their_precision_in_float32():
    # One voxel per sample, so each table entry is one term: softplus(x) = -log(1 - p) for the complement
    # (target 0) and softplus(-x) = -log p for the region (target 1). The complement's terms keep float32's
    # relative precision down to e^-80 (log(max(p, 1 - p)) alone rounds 1 - p: 0 or ulps of 1 for them);
    # the region's are as exact as the rounded p allows, half an ulp of 1 (as softplus(x) - x they would
    # be off by half an ulp of x).
    x = torch.linspace(-80, 80, 321, dtype=torch.float64).view(-1, 1, 1)
    for target, column, atol in ((0.0, 0, 0.0), (1.0, 1, 6e-8)):
        y = torch.full_like(x, target, dtype=torch.float32)
        ce = _region_stats.region_statistics(x.float(), y, None, (0.0,), None, True)[3]
        torch.testing.assert_close(ce[:, column].double(), F.softplus(x if column == 0 else -x).view(-1),
                                   rtol=1e-6, atol=atol)


def test_exponent_count_is_checked():
    logits, target, _ = _inputs(masked=False)
    with pytest.raises(ValueError, match="3 focal exponents for 3 regions"):
        _region_stats.region_statistics(logits, target, None, (0.1, 0.2, 0.3), None, True)


def test_a_second_backward_through_the_same_graph_gives_the_same_gradient():
    logits, target, mask = _inputs()
    loss = L.SymmetricUnifiedFocalLoss(multilabel=True)(logits, target, mask=mask)
    first = torch.autograd.grad(loss, logits, retain_graph=True)[0]
    second = torch.autograd.grad(loss, logits)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_double_backward_fails_at_the_first_backward_with_a_clear_message():
    """As the label-map path: create_graph=True is refused where it is asked for, not at a later backward."""
    logits, target, mask = _inputs()
    loss = L.AsymmetricUnifiedFocalLoss(multilabel=True)(logits, target, mask=mask)
    with pytest.raises(RuntimeError, match="do not support double backward"):
        torch.autograd.grad(loss, logits, create_graph=True)


def test_the_region_path_keeps_no_2r_class_tensor():
    logits, target, mask = _inputs()
    prep = prepare(logits, target, multilabel=True, mask=mask)
    _stats.class_statistics(prep, cross_entropy=True, gamma=0.5)
    assert prep.scores.shape[1] == 3 and prep.num_classes == 6
    formed = [name for name in ("_class_scores", "_log_prob", "_prob", "_target") if getattr(prep, name) is not None]
    assert not formed  # no 2R-class tensor was formed
    torch.testing.assert_close(prep.target[:, :3], mask - target)  # formed on request, complement first
    torch.testing.assert_close(prep.class_scores, torch.cat([-logits, logits], 1))


def _reference_statistics(logits, target, mask, exponents, voxel_weight, cross_entropy, overlap=True):
    # every table, whether or not the loss reads the overlap sums
    return _complement_first_tables(logits, target, mask, tuple(exponents), voxel_weight, cross_entropy)


LOSSES = [
    (L.AsymmetricUnifiedFocalLoss, {}),
    (L.SymmetricUnifiedFocalLoss, {}),
    (L.AsymmetricUnifiedFocalLoss, {"batch_dice": True, "gamma": [0.2, 0.5, 0.7]}),
    (L.SymmetricUnifiedFocalLoss, {"batch_dice": True, "weight": 0.3}),
    (L.AsymmetricFocalLoss, {}),
    (L.SymmetricFocalTverskyLoss, {}),
    (L.FocalLoss, {"gamma": [1.0, 2.0, 0.0]}),
    (L.CrossEntropyLoss, {}),
    (L.DiceLoss, {}),
    (L.TverskyLoss, {"batch_dice": True}),
    (L.FocalTverskyLoss, {}),
    (L.ComboLoss, {}),
    (L.DiceCELoss, {}),
]


@pytest.mark.parametrize("cls,kwargs", LOSSES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("masked", [False, True])
def test_losses_match_the_complement_first_formulation(cls, kwargs, masked, monkeypatch):
    logits, target, mask = _inputs(masked=masked, seed=3)
    loss = cls(multilabel=True, **kwargs)
    call = (lambda x: loss(x, target, mask=mask)) if masked else (lambda x: loss(x, target))
    value = call(logits)
    grad = torch.autograd.grad(value, logits)[0]
    monkeypatch.setattr(_stats, "region_statistics", _reference_statistics)
    ref_value = call(logits)
    ref_grad = torch.autograd.grad(ref_value, logits)[0]
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cls,kwargs", LOSSES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_bool_and_integer_region_targets_give_the_float_targets_values_and_gradients(cls, kwargs, monkeypatch):
    # prepare keeps an unmasked region target in its dtype (no float copy); the statistics convert it slab by
    # slab (several slabs here), the complement-first target property on first use (from_logits=False).
    monkeypatch.setattr(_region_stats, "_SLAB_ELEMENTS", 64)
    logits, target, mask = _inputs(soft=False, masked=True, seed=4)
    loss = cls(multilabel=True, **kwargs)
    for probabilities, masked in ((False, False), (False, True), (True, False)):
        x = logits.detach().sigmoid().requires_grad_() if probabilities else logits
        if probabilities:
            loss = cls(multilabel=True, from_logits=False, **kwargs)
        extra = {"mask": mask} if masked else {}
        ref_value = loss(x, target, **extra)
        ref_grad = torch.autograd.grad(ref_value, x)[0]
        for dtype in (torch.bool, torch.uint8, torch.int16, torch.float32):
            value = loss(x, target.to(dtype), **extra)
            torch.testing.assert_close(value, ref_value, rtol=1e-15, atol=0)
            torch.testing.assert_close(torch.autograd.grad(value, x)[0], ref_grad, rtol=1e-15, atol=0)


def test_an_unmasked_region_target_is_not_copied():
    logits, target, _ = _inputs(soft=False, masked=False)
    target = target.bool()
    prep = prepare(logits, target, multilabel=True)
    assert prep.dense_target.dtype == torch.bool and prep.dense_target.data_ptr() == target.data_ptr()
    torch.testing.assert_close(prep.target[:, 3:], target.double())


@pytest.mark.parametrize("asymmetric", [True, False])
def test_deep_supervision_with_an_ignore_channel_matches_the_complement_first_formulation(asymmetric, monkeypatch):
    """nnU-Net's region lists (full resolution first, bool targets, a last channel marking ignored voxels)
    through the trainers' adapter."""
    from nnunet_trainers.loss_builder import NnUNetTargetAdapter

    g = torch.Generator().manual_seed(5)
    outputs, targets = [], []
    for size in (8, 4, 2):
        outputs.append(torch.randn((2, 3, size, size, size), generator=g, dtype=torch.float64).requires_grad_())
        regions = torch.rand((2, 3, size, size, size), generator=g) > 0.6
        ignored = torch.rand((2, 1, size, size, size), generator=g) > 0.8
        targets.append(torch.cat([regions, ignored], 1))
    inner = L.UnifiedFocalLoss(multilabel=True, asymmetric=asymmetric, batch_dice=True)
    loss = L.DeepSupervisionLoss(NnUNetTargetAdapter(inner, has_regions=True, has_ignore=True), weights="nnunet")
    value = loss(outputs, targets)
    grads = torch.autograd.grad(value, outputs[:2])  # nnU-Net's weights give the last output 0
    monkeypatch.setattr(_stats, "region_statistics", _reference_statistics)
    ref_value = loss(outputs, targets)
    ref_grads = torch.autograd.grad(ref_value, outputs[:2])
    torch.testing.assert_close(value, ref_value, rtol=1e-12, atol=1e-13)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_autocast_keeps_the_sums_in_float32():
    logits, target, mask = _inputs(masked=True)
    x = logits.detach().float().requires_grad_()
    loss = L.AsymmetricUnifiedFocalLoss(multilabel=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x.bfloat16(), target.float(), mask=mask.float())
    assert value.dtype == torch.float32
    exact = loss(x.detach().bfloat16().float(), target.float(), mask=mask.float())
    torch.testing.assert_close(value, exact, rtol=1e-5, atol=1e-6)
