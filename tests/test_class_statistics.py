"""The fused label-map statistics (``_stats._LabelMapStatistics``) and the pieces around them, against
their definitions: the composed path on a one-hot target (plain autograd), hand-computed values,
float64 gradient checks, a second backward through the same graph, and the checks of ``prepare``."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad
from torch.utils.checkpoint import checkpoint

import unifocal.losses as losses
from unifocal.losses import _stats
from unifocal.losses._inputs import one_hot, prepare
from unifocal.losses._stats import (
    _composed_statistics, _exponents, _focal_term, at_target, class_statistics, class_table,
)


def _case(shape=(2, 3, 5, 4), seed=0, masked=True, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g).to(torch.int16)
    mask = (torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.3).to(dtype) if masked else None
    return logits, labels, mask


def _definition(logits, labels, mask, gamma, voxel_weight=None):
    """The four sums straight from their definitions, on a one-hot target built by scatter."""
    prob = F.softmax(logits, 1)
    target = torch.zeros_like(prob).scatter_(1, labels.long(), 1.0)
    keep = torch.ones_like(prob[:, :1]) if mask is None else mask
    target = target * keep
    gamma = torch.as_tensor(gamma, dtype=logits.dtype).reshape(1, -1, 1, 1)
    terms = target * (1 - prob) ** gamma * -F.log_softmax(logits, 1)
    if voxel_weight is not None:
        terms = terms * voxel_weight
    return [(prob * keep).sum((2, 3)), (target * prob).sum((2, 3)), target.sum((2, 3)), terms.sum((2, 3))]


GAMMAS = [0.0, 0.5, 2.0, (0.5, 0.0, 0.0), (0.3, 0.75, 0.0)]


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_sums_match_the_definition(gamma, masked):
    logits, labels, mask = _case(masked=masked)
    prep = prepare(logits, labels, mask=mask)
    stats = class_statistics(prep, cross_entropy=True, gamma=gamma)
    for ours, ref in zip(stats, _definition(logits, labels, mask, gamma)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_hand_computed_sums():
    """Two voxels of one sample, 2 classes: logits (0, ln 3) -> p = (1/4, 3/4); labels (1, 0)."""
    logits = torch.tensor([[[0.0, 0.0], [torch.log(torch.tensor(3.0)), 0.0]]], dtype=torch.float64)
    labels = torch.tensor([[[1, 0]]])
    stats = class_statistics(prepare(logits, labels), cross_entropy=True, gamma=(0.5, 0.0))
    torch.testing.assert_close(stats.predicted, torch.tensor([[0.25 + 0.5, 0.75 + 0.5]], dtype=torch.float64))
    torch.testing.assert_close(stats.true_positive, torch.tensor([[0.5, 0.75]], dtype=torch.float64))
    torch.testing.assert_close(stats.actual, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    # class 0 (voxel 2, p = 1/2): -ln(1/2) (1/2)^0.5; class 1 (voxel 1, p = 3/4, gamma 0): -ln(3/4)
    expected = torch.tensor([[0.5**0.5 * torch.log(torch.tensor(2.0)).item(), -torch.log(torch.tensor(0.75)).item()]],
                            dtype=torch.float64)
    torch.testing.assert_close(stats.cross_entropy, expected)


# every subset of the three differentiable outputs carrying a gradient (the backward handles absent ones)
@pytest.mark.parametrize("used", [u for r in (1, 2, 3) for u in itertools.combinations((0, 1, 3), r)])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("gamma", [0.0, (0.5, 0.0, 0.0), 0.75])
def test_backward_matches_autograd_and_gradcheck(used, masked, gamma):
    logits, labels, mask = _case(masked=masked)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(2, 3, generator=g, dtype=torch.float64) for _ in range(4)]

    def loss(sums):
        return sum((sums[i] * weights[i]).sum() for i in used)

    def fused(x):
        return loss(class_statistics(prepare(x, labels, mask=mask), cross_entropy=True, gamma=gamma))

    (ours,) = torch.autograd.grad(fused(logits), logits)
    (ref,) = torch.autograd.grad(loss(_definition(logits, labels, mask, gamma)), logits)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fused, (logits,), eps=1e-6, atol=1e-7)


def test_voxel_weights_and_ignore_index():
    logits, labels, _ = _case(shape=(2, 4, 6, 5), seed=3, masked=False)
    ignored = torch.rand(labels.shape, generator=torch.Generator().manual_seed(4)) > 0.8
    weight = torch.rand(2, 1, 6, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64) + 0.5
    prep = prepare(logits, labels.masked_fill(ignored, 9), ignore_index=9)
    stats = class_statistics(prep, cross_entropy=True, gamma=0.5, voxel_weight=weight)
    reference = _definition(logits, labels, (~ignored).double(), 0.5, weight)
    for ours, ref in zip(stats, reference):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (ours,) = torch.autograd.grad(stats.cross_entropy.sum() + stats.predicted[:, 1].sum(), logits)
    (ref,) = torch.autograd.grad(reference[3].sum() + reference[0][:, 1].sum(), logits)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)


def test_fused_and_composed_paths_agree_on_the_same_batch():
    """A label map takes the fused path, the same target one-hot the composed one: same sums, same gradient."""
    logits, labels, mask = _case(shape=(2, 3, 7, 6), seed=7)
    results = []
    for target in (labels, torch.zeros(2, 3, 7, 6, dtype=torch.float64).scatter_(1, labels.long(), 1.0)):
        x = logits.detach().clone().requires_grad_()
        stats = class_statistics(prepare(x, target, mask=mask), cross_entropy=True, gamma=(0.0, 0.5, 0.5))
        (stats.cross_entropy.sum() * 0.3 + stats.true_positive.sum() - stats.predicted[:, 2].sum()).backward()
        results.append((stats, x.grad))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


def test_second_backward_through_the_same_graph():
    """The backward writes the gradient into the one-hot buffer; retain_graph must still give the same
    gradient twice (the buffer is rebuilt from the labels)."""
    logits, labels, mask = _case(seed=8)
    stats = class_statistics(prepare(logits, labels, mask=mask), cross_entropy=True, gamma=0.5)
    total = stats.cross_entropy.sum() + stats.true_positive.sum() + stats.predicted.sum()
    (first,) = torch.autograd.grad(total, logits, retain_graph=True)
    (second,) = torch.autograd.grad(total, logits)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


ONE_PASS_LOSSES = ["DiceLoss", "TverskyLoss", "FocalTverskyLoss", "JaccardLoss", "ComboLoss", "DiceCELoss",
                   "CrossEntropyLoss", "FocalLoss", "UnifiedFocalLoss", "SymmetricUnifiedFocalLoss", "HybridFocalLoss",
                   "GeneralizedDiceLoss"]


@pytest.mark.parametrize("name", ONE_PASS_LOSSES)
def test_one_statistics_pass_and_no_dense_softmax_per_call(name, monkeypatch):
    """Every part of a loss is derived from one fused statistics pass over a label map; no loss forms the
    dense probabilities besides it (DiceLoss & co. used to run a softmax only to read the batch size, and
    DiceCELoss made two fused passes)."""
    logits, labels, _ = _case(masked=False)
    calls = []
    original = _stats._LabelMapStatistics.apply
    monkeypatch.setattr(_stats._LabelMapStatistics, "apply", lambda *a: calls.append(1) or original(*a))
    softmax = F.log_softmax
    monkeypatch.setattr(F, "log_softmax", lambda *a, **k: calls.append("dense") or softmax(*a, **k))
    expected = getattr(losses, name)()(logits.detach(), labels)  # reference value before counting
    calls.clear()
    value = getattr(losses, name)()(logits, labels)
    assert [c for c in calls if c == 1] == [1]
    assert calls.count("dense") == 1  # the fused pass's own log_softmax
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("path", ["label map", "region", "composed"])
def test_without_overlap_the_statistics_skip_predicted_and_true_positive_sums(path):
    """A loss of the cross entropy alone asks for no overlap sums: they are None, and the cross-entropy sums
    and their gradient are those of the full pass, on every statistics path."""
    logits, labels, mask = _case()
    if path == "label map":
        target, multilabel = labels, False
    elif path == "region":
        target, multilabel = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1)) > 0.5, True
    else:
        target, multilabel = F.one_hot(labels[:, 0].long(), 3).movedim(-1, 1).double(), False
    results = []
    for overlap in (True, False):
        prep = prepare(logits, target, mask=mask, multilabel=multilabel)
        stats = class_statistics(prep, cross_entropy=True, gamma=0.5, overlap=overlap)
        results.append((stats, torch.autograd.grad(stats.cross_entropy.sum(), logits)[0]))
    (full, full_grad), (cross_entropy_only, grad) = results
    assert cross_entropy_only.predicted is None and cross_entropy_only.true_positive is None
    assert full.predicted is not None and full.true_positive is not None
    torch.testing.assert_close(cross_entropy_only.cross_entropy, full.cross_entropy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cross_entropy_only.actual, full.actual, rtol=0, atol=0)
    torch.testing.assert_close(grad, full_grad, rtol=1e-12, atol=1e-12)
    assert float(full.cross_entropy.detach().sum()) > 1


@pytest.mark.parametrize("name, overlap", [("CrossEntropyLoss", False), ("FocalLoss", False),
                                           ("AsymmetricFocalLoss", False), ("ShapeAwareLoss", False),
                                           ("UnifiedFocalLoss", True), ("ComboLoss", True), ("DiceCELoss", True)])
def test_losses_of_the_cross_entropy_alone_ask_for_no_overlap_sums(name, overlap, monkeypatch):
    logits, labels, _ = _case(masked=False)
    asked = []
    original = _stats._LabelMapStatistics.apply
    monkeypatch.setattr(_stats._LabelMapStatistics, "apply", lambda *a: asked.append(a[-1]) or original(*a))
    value = getattr(losses, name)()(logits, labels)
    assert asked == [overlap] and torch.isfinite(value)
    if name == "DiceCELoss":  # the cross entropy alone; with both weights 0 the Dice part is formed, times 0
        asked.clear()
        assert float(losses.DiceCELoss(dice_weight=0.0)(logits, labels).detach()) > 0 and asked == [False]
        zero = losses.DiceCELoss(dice_weight=0.0, ce_weight=0.0)(logits, labels)
        zero.backward()
        assert float(zero.detach()) == 0 and logits.grad.abs().max() == 0


def test_autocast_keeps_the_sums_in_float32():
    logits, labels, _ = _case(shape=(2, 3, 16, 16), dtype=torch.float32, masked=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        stats = class_statistics(prepare(logits, labels), cross_entropy=True, gamma=0.5)
    reference = _definition(logits.double(), labels, None, 0.5)
    assert all(s.dtype == torch.float32 for s in stats)
    for ours, ref in zip(stats, reference):
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("exponent", [0.5, 2.0, "per-voxel"])
def test_focal_term_and_its_derivative(exponent):
    """Value -log p (1 - p)^e and derivative d/dlog p against autograd in float64, and bounded, finite
    values where p rounds to 1 (where the power's own slope is unbounded)."""
    g = torch.Generator().manual_seed(9)
    log_p = (-torch.rand(200, generator=g, dtype=torch.float64) * 5).requires_grad_()
    e = torch.rand(200, generator=g, dtype=torch.float64) if exponent == "per-voxel" else exponent
    terms, slope = _focal_term(log_p.detach(), log_p.detach().exp(), e)
    reference = -log_p * (1 - log_p.exp()) ** e
    torch.testing.assert_close(terms, reference.detach(), rtol=1e-12, atol=1e-14)
    (grad,) = torch.autograd.grad(reference.sum(), log_p)
    torch.testing.assert_close(slope, grad, rtol=1e-9, atol=1e-12)

    saturated = torch.tensor([0.0, -1e-12, -3e-8, -6e-8, -1e-7], dtype=torch.float32)
    terms, slope = _focal_term(saturated, saturated.exp(), 0.5 if exponent == "per-voxel" else exponent)
    assert torch.isfinite(terms).all() and torch.isfinite(slope).all()
    assert (slope.abs() <= 1e-3).all()  # the true derivative tends to 0 as p -> 1


def test_class_lookup_and_one_hot():
    labels = torch.tensor([[[[0, 1], [2, 1]]]], dtype=torch.uint8)
    onehot = one_hot(labels, 3, torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]]), torch.float32)
    expected = torch.zeros(1, 3, 2, 2).scatter_(1, labels.long(), 1.0)
    expected[..., 1, 1] = 0
    torch.testing.assert_close(onehot, expected)
    looked_up = at_target(class_table((0.5, 0.0, 2.0), onehot), onehot)
    torch.testing.assert_close(looked_up, torch.tensor([[[[0.5, 0.0], [2.0, 0.0]]]]))
    assert at_target(class_table((0.0, 0.0, 0.0), onehot), onehot).eq(0).all()
    assert _exponents((0.5, 0.5, 0.5), 3) == (0.5,) and _exponents(0.25, 3) == (0.25,)
    with pytest.raises(ValueError, match="gamma has 2 values for 3 classes"):
        _exponents((0.5, 0.1), 3)


