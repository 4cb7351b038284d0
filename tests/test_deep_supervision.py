"""Deep supervision: weight schemes, nnU-Net lists, MONAI DynUNet stacked outputs, agreement with nnU-Net."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unifocal.losses import DeepSupervisionLoss, DiceLoss, UnifiedFocalLoss, deep_supervision_weights


def outputs_and_targets(sizes=(8, 4, 2), b=2, c=3, seed=0, ndim=2):
    g = torch.Generator().manual_seed(seed)
    outputs = [torch.randn(b, c, *([s] * ndim), generator=g, dtype=torch.float64) for s in sizes]
    targets = [torch.randint(0, c, (b, 1, *([s] * ndim)), generator=g) for s in sizes]
    return outputs, targets


def nnunet_trainer_weights(n):
    """nnUNetTrainer._build_loss (nnunetv2 2.8.1, without DDP), verbatim."""
    weights = np.array([1 / (2**i) for i in range(n)])
    weights[-1] = 0
    return weights / weights.sum()


# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------


def test_weight_schemes():
    np.testing.assert_allclose(deep_supervision_weights(3, "nnunet"), [2 / 3, 1 / 3, 0.0], rtol=1e-15)
    np.testing.assert_allclose(deep_supervision_weights(4, "nnunet"), np.array([1, 0.5, 0.25, 0]) / 1.75, rtol=1e-15)
    np.testing.assert_allclose(deep_supervision_weights(3, "exp"), [4 / 7, 2 / 7, 1 / 7], rtol=1e-15)
    np.testing.assert_allclose(deep_supervision_weights(4, "uniform"), [0.25] * 4, rtol=1e-15)
    assert deep_supervision_weights(1, "nnunet") == [1.0]  # a single output keeps its weight
    assert deep_supervision_weights(3, [1, 0.5, 0]) == [1.0, 0.5, 0.0]  # given weights are not normalised
    for n in range(2, 7):
        np.testing.assert_allclose(deep_supervision_weights(n, "nnunet"), nnunet_trainer_weights(n), rtol=1e-15)


def test_weight_errors():
    with pytest.raises(ValueError, match="at least one output"):
        deep_supervision_weights(0)
    with pytest.raises(ValueError, match="2 deep supervision weights given for 3 outputs"):
        deep_supervision_weights(3, [1.0, 0.5])
    with pytest.raises(ValueError, match="must be >= 0 and not all 0"):
        deep_supervision_weights(2, [1.0, -0.5])
    with pytest.raises(ValueError, match="must be >= 0 and not all 0"):
        deep_supervision_weights(2, [0.0, 0.0])
    with pytest.raises(ValueError, match="weight scheme must be one of"):
        deep_supervision_weights(2, "linear")
    with pytest.raises(ValueError, match="weight scheme must be one of"):
        DeepSupervisionLoss(UnifiedFocalLoss(), weights="linear")
    outputs, targets = outputs_and_targets()
    with pytest.raises(ValueError, match="3 deep supervision outputs but 2 targets"):
        DeepSupervisionLoss(UnifiedFocalLoss())(outputs, targets[:2])
    with pytest.raises(ValueError, match="2 deep supervision weights given for 3 outputs"):
        DeepSupervisionLoss(UnifiedFocalLoss(), weights=[1.0, 0.5])(outputs, targets)


# ---------------------------------------------------------------------------------------------------
# Lists (nnU-Net)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["nnunet", "exp", "uniform", [0.7, 0.2, 0.1]])
@pytest.mark.parametrize("ndim", [2, 3])
def test_list_of_outputs_is_the_weighted_sum(scheme, ndim):
    outputs, targets = outputs_and_targets(ndim=ndim)
    inner = UnifiedFocalLoss()
    weights = deep_supervision_weights(3, scheme)
    expected = sum(w * inner(o, t) for w, o, t in zip(weights, outputs, targets))
    torch.testing.assert_close(DeepSupervisionLoss(inner, weights=scheme)(outputs, targets), expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(DeepSupervisionLoss(inner, weights=scheme)(tuple(outputs), tuple(targets)), expected,
                               rtol=1e-14, atol=0)


def test_single_full_resolution_target_is_downsampled_by_nearest_neighbour():
    bg2 = pytest.importorskip("batchgeneratorsv2.transforms.utils.deep_supervision_downsampling")
    outputs, _ = outputs_and_targets(sizes=(12, 6, 3))
    g = torch.Generator().manual_seed(1)
    full = torch.randint(0, 3, (2, 1, 12, 12), generator=g).to(torch.int16)
    # nnU-Net's own transform, applied per sample as in its data loader
    transform = bg2.DownsampleSegForDSTransform(ds_scales=[[1, 1], [0.5, 0.5], [0.25, 0.25]])
    per_sample = [transform(segmentation=full[i])["segmentation"] for i in range(2)]
    nnunet_targets = [torch.stack([s[k] for s in per_sample]) for k in range(3)]
    assert [t.shape[-1] for t in nnunet_targets] == [12, 6, 3] and nnunet_targets[1].dtype == torch.int16
    # and by hand: nearest-exact takes source index floor((i + 0.5) * f) for a size reduction by f
    torch.testing.assert_close(nnunet_targets[1], full[..., 1::2, 1::2], rtol=0, atol=0)
    torch.testing.assert_close(nnunet_targets[2], full[..., 2::4, 2::4], rtol=0, atol=0)
    loss = DeepSupervisionLoss(UnifiedFocalLoss(), weights="exp")
    torch.testing.assert_close(loss(outputs, full), loss(outputs, nnunet_targets), rtol=0, atol=0)
    # one-hot / region targets are resized channel by channel
    regions = torch.rand(2, 3, 12, 12, generator=g) > 0.5
    loss = DeepSupervisionLoss(UnifiedFocalLoss(multilabel=True), weights="exp")
    torch.testing.assert_close(loss(outputs, regions), loss(outputs, [regions, regions[..., 1::2, 1::2],
                                                                       regions[..., 2::4, 2::4]]), rtol=0, atol=0)


def test_zero_weight_outputs_are_not_evaluated():
    calls = []

    class Recording(nn.Module):
        def forward(self, output, target):
            calls.append(output.shape[-1])
            return UnifiedFocalLoss()(output, target)

    outputs, targets = outputs_and_targets(sizes=(8, 4, 2))
    outputs[2] = torch.full_like(outputs[2], float("nan"))  # would raise if evaluated
    value = DeepSupervisionLoss(Recording())(outputs, targets)  # nnunet scheme: last weight 0
    assert calls == [8, 4]
    torch.testing.assert_close(value, (2 * UnifiedFocalLoss()(outputs[0], targets[0]) + UnifiedFocalLoss()(outputs[1], targets[1])) / 3)
    calls.clear()
    DeepSupervisionLoss(Recording(), weights=[0.0, 1.0, 0.0])(outputs, targets)
    assert calls == [4]


def test_single_tensor_is_the_plain_loss():
    outputs, targets = outputs_and_targets()
    inner = UnifiedFocalLoss()
    ds = DeepSupervisionLoss(inner)
    torch.testing.assert_close(ds(outputs[0], targets[0]), inner(outputs[0], targets[0]), rtol=0, atol=0)
    torch.testing.assert_close(ds(outputs[0], targets), inner(outputs[0], targets[0]), rtol=0, atol=0)


def test_keyword_arguments_reach_the_inner_loss():
    # a mask (e.g. an ignore region) with full-size stacked heads goes unchanged to every head
    g = torch.Generator().manual_seed(2)
    stacked = torch.randn(2, 3, 3, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 8, 8), generator=g)
    mask = torch.rand(2, 1, 8, 8, generator=g) > 0.3
    inner = UnifiedFocalLoss()
    expected = sum(w * inner(stacked[:, k], labels, mask=mask) for k, w in enumerate([4 / 7, 2 / 7, 1 / 7]))
    value = DeepSupervisionLoss(inner, weights="exp", stacked_dim=1)(stacked, labels, mask=mask)
    torch.testing.assert_close(value, expected, rtol=1e-14, atol=0)
    assert not torch.isclose(value, DeepSupervisionLoss(inner, weights="exp", stacked_dim=1)(stacked, labels))


# ---------------------------------------------------------------------------------------------------
# Stacked outputs (MONAI DynUNet)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads,c", [(3, 2), (3, 3), (2, 4)])
def test_dynunet_stacked_output(heads, c):
    g = torch.Generator().manual_seed(heads * 10 + c)
    stacked = torch.randn(2, heads, c, 8, 8, generator=g, dtype=torch.float64)  # all heads at full size
    labels = torch.randint(0, c, (2, 1, 8, 8), generator=g)
    inner = UnifiedFocalLoss()
    weights = deep_supervision_weights(heads, "exp")
    expected = sum(w * inner(stacked[:, k], labels) for k, w in enumerate(weights))
    torch.testing.assert_close(DeepSupervisionLoss(inner, weights="exp", stacked_dim=1)(stacked, labels), expected,
                               rtol=1e-14, atol=0)


def test_dynunet_stacked_output_with_heads_equal_to_classes():
    # k + 1 == C: (B, k+1, C, H, W) also parses as a (B, C', D, H, W) volume; handing it straight to the
    # inner loss, as MONAI's DeepSupervisionLoss does, silently computes something else
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(5)
    stacked = torch.randn(2, 3, 3, 6, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 6, 6), generator=g)
    onehot = F.one_hot(labels, 3).movedim(-1, 1)  # (B, C, H, W)
    inner = UnifiedFocalLoss()
    expected = sum(w * inner(stacked[:, k], onehot) for k, w in enumerate([4 / 7, 2 / 7, 1 / 7]))
    ours = DeepSupervisionLoss(inner, weights="exp", stacked_dim=1)(stacked, onehot)
    torch.testing.assert_close(ours, expected, rtol=1e-14, atol=0)
    theirs = monai_losses.DeepSupervisionLoss(inner)(stacked, onehot)  # one-hot read as a label map over "depth"
    assert torch.isfinite(theirs) and not torch.isclose(theirs.double(), ours)


def test_dynunet_training_output_end_to_end():
    monai_nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    net = monai_nets.DynUNet(spatial_dims=2, in_channels=1, out_channels=3, kernel_size=[3, 3, 3, 3],
                             strides=[1, 2, 2, 2], upsample_kernel_size=[2, 2, 2], deep_supervision=True, deep_supr_num=2)
    net.train()
    image = torch.randn(2, 1, 16, 16)
    labels = torch.randint(0, 3, (2, 1, 16, 16))
    out = net(image)
    assert out.shape == (2, 3, 3, 16, 16)  # (B, k+1, C, H, W): k + 1 == C here
    loss = DeepSupervisionLoss(UnifiedFocalLoss(), weights="exp", stacked_dim=1)
    value = loss(out, labels)
    value.backward()
    expected = sum(w * UnifiedFocalLoss()(out[:, k], labels) for k, w in enumerate([4 / 7, 2 / 7, 1 / 7]))
    torch.testing.assert_close(value, expected)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


# ---------------------------------------------------------------------------------------------------
# nnU-Net's DeepSupervisionWrapper
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("inner", [UnifiedFocalLoss(), UnifiedFocalLoss(batch_dice=True, asymmetric=False),
                                   DiceLoss(include_background=False)], ids=["uf", "suf_batch", "dice"])
def test_equals_nnunet_deep_supervision_wrapper(n, inner):
    wrapper_module = pytest.importorskip("nnunetv2.training.loss.deep_supervision")
    outputs, targets = outputs_and_targets(sizes=[16 // 2**i for i in range(n)], ndim=3 if n == 2 else 2)
    weights = nnunet_trainer_weights(n)
    theirs = wrapper_module.DeepSupervisionWrapper(inner, weights)(outputs, targets)
    torch.testing.assert_close(DeepSupervisionLoss(inner)(outputs, targets), theirs, rtol=1e-14, atol=0)
    torch.testing.assert_close(DeepSupervisionLoss(inner, weights=list(weights))(outputs, targets), theirs,
                               rtol=1e-14, atol=0)


def test_nnunet_wrapper_rejects_none_weights():
    # its docstring says "If weights are None, all w will be 1", but the constructor iterates them
    wrapper_module = pytest.importorskip("nnunetv2.training.loss.deep_supervision")
    with pytest.raises(TypeError):
        wrapper_module.DeepSupervisionWrapper(UnifiedFocalLoss(), None)
    outputs, targets = outputs_and_targets()
    ours = DeepSupervisionLoss(UnifiedFocalLoss(), weights=[1, 1, 1])(outputs, targets)
    torch.testing.assert_close(ours, sum(UnifiedFocalLoss()(o, t) for o, t in zip(outputs, targets)), rtol=1e-14, atol=0)


@pytest.mark.parametrize("multilabel", [False, True])
def test_mask_is_downsampled_like_the_target(multilabel):
    """A full-resolution mask goes to each scale resized by nearest neighbour, as the target does."""
    g = torch.Generator().manual_seed(3)
    sizes = [16, 8, 4]
    outputs = [torch.randn(2, 3, s, s, generator=g, dtype=torch.float64) for s in sizes]
    target = (torch.rand(2, 3, 16, 16, generator=g) > 0.6) if multilabel else torch.randint(0, 3, (2, 1, 16, 16), generator=g)
    mask = torch.rand(2, 1, 16, 16, generator=g) > 0.3
    inner = UnifiedFocalLoss(multilabel=multilabel)
    weights = deep_supervision_weights(3)
    expected = sum(w * inner(o, nearest(target, o.shape[2:]), mask=nearest(mask, o.shape[2:]))
                   for w, o in zip(weights, outputs) if w)
    torch.testing.assert_close(DeepSupervisionLoss(inner)(outputs, target, mask=mask), expected, rtol=1e-14, atol=0)
    # a (B, *S) mask and a list of masks, one per scale, are accepted too
    torch.testing.assert_close(DeepSupervisionLoss(inner)(outputs, target, mask=mask[:, 0]), expected,
                               rtol=1e-14, atol=0)
    masks = [nearest(mask, o.shape[2:]) for o in outputs]
    torch.testing.assert_close(DeepSupervisionLoss(inner)(outputs, target, mask=masks), expected, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="3 deep supervision outputs but 2 masks"):
        DeepSupervisionLoss(inner)(outputs, target, mask=masks[:2])


def nearest(tensor, size):
    return F.interpolate(tensor.float(), size=tuple(size), mode="nearest-exact").to(tensor.dtype)


@pytest.mark.parametrize("stacked_dim", ["1", 2, -1, True, 1.0])
def test_stacked_dim_is_the_heads_axis_before_the_classes_checked_at_construction(stacked_dim):
    # axis 2 is the class axis: with as many heads as classes it would silently swap heads and classes
    with pytest.raises(ValueError, match=r"stacked_dim must be 0 or 1 .* got "):
        DeepSupervisionLoss(UnifiedFocalLoss(), stacked_dim=stacked_dim)


def test_a_stacked_dim_that_splits_the_batch_names_the_other_axis():
    g = torch.Generator().manual_seed(6)
    dynunet = torch.randn(2, 3, 3, 6, 6, generator=g)  # (B, k+1, C, H, W), heads = classes = 3
    labels = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    heads_first = dynunet.transpose(0, 1)  # (k+1, B, C, H, W)
    loss = DeepSupervisionLoss(UnifiedFocalLoss(), weights="exp", stacked_dim=1)
    torch.testing.assert_close(DeepSupervisionLoss(UnifiedFocalLoss(), weights="exp", stacked_dim=0)(heads_first, labels),
                               loss(dynunet, labels), rtol=1e-6, atol=0)
    compiled = torch.compile(loss, backend="eager")
    for function in (loss, compiled):
        with pytest.raises(ValueError, match=r"stacked_dim=1 splits the stacked output \(3, 2, 3, 6, 6\) into 2 heads "
                                             r"of batch size 3, but the target has 2 samples"):
            function(heads_first, labels)
