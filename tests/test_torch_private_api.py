"""The private torch APIs the losses rely on, each used in one function of unifocal.losses._autograd: these
tests fail loudly when a torch release renames one or changes what it reports, instead of the losses
silently taking the wrong path (the fused passes under torch.func, or no input check under torch.compile)."""

import pytest
import torch
from torch.autograd import forward_ad

from unifocal.losses import DiceLoss
from unifocal.losses._autograd import autograd_only, device_assert, func_transformed


def test_func_transformed_reports_the_torch_func_transforms():
    assert callable(getattr(torch._C, "_are_functorch_transforms_active", None)), \
        "torch._C._are_functorch_transforms_active is gone: update unifocal.losses._autograd.func_transformed"
    seen = {}

    def probe(x):
        seen[len(seen)] = func_transformed()
        return x.sum()

    x = torch.ones(3)
    probe(x)
    torch.func.grad(probe)(x)
    torch.func.jvp(probe, (x,), (x,))
    torch.func.vmap(probe)(torch.ones(2, 3))
    assert seen == {0: False, 1: True, 2: True, 3: True}


def test_autograd_only_sees_a_forward_mode_tangent_and_nothing_else():
    x = torch.ones(2, 2, 3)
    assert not autograd_only(x)
    with forward_ad.dual_level():
        assert not autograd_only(x)  # a dual level alone, no tangent on these scores
        assert autograd_only(forward_ad.make_dual(x, torch.ones_like(x)))
        assert autograd_only(forward_ad.make_dual(x, torch.ones_like(x)) * 2)


def test_device_assert_passes_and_fails():
    assert hasattr(torch, "_assert_async"), "torch._assert_async is gone: update unifocal.losses._autograd.device_assert"
    device_assert(torch.tensor(True), "never raised")
    with pytest.raises(RuntimeError, match="a named condition"):
        device_assert(torch.tensor(False), "a named condition")


def test_device_assert_in_a_compiled_loss_rejects_a_bad_target():
    torch._dynamo.reset()
    loss = torch.compile(DiceLoss(), fullgraph=True, backend="eager")
    x = torch.randn(2, 3, 4, 4)
    assert torch.isfinite(loss(x, torch.zeros(2, 1, 4, 4, dtype=torch.long)))
    with pytest.raises(RuntimeError, match=r"target label values must lie in \[0, 3\)"):
        loss(x, torch.full((2, 1, 4, 4), 7))