def test_composed_statistics_accept_per_class_voxel_weights():
    """The composed path (dense targets) takes a (B, K, *S) weight per class and voxel."""
    logits, labels, _ = _case(masked=False)
    target = torch.zeros(2, 3, 5, 4, dtype=torch.float64).scatter_(1, labels.long(), 1.0)
    weight = torch.rand(2, 3, 5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    stats = _composed_statistics(prepare(logits, target), True, (0.0,), weight)
    expected = (target * weight * -F.log_softmax(logits, 1)).sum((2, 3))
    torch.testing.assert_close(stats.cross_entropy, expected)


def test_logit_check_tells_overflowing_sums_from_infinities():
    """Logits are checked through their sum; a sum that overflows float32 is not taken for an infinity."""
    huge = torch.full((1, 2, 4, 4), 3e38)
    assert torch.isinf(huge.sum())  # the sum overflows, no value is infinite
    prepare(huge, torch.zeros(1, 4, 4, dtype=torch.long))
    huge[0, 1, 0, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        prepare(huge, torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("gamma", [0.5, (0.0, 0.75, 0.5)])
@pytest.mark.parametrize("from_logits", [True, False])
def test_composed_path_soft_target_matches_definition_and_gradcheck(gamma, from_logits):
    """Soft targets and probability inputs take the composed path (its focal sums in one Function)."""
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    target = torch.softmax(torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64), 1)
    weights = torch.randn(2, 3, generator=g, dtype=torch.float64)
    e = torch.as_tensor(gamma, dtype=torch.float64).reshape(1, -1, 1, 1)

    def ours(x):
        stats = class_statistics(prepare(x, target, from_logits=from_logits), cross_entropy=True, gamma=gamma)
        return (stats.cross_entropy * weights).sum()

    def reference(x):
        prob = F.softmax(x, 1) if from_logits else x
        return ((target * -prob.log() * (1 - prob) ** e).sum((2, 3)) * weights).sum()

    x = (logits if from_logits else F.softmax(logits, 1)).requires_grad_()
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(ours(x), x)[0], torch.autograd.grad(reference(x), x)[0],
                               rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(ours, (x,), eps=1e-7, atol=1e-6)


def _fused_loss(x, labels, mask):
    stats = class_statistics(prepare(x, labels, mask=mask), cross_entropy=True, gamma=(0.0, 0.5, 0.5))
    return (stats.cross_entropy * 0.3).sum() + stats.true_positive.sum() - stats.predicted[:, 2].sum()


def test_saved_tensor_hooks_see_everything_the_fused_backward_needs():
    """save_on_cpu packs every tensor the backward uses (nothing hides in ctx), and the gradient is unchanged."""
    logits, labels, mask = _case(seed=11)
    (expected,) = torch.autograd.grad(_fused_loss(logits, labels, mask), logits)
    packed = []

    def pack(tensor):
        packed.append(tensor.shape)
        return tensor.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = _fused_loss(logits, labels, mask)
        stats = class_statistics(prepare(logits, labels, mask=mask), cross_entropy=True, gamma=0.5)
    node = stats.true_positive.grad_fn  # the Function's ctx: no tensor kept beside save_for_backward
    assert type(node).__name__ == "_LabelMapStatisticsBackward"
    assert not [name for name, v in vars(node).items() if isinstance(v, torch.Tensor)]
    b, k, *spatial = logits.shape
    assert (b, k, *spatial) in packed and (b, 1, *spatial) in packed  # p, and the labels / mask / voxel maps
    (hooked,) = torch.autograd.grad(value, logits)
    torch.testing.assert_close(hooked, expected, rtol=0, atol=0)
    with torch.autograd.graph.save_on_cpu():
        value = _fused_loss(logits, labels, mask)
    torch.testing.assert_close(torch.autograd.grad(value, logits)[0], expected, rtol=0, atol=0)


def test_activation_checkpointing_gives_the_same_gradient():
    logits, labels, mask = _case(seed=12)
    (expected,) = torch.autograd.grad(_fused_loss(logits, labels, mask), logits)
    value = checkpoint(_fused_loss, logits, labels, mask, use_reentrant=False)
    torch.testing.assert_close(torch.autograd.grad(value, logits)[0], expected, rtol=1e-14, atol=0)


def test_double_backward_fails_with_a_clear_message():
    logits, labels, mask = _case(seed=13)
    with pytest.raises(RuntimeError, match="do not support double backward"):
        torch.autograd.grad(_fused_loss(logits, labels, mask), logits, create_graph=True)
    dense = torch.zeros_like(logits).scatter_(1, labels.long(), 1.0)
    with pytest.raises(RuntimeError, match="do not support double backward"):  # the composed path's focal sums
        torch.autograd.grad(class_statistics(prepare(logits, dense), True, 0.5).cross_entropy.sum(), logits,
                            create_graph=True)


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("loss", [losses.AsymmetricUnifiedFocalLoss(), losses.SymmetricUnifiedFocalLoss(),
                                  losses.FocalLoss(gamma=0.5), losses.DiceCELoss()], ids=lambda loss: type(loss).__name__)
def test_torch_func_grad_equals_autograd(loss, multilabel):
    """Under torch.func the statistics are formed by autograd alone (the fused Functions have no setup_context
    form); the gradient is the fused path's, on label maps, region targets and dense (focal) targets."""
    logits, labels, mask = _case(seed=14)
    dense = torch.zeros_like(logits).scatter_(1, labels.long(), 1.0)
    loss.multilabel = multilabel
    for target in (dense > 0.5, dense) if multilabel else (labels, dense):
        (expected,) = torch.autograd.grad(loss(logits, target, mask=mask), logits)
        transformed = torch.func.grad(lambda x: loss(x, target, mask=mask))(logits.detach())
        torch.testing.assert_close(transformed, expected, rtol=1e-12, atol=1e-15)
        direction = torch.randn_like(logits)  # forward mode: the directional derivative
        _, along = torch.func.jvp(lambda x: loss(x, target, mask=mask), (logits.detach(),), (direction,))
        torch.testing.assert_close(along, (expected * direction).sum(), rtol=1e-10, atol=1e-14)
        with forward_ad.dual_level():  # forward mode without torch.func
            dual = loss(forward_ad.make_dual(logits.detach(), direction), target, mask=mask)
            torch.testing.assert_close(forward_ad.unpack_dual(dual).tangent, along, rtol=1e-12, atol=1e-15)


def test_forward_mode_ad_of_a_distance_weighted_loss():
    """Forward mode reaches the voxel-weighted statistics too; the distance maps need no derivative."""
    logits, labels, _ = _case(seed=16)
    loss = losses.DistancePenalizedCELoss()
    (expected,) = torch.autograd.grad(loss(logits, labels), logits)
    direction = torch.randn_like(logits)
    with forward_ad.dual_level():
        tangent = forward_ad.unpack_dual(loss(forward_ad.make_dual(logits.detach(), direction), labels)).tangent
    torch.testing.assert_close(tangent, (expected * direction).sum(), rtol=1e-10, atol=1e-14)


def test_torch_func_vmap_and_the_distance_losses_fail_with_a_clear_message():
    logits, labels, _ = _case(seed=15)
    per_sample = torch.func.vmap(lambda x, t: losses.DiceLoss()(x[None], t[None]))
    with pytest.raises(RuntimeError, match="torch.func.vmap cannot run a unifocal loss"):
        per_sample(logits.detach(), labels)
    with pytest.raises(RuntimeError, match="scipy on the host, which torch.func transforms cannot trace"):
        torch.func.grad(lambda x: losses.BoundaryLoss()(x, labels))(logits.detach())
