"""Analytic gradients against finite differences (torch.autograd.gradcheck, float64) and mixed precision."""

import inspect

import pytest
import torch
from torch import nn

import unifocal.losses as losses
from unifocal.losses import (
    AsymmetricFocalLoss,
    AsymmetricFocalTverskyLoss,
    AsymmetricUnifiedFocalLoss,
    BalancedCrossEntropyLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    HybridFocalLoss,
    JaccardLoss,
    SymmetricFocalLoss,
    SymmetricFocalTverskyLoss,
    SymmetricUnifiedFocalLoss,
    TverskyLoss,
    UnifiedFocalLoss,
    WeightedCrossEntropyLoss,
)


def case(shape=(2, 3, 4, 4), seed=0, multilabel=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    if multilabel:
        target = torch.rand(shape, generator=g) > 0.5
    else:
        target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits.requires_grad_(), target


def check(loss, logits, target, fast_mode=True, **kwargs):
    """gradcheck of ``loss`` w.r.t. ``logits``; fast mode compares random projections of the Jacobian
    (a few evaluations instead of one per input element)."""
    assert torch.autograd.gradcheck(
        lambda x: loss(x, target, **kwargs), (logits,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast_mode
    )


# the core classes, with the options that change the computation graph
CORE = {
    "unified": lambda **kw: UnifiedFocalLoss(**kw),
    "unified_symmetric": lambda **kw: UnifiedFocalLoss(asymmetric=False, **kw),
    "unified_per_class_gamma": lambda **kw: UnifiedFocalLoss(gamma=(0.1, 0.5, 0.8), weight=0.3, delta=0.7, **kw),
    "unified_rare_set": lambda **kw: UnifiedFocalLoss(common_classes=(0, 2), **kw),
    "asymmetric_unified": lambda **kw: AsymmetricUnifiedFocalLoss(**kw),
    "symmetric_unified": lambda **kw: SymmetricUnifiedFocalLoss(**kw),
    "asymmetric_focal": lambda **kw: AsymmetricFocalLoss(**kw),
    "symmetric_focal": lambda **kw: SymmetricFocalLoss(**kw),
    "asymmetric_focal_tversky": lambda **kw: AsymmetricFocalTverskyLoss(**kw),
    "symmetric_focal_tversky": lambda **kw: SymmetricFocalTverskyLoss(**kw),
    "hybrid": lambda **kw: HybridFocalLoss(**kw),
    "cross_entropy": lambda **kw: CrossEntropyLoss(**kw),
    "weighted_ce": lambda **kw: WeightedCrossEntropyLoss(**kw),
    "balanced_ce": lambda **kw: BalancedCrossEntropyLoss(**kw),
    "focal": lambda **kw: FocalLoss(alpha=0.25, **kw),
    "dice": lambda **kw: DiceLoss(**kw),
    "dice_squared": lambda **kw: DiceLoss(squared=True, **kw),
    "jaccard": lambda **kw: JaccardLoss(**kw),
    "tversky": lambda **kw: TverskyLoss(**kw),
    "focal_tversky": lambda **kw: FocalTverskyLoss(**kw),
}
BATCH_DICE = {"unified", "unified_symmetric", "unified_per_class_gamma", "hybrid", "asymmetric_focal_tversky",
              "dice", "dice_squared", "jaccard", "tversky", "focal_tversky"}
NO_MULTILABEL = {"unified_rare_set", "unified_per_class_gamma"}  # class sets / 3 gammas for 3 classes


@pytest.mark.parametrize("name", sorted(CORE))
def test_gradcheck_2d(name):
    check(CORE[name](), *case())


@pytest.mark.parametrize("name", ["unified", "unified_symmetric", "hybrid"])
def test_gradcheck_full_jacobian(name):
    check(CORE[name](), *case(shape=(2, 3, 2, 3)), fast_mode=False)
    check(CORE[name](batch_dice=True), *case(shape=(2, 3, 2, 1, 2)), fast_mode=False)


@pytest.mark.parametrize("name", sorted(set(CORE) - NO_MULTILABEL))
def test_gradcheck_multilabel(name):
    check(CORE[name](multilabel=True), *case(multilabel=True))


@pytest.mark.parametrize("name", sorted(BATCH_DICE))
def test_gradcheck_batch_dice(name):
    check(CORE[name](batch_dice=True), *case())


@pytest.mark.parametrize("name", ["unified", "unified_symmetric", "hybrid", "dice", "cross_entropy"])
def test_gradcheck_ignore_index_and_mask(name):
    logits, labels = case()
    labels = labels.clone()
    labels[0, 0, 0] = 9
    check(CORE[name](ignore_index=9), logits, labels)
    mask = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(3)) > 0.3
    check(CORE[name](), logits, labels.masked_fill(labels == 9, 0), mask=mask)


@pytest.mark.parametrize("name", ["unified", "unified_per_class_gamma", "hybrid", "focal_tversky"])
def test_gradcheck_3d(name):
    check(CORE[name](batch_dice=True), *case(shape=(2, 3, 3, 2, 3)))


def test_gradcheck_probabilities_input():
    logits, labels = case()
    loss = UnifiedFocalLoss(from_logits=False)
    assert torch.autograd.gradcheck(lambda x: loss(x.softmax(1), labels), (logits,), eps=1e-6, atol=1e-6, fast_mode=True)
    loss = UnifiedFocalLoss(from_logits=False, multilabel=True)
    logits, regions = case(multilabel=True)
    assert torch.autograd.gradcheck(lambda x: loss(x.sigmoid(), regions), (logits,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_gradcheck_reductions(reduction):
    logits, labels = case()
    loss = UnifiedFocalLoss(reduction=reduction, batch_dice=True)
    assert torch.autograd.gradcheck(lambda x: loss(x, labels), (logits,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradcheck_deep_supervision():
    g = torch.Generator().manual_seed(4)
    outputs = [torch.randn(2, 3, 8 // 2**i, 8 // 2**i, generator=g, dtype=torch.float64, requires_grad=True)
               for i in range(3)]
    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=g)
    loss = DeepSupervisionLoss(UnifiedFocalLoss(), weights="exp")
    assert torch.autograd.gradcheck(
        lambda *outs: loss(list(outs), labels), tuple(outputs), eps=1e-6, atol=1e-6, fast_mode=True
    )


def _exported_loss_classes():
    found = []
    for name in losses.__all__:
        obj = getattr(losses, name)
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj is not DeepSupervisionLoss:
            found.append(name)
    return found


@pytest.mark.parametrize("name", _exported_loss_classes())
def test_gradcheck_every_exported_loss(name):
    """Every loss class the package exports, with its defaults, 2D and 3D."""
    loss = getattr(losses, name)()
    check(loss, *case(seed=1))
    check(loss, *case(shape=(1, 2, 3, 3, 3), seed=2))


def test_core_list_covers_the_core_modules():
    core_modules = {"unifocal.losses.unified", "unifocal.losses.distribution"}
    names = {getattr(losses, n).__name__ for n in _exported_loss_classes()
             if getattr(losses, n).__module__ in core_modules}
    covered = {type(make()).__name__ for make in CORE.values()}
    assert names <= covered


# ---------------------------------------------------------------------------------------------------
# Mixed precision
# ---------------------------------------------------------------------------------------------------

MIXED = [
    UnifiedFocalLoss(),
    UnifiedFocalLoss(asymmetric=False, batch_dice=True),
    UnifiedFocalLoss(multilabel=True),
    HybridFocalLoss(),
    AsymmetricFocalTverskyLoss(gamma=0.9),
    DiceLoss(),
    FocalLoss(),
]


@pytest.mark.parametrize("loss", MIXED, ids=lambda m: type(m).__name__ + ("_ml" if m.options.get("multilabel") else ""))
def test_bf16_autocast_on_cpu(loss):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    image = torch.randn(2, 1, 8, 8)
    multilabel = loss.options.get("multilabel", False)
    target = (torch.rand(2, 3, 8, 8) > 0.7) if multilabel else torch.randint(0, 3, (2, 1, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image) * 50  # saturated: p rounds to 1 in bf16
        assert logits.dtype == torch.bfloat16
        value = loss(logits, target)
    assert value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0
    # the value is the float32 loss of the bf16 logits
    torch.testing.assert_close(value, loss(logits.detach().float(), target))


@pytest.mark.parametrize("loss", MIXED, ids=lambda m: type(m).__name__ + ("_ml" if m.options.get("multilabel") else ""))
@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_fp16_input_tensors(loss, scale):
    g = torch.Generator().manual_seed(1)
    multilabel = loss.options.get("multilabel", False)
    logits = (torch.randn(2, 3, 6, 6, generator=g) * scale).half().requires_grad_()
    target = (torch.rand(2, 3, 6, 6, generator=g) > 0.7) if multilabel else torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    value = loss(logits, target)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert logits.grad.dtype == torch.float16 and torch.isfinite(logits.grad).all()


def test_fp16_probabilities_near_one():
    # from_logits=False with half-precision probabilities that round to exactly 1 and 0
    fg = torch.tensor([1.0, 0.0, 0.7, 0.2]).view(1, 1, 2, 2)
    labels = torch.tensor([1, 0, 1, 0]).view(1, 1, 2, 2)
    for dtype in (torch.float16, torch.bfloat16):
        p = torch.cat([1 - fg, fg], 1).to(dtype).requires_grad_()
        value = UnifiedFocalLoss(from_logits=False)(p, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(p.grad).all()
