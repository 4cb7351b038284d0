"""MONAI passes ``MetaTensor`` (a torch.Tensor subclass) to the loss: every loss takes it, in label-map and
region mode, with the value and gradient of plain tensors."""

import pytest
import torch

from unifocal.losses import AsymmetricUnifiedFocalLoss, DeepSupervisionLoss, DiceCELoss, SymmetricUnifiedFocalLoss

MetaTensor = pytest.importorskip("monai.data").MetaTensor


@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("make", [AsymmetricUnifiedFocalLoss, SymmetricUnifiedFocalLoss, DiceCELoss])
def test_meta_tensor_inputs_give_the_plain_tensor_loss(make, multilabel):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=g, dtype=torch.float64)
    if multilabel:
        target = (torch.rand(2, 3, 6, 5, 4, generator=g) > 0.6).float()
    else:
        target = torch.randint(0, 3, (2, 1, 6, 5, 4), generator=g)
    loss = make(multilabel=multilabel)
    plain = logits.clone().requires_grad_()
    expected = loss(plain, target)
    expected.backward()
    meta = MetaTensor(logits.clone()).requires_grad_()
    value = loss(meta, MetaTensor(target))
    value.backward()
    assert type(value) is torch.Tensor
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(meta.grad.as_subclass(torch.Tensor), plain.grad, rtol=1e-12, atol=1e-12)


def test_meta_tensor_deep_supervision_stack():
    g = torch.Generator().manual_seed(1)
    stacked = torch.randn(2, 3, 2, 8, 8, generator=g, dtype=torch.float64)  # DynUNet's (B, heads, C, ...)
    target = torch.randint(0, 2, (2, 1, 8, 8), generator=g)
    loss = DeepSupervisionLoss(AsymmetricUnifiedFocalLoss(), stacked_dim=1)
    torch.testing.assert_close(loss(MetaTensor(stacked), MetaTensor(target)), loss(stacked, target), rtol=1e-12, atol=1e-12)
