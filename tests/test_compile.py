"""torch.compile: a compiled loss gives the eager loss's value and gradient and rejects the same inputs.

Eager, a bad input is a ValueError naming the offending value; compiled, the same conditions are asserted
inside the graph and raise a RuntimeError with the same message, without the value (the checks were
skipped under compile: a label 7 with 2 classes or NaN logits gave a loss without error).
"""

import pytest
import torch

from unifocal.losses import AsymmetricUnifiedFocalLoss, DiceLoss, FocalTverskyLoss


@pytest.fixture(autouse=True)
def fresh_compile_cache():
    """Every loss shares one ``forward``: without a reset, the tests together pass dynamo's recompile limit
    for that code object, which ``fullgraph=True`` turns into an error."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def batch(classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, classes, 3, 4, 5, generator=g), torch.randint(0, classes, (2, 3, 4, 5), generator=g)


def bad_label(logits, labels):
    labels = labels.clone()
    labels[1, 2, 3, 4] = 7
    return logits, labels


def nan_logit(logits, labels):
    logits = logits.clone()
    logits[0, 1, 1, 1, 1] = float("nan")
    return logits, labels


def inf_logit(logits, labels):
    logits = logits.clone()
    logits[1, 0, 0, 0, 0] = float("inf")
    return logits, labels


BAD_INPUTS = [(bad_label, r"target label values must lie in \[0, 2\)"),
              (nan_logit, "input contains NaN or Inf values"),
              (inf_logit, "input contains NaN or Inf values")]


def check_like_eager(loss, backend, logits, labels, **kwargs):
    """The compiled ``loss`` equals the eager one (value and gradient) on a valid batch; on every bad variant
    of it the eager loss raises a ValueError and the compiled one a RuntimeError, with the same message."""
    compiled = torch.compile(loss, backend=backend, fullgraph=True)  # one graph: the checks break none
    results = []
    for function in (loss, compiled):
        x = logits.clone().requires_grad_()
        value = function(x, labels, **kwargs)
        value.backward()
        results.append((value.detach(), x.grad))
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
    for make_bad, message in BAD_INPUTS:
        bad = make_bad(logits, labels)
        for function, error in ((loss, ValueError), (compiled, RuntimeError)):
            with pytest.raises(error, match=message):
                function(*bad, **kwargs)


@pytest.mark.parametrize("loss", [AsymmetricUnifiedFocalLoss(), DiceLoss(batch_dice=True),
                                  FocalTverskyLoss(ignore_index=1)], ids=lambda loss: type(loss).__name__)
def test_compiled_loss_rejects_what_eager_rejects(loss):
    check_like_eager(loss, "eager", *batch())


def test_compiled_multilabel_target_is_checked():
    logits, labels = batch()
    regions = torch.stack([labels == 1, labels > 0], 1).float()
    loss = AsymmetricUnifiedFocalLoss(multilabel=True)
    compiled = torch.compile(loss, backend="eager", fullgraph=True)  # the region path is one graph too
    torch.testing.assert_close(compiled(logits, regions), loss(logits, regions))
    regions[0, 0, 0, 0, 0] = 2
    for function, error in ((loss, ValueError), (compiled, RuntimeError)):
        with pytest.raises(error, match=r"target must hold values in \[0, 1\]"):
            function(logits, regions)


@pytest.mark.parametrize("make_bad, message", [
    (lambda p, y: (p * 0.9, y), "probabilities that sum to 1"),
    (lambda p, y: (p, y.double().index_fill_(1, torch.tensor([0]), 0.5)), "integer class indices"),
], ids=["probabilities not summing to 1", "fractional float label"])
def test_compiled_probability_and_float_label_checks(make_bad, message):
    logits, labels = batch()
    loss = DiceLoss(from_logits=False)
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    probabilities = logits.softmax(1)
    torch.testing.assert_close(compiled(probabilities, labels.double()), loss(probabilities, labels.double()))
    bad = make_bad(probabilities, labels)
    for function, error in ((loss, ValueError), (compiled, RuntimeError)):
        with pytest.raises(error, match=message):
            function(*bad)


@pytest.mark.slow
def test_inductor_compiled_loss_rejects_what_eager_rejects():
    """The default backend (C++ code on the CPU, tens of seconds to compile)."""
    check_like_eager(AsymmetricUnifiedFocalLoss(), "inductor", *batch())
