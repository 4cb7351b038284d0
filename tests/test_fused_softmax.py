"""The label-map fast path of Prepared: the fused softmax statistics and the target contractions against
their definitions (plain autograd on a one-hot target), values and gradients, float64."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from unifocal.losses._inputs import _SoftmaxAtLabels, prepare


def _case(shape=(2, 3, 5, 4), seed=0, masked=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    mask = (torch.rand(shape[0], 1, *shape[2:], generator=g) > 0.3).double() if masked else None
    return logits, labels, mask


def _reference(logits, labels, mask):
    log_prob = F.log_softmax(logits, 1)
    prob = log_prob.exp()
    weighted = prob if mask is None else prob * mask
    return prob, log_prob.gather(1, labels), weighted.flatten(2).sum(2)


@pytest.mark.parametrize("masked", [False, True])
def test_forward_matches_definition(masked):
    logits, labels, mask = _case(masked=masked)
    for ours, ref in zip(_SoftmaxAtLabels.apply(logits, labels, mask), _reference(logits, labels, mask)):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


# every subset of the three outputs carrying a gradient (the backward handles absent ones)
@pytest.mark.parametrize("used", [u for r in (1, 2, 3) for u in itertools.combinations(range(3), r)])
@pytest.mark.parametrize("masked", [False, True])
def test_backward_matches_autograd_and_gradcheck(used, masked):
    logits, labels, mask = _case(masked=masked)
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in _reference(logits, labels, mask)]

    def loss(fn, x):
        outputs = fn(x, labels, mask)
        return sum((outputs[i] * weights[i]).sum() for i in used)

    (ours,) = torch.autograd.grad(loss(_SoftmaxAtLabels.apply, logits), logits)
    (ref,) = torch.autograd.grad(loss(_reference, logits), logits)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: loss(_SoftmaxAtLabels.apply, x), (logits,), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("ignore", [None, 7])
def test_contractions_match_one_hot_forms(ignore, batch):
    """class_sums / target_sum / at_target / predicted_sums on a label map equal the one-hot formulas, for
    per-class tables and for (B, K, *S) maps (also with B = 1, where a map has as many values per class as
    the spatial size)."""
    logits, labels, _ = _case(shape=(batch, 4, 6, 5), seed=3, masked=False)
    if ignore is not None:
        labels = labels.masked_fill(torch.rand(labels.shape, generator=torch.Generator().manual_seed(4)) > 0.8, ignore)
    prep = prepare(logits, labels, ignore_index=ignore)
    onehot = prep.target  # formed from the labels, zero at ignored voxels
    prob = F.softmax(logits, 1)
    keep = 1.0 if prep.mask is None else prep.mask
    per_class = torch.tensor([0.3, 1.5, 2.0, 0.7], dtype=torch.float64).view(1, -1, 1, 1)
    torch.testing.assert_close(prep.class_sums(), onehot.sum((2, 3)))
    torch.testing.assert_close(prep.class_sums(prep.prob_at_target), (onehot * prob).sum((2, 3)))
    torch.testing.assert_close(prep.class_sums(prep.at_target(per_class) * prep.log_prob_at_target),
                               (onehot * per_class * F.log_softmax(logits, 1)).sum((2, 3)))
    torch.testing.assert_close(prep.target_sum(prep.at_target(prob * per_class)),
                               (onehot * prob * per_class).sum(1, keepdim=True))
    torch.testing.assert_close(prep.at_target(prob), (onehot * prob).sum(1, keepdim=True) + (1 - keep) * prob[:, :1])
    torch.testing.assert_close(prep.predicted_sums(slice(1, None)), (prob * keep)[:, 1:].sum((2, 3)))
    assert prep.labels is not None and onehot.shape == logits.shape


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 2.0, "per-class"])
def test_safe_pow_matches_the_composite_form(exponent):
    """safe_pow's one-pow Function gives the value and gradient of the clamped-power-plus-detached-correction
    form it replaced: the exact power, the gradient e b^(e-1) where b >= 1e-6 and 0 below (finite at 0)."""
    from unifocal.losses._stats import _POW_FLOOR, safe_pow

    g = torch.Generator().manual_seed(5)
    base = torch.rand(3, 4, 5, generator=g, dtype=torch.float64)
    base[0, 0, :3] = torch.tensor([0.0, 1e-7, _POW_FLOOR])
    e = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64).view(1, 4, 1) if exponent == "per-class" else exponent
    weights = torch.randn(base.shape, generator=g, dtype=torch.float64)

    def composite(b):
        floored = b.clamp_min(_POW_FLOOR).pow(e)
        return floored + (b.pow(e) - floored).detach()

    values, grads = [], []
    for fn in (safe_pow, lambda b, e: composite(b)):
        b = base.clone().requires_grad_()
        out = fn(b, e)
        (out * weights).sum().backward()
        values.append(out.detach())
        grads.append(b.grad)
    # a per-class (tensor) exponent goes through exp(e log b), to within a few ulp of pow
    torch.testing.assert_close(values[0], values[1], rtol=1e-13, atol=0)
    torch.testing.assert_close(values[0], base.pow(e), rtol=1e-13, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-13, atol=0)
    assert torch.isfinite(grads[0]).all()
    assert (grads[0][base < _POW_FLOOR] == 0).all()


@pytest.mark.parametrize("scatter", [True, False])
def test_label_class_sums_both_forms(scatter):
    """The CPU (scatter-add) and accelerator (compare and reduce) forms of the label-map class sums agree,
    values and gradients; both are exercised here on the CPU."""
    from unifocal.losses._inputs import _label_class_sums

    g = torch.Generator().manual_seed(6)
    index = torch.randint(0, 4, (2, 50), generator=g)
    weights = torch.rand(2, 50, generator=g, dtype=torch.float64, requires_grad=True)
    sums = _label_class_sums(index, weights, 5, scatter=scatter)
    expected = torch.stack([(weights * (index == c)).sum(1) for c in range(5)], 1)
    torch.testing.assert_close(sums, expected)
    assert sums[:, 4].eq(0).all()  # a class without voxels sums to 0
    (grad,) = torch.autograd.grad((sums * torch.arange(5.0, dtype=torch.float64)).sum(), weights)
    torch.testing.assert_close(grad, index.double())


@pytest.mark.parametrize("with_labels", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_focal_term_matches_composed_operations(with_labels, weighted):
    """The fused focal term against -log_p * safe_pow(1 - p, gamma) * w composed from autograd ops, with
    per-class gamma and weights looked up at the labels (label map) or broadcast (dense)."""
    from unifocal.losses._inputs import at_labels
    from unifocal.losses._stats import safe_pow
    from unifocal.losses.distribution import _FocalTerm

    logits, labels, _ = _case(shape=(2, 3, 5, 4), seed=7, masked=False)
    log_prob = F.log_softmax(logits, 1)
    gamma = torch.tensor([0.5, 0.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
    weight = torch.tensor([0.4, 0.6, 0.6], dtype=torch.float64).view(1, 3, 1, 1) if weighted else None
    log_p = at_labels(log_prob, labels) if with_labels else log_prob
    p = log_p.exp()
    # probabilities of exactly 1 and just below: the modulation's gradient is stopped there (safe_pow)
    p = torch.cat([p.flatten()[:-2], p.new_tensor([1.0, 1 - 1e-9])]).view(p.shape)

    def look(values):
        return at_labels(values, labels) if with_labels else values

    composed = -log_p * safe_pow(1 - p, look(gamma)) * (1 if weight is None else look(weight))
    fused = _FocalTerm.apply(log_p, p, gamma, weight, labels if with_labels else None)
    torch.testing.assert_close(fused, composed, rtol=1e-13, atol=1e-15)
    g = torch.randn(fused.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    grads = [torch.autograd.grad((out * g).sum(), (log_p, p), retain_graph=True) for out in (fused, composed)]
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-15)
