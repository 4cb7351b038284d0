"""Input validation (every bad input names its problem) and the accepted target forms."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unifocal.losses import (
    AsymmetricFocalTverskyLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    HybridFocalLoss,
    SymmetricFocalLoss,
    TverskyLoss,
    UnifiedFocalLoss,
    deep_supervision_weights,
    unified_focal_loss,
)


def case(b=2, c=3, spatial=(4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, *spatial, generator=g), torch.randint(0, c, (b, 1, *spatial), generator=g)


# ---------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------


def test_spatial_shape_mismatch():
    x, y = case()
    with pytest.raises(ValueError, match=r"target shape \(2, 1, 4, 6\) does not match input shape \(2, 3, 4, 5\)"):
        UnifiedFocalLoss()(x, torch.zeros(2, 1, 4, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match input shape"):
        UnifiedFocalLoss()(x, torch.zeros(2, 4, 5, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match input shape"):  # 2 channels: neither label map nor one-hot
        UnifiedFocalLoss()(x, torch.zeros(2, 2, 4, 5))


def test_batch_size_mismatch():
    x, y = case()
    with pytest.raises(ValueError, match="batch size mismatch: input has 2 samples, target has 3"):
        UnifiedFocalLoss()(x, torch.zeros(3, 1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size mismatch"):
        DiceLoss()(x, torch.zeros(1, 4, 5, dtype=torch.long))


def test_input_rank_and_dtype():
    with pytest.raises(ValueError, match="at least one spatial dim"):
        UnifiedFocalLoss()(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        UnifiedFocalLoss()(torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        UnifiedFocalLoss()(torch.randn(2, 3, 4).numpy(), torch.zeros(2, 1, 4, dtype=torch.long))


def test_fewer_than_two_channels_in_exclusive_mode():
    x = torch.randn(2, 1, 4, 4)
    y = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="at least 2 channels.*multilabel=True"):
        UnifiedFocalLoss()(x, y)
    with pytest.raises(ValueError, match="at least 2 channels"):
        CrossEntropyLoss()(x, y)
    # a single sigmoid channel is fine in multilabel mode
    assert torch.isfinite(UnifiedFocalLoss(multilabel=True)(x, y))


def test_multilabel_needs_a_channel_per_input_channel():
    x, y = case()
    with pytest.raises(ValueError, match="multilabel=True expects a \\(B, C, \\*S\\) 0/1 target"):
        UnifiedFocalLoss(multilabel=True)(x, y)


def test_mask_shape():
    x, y = case()
    with pytest.raises(ValueError, match=r"mask shape \(2, 1, 4, 4\) does not match \(2, 1, 4, 5\)"):
        UnifiedFocalLoss()(x, y, mask=torch.ones(2, 1, 4, 4))


# ---------------------------------------------------------------------------------------------------
# Target values
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [3, -1, 100])
def test_labels_outside_the_classes(bad):
    x, y = case()
    y = y.clone()
    y[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=rf"target label values must lie in \[0, 3\); found {bad}.*set ignore_index"):
        UnifiedFocalLoss()(x, y)
    with pytest.raises(ValueError, match=rf"\[0, 3\) or equal ignore_index=255; found {bad}"):
        UnifiedFocalLoss(ignore_index=255)(x, y)
    # the ignore index itself is allowed, even outside [0, C)
    assert torch.isfinite(UnifiedFocalLoss(ignore_index=bad)(x, y))


def test_fractional_float_labels():
    x, y = case()
    y = y.float()
    y[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match="integer class indices; found fractional values"):
        UnifiedFocalLoss()(x, y)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_inf_in_input_or_target(value):
    x, y = case()
    bad_x = x.clone()
    bad_x[0, 1, 2, 2] = value
    with pytest.raises(ValueError, match="input contains NaN or Inf"):
        UnifiedFocalLoss()(bad_x, y)
    with pytest.raises(ValueError, match="input contains NaN or Inf"):
        DiceLoss(from_logits=False)(bad_x, y)
    bad_y = y.float()
    bad_y[1, 0, 0, 0] = value
    with pytest.raises(ValueError, match="target contains NaN or Inf"):
        UnifiedFocalLoss()(x, bad_y)
    dense = F.one_hot(y[:, 0], 3).movedim(-1, 1).float()
    dense[0, 0, 0, 0] = value
    with pytest.raises(ValueError, match="target contains NaN or Inf"):
        UnifiedFocalLoss()(x, dense)
    with pytest.raises(ValueError, match="target contains NaN or Inf"):
        UnifiedFocalLoss(multilabel=True)(x, dense)


def test_dense_target_outside_unit_interval():
    x, y = case()
    dense = F.one_hot(y[:, 0], 3).movedim(-1, 1) * 2
    with pytest.raises(ValueError, match=r"one-hot/soft \(B, C, \*S\) target must hold values in \[0, 1\]; found \[0, 2\]"):
        UnifiedFocalLoss()(x, dense)
    with pytest.raises(ValueError, match=r"must hold values in \[0, 1\]"):
        UnifiedFocalLoss(multilabel=True)(x, dense - 1)


def test_probabilities_outside_unit_interval():
    x, y = case()
    with pytest.raises(ValueError, match=r"from_logits=False expects probabilities in \[0, 1\].*from_logits=True"):
        UnifiedFocalLoss(from_logits=False)(x, y)
    with pytest.raises(ValueError, match=r"expects probabilities in \[0, 1\]"):
        UnifiedFocalLoss(from_logits=False, multilabel=True)(x.sigmoid() * 1.1, y.expand(-1, 3, -1, -1))


def test_probabilities_not_summing_to_one():
    x, y = case()
    p = x.softmax(1)
    p[0, :, 0, 0] *= 0.9
    with pytest.raises(ValueError, match="sum to 1 over the class axis.*deviate by up to 0.1"):
        UnifiedFocalLoss(from_logits=False)(p, y)
    # sigmoid outputs need not sum to 1 in multilabel mode
    assert torch.isfinite(UnifiedFocalLoss(from_logits=False, multilabel=True)(x.sigmoid(), (y > 0).expand(-1, 3, -1, -1)))
    # half-precision softmax round-off is tolerated
    assert torch.isfinite(UnifiedFocalLoss(from_logits=False)(x.softmax(1).half(), y))


def test_ignore_index_needs_a_label_map():
    x, y = case()
    dense = F.one_hot(y[:, 0], 3).movedim(-1, 1)
    with pytest.raises(ValueError, match="ignore_index applies to exclusive label-map targets.*mask="):
        UnifiedFocalLoss(ignore_index=255)(x, dense)
    with pytest.raises(ValueError, match="ignore_index applies to exclusive label-map targets"):
        UnifiedFocalLoss(ignore_index=255, multilabel=True)(x, dense)


# ---------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.1, 1.1, math.nan])
def test_delta_and_weight_outside_unit_interval(value):
    with pytest.raises(ValueError, match=r"delta must lie in \[0, 1\]"):
        UnifiedFocalLoss(delta=value)
    with pytest.raises(ValueError, match=r"weight \(lambda\) must lie in \[0, 1\]"):
        UnifiedFocalLoss(weight=value)
    with pytest.raises(ValueError, match=r"delta must lie in \[0, 1\]"):
        AsymmetricFocalTverskyLoss(delta=value)
    with pytest.raises(ValueError, match=r"delta must lie in \[0, 1\]"):
        HybridFocalLoss(focal_delta=value)
    with pytest.raises(ValueError, match=r"weight \(lambda\) must lie in \[0, 1\]"):
        HybridFocalLoss(weight=value)
    x, y = case()
    with pytest.raises(ValueError, match=r"delta must lie in \[0, 1\]"):
        unified_focal_loss(x, y, delta=value)


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.2, (0.5, 1.0, 0.5)])
def test_gamma_outside_tversky_range(gamma):
    # where gamma sets the Tversky exponent 1 - gamma, it must lie in [0, 1)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\) \(it sets the Tversky exponent 1 - gamma\)"):
        UnifiedFocalLoss(gamma=gamma)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\)"):
        AsymmetricFocalTverskyLoss(gamma=gamma)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\)"):
        HybridFocalLoss(tversky_gamma=gamma if not isinstance(gamma, tuple) else 1.0)


def test_gamma_of_the_focal_part_alone():
    # weight = 1 has no Tversky part: any gamma >= 0 (Lin's gamma = 2)
    assert UnifiedFocalLoss(weight=1.0, gamma=2.0).options["gamma"] == 2.0
    assert HybridFocalLoss(focal_gamma=3.0).options["focal_gamma"] == 3.0
    for make in (lambda: UnifiedFocalLoss(weight=1.0, gamma=-1.0), lambda: SymmetricFocalLoss(gamma=-0.5),
                 lambda: FocalLoss(gamma=-1.0), lambda: UnifiedFocalLoss(weight=1.0, gamma=math.inf)):
        with pytest.raises(ValueError, match=r"gamma must lie in \[0, inf\)"):
            make()


def test_per_class_gamma_length():
    x, y = case()
    with pytest.raises(ValueError, match="gamma has 2 values but the input has 3 channels"):
        UnifiedFocalLoss(gamma=(0.5, 0.5))(x, y)
    with pytest.raises(ValueError, match="gamma has 6 values but the input has 3 channels"):
        UnifiedFocalLoss(gamma=(0.5,) * 6, multilabel=True)(x, (y > 0).expand(-1, 3, -1, -1))


def test_class_sets():
    with pytest.raises(ValueError, match=r"common_classes \(0, 1\) and rare_classes \(1, 2\) overlap: \[1\]"):
        UnifiedFocalLoss(common_classes=(0, 1), rare_classes=(1, 2))
    with pytest.raises(ValueError, match="must hold distinct non-negative class indices"):
        UnifiedFocalLoss(rare_classes=(1, 1))
    with pytest.raises(ValueError, match="must hold distinct non-negative class indices"):
        UnifiedFocalLoss(common_classes=(-1,))
    x, y = case()
    with pytest.raises(ValueError, match=r"rare_classes=\(1, 5\) names a class the input lacks \(it has 3 channels\)"):
        UnifiedFocalLoss(rare_classes=(1, 5))(x, y)
    with pytest.raises(ValueError, match=r"common_classes=\(3,\) names a class the input lacks"):
        UnifiedFocalLoss(common_classes=(3,))(x, y)
    with pytest.raises(ValueError, match=r"classes \[2\] are neither common nor rare"):
        UnifiedFocalLoss(common_classes=(0,), rare_classes=(1,))(x, y)
    with pytest.raises(ValueError, match="apply to exclusive classes"):
        UnifiedFocalLoss(rare_classes=(1,), multilabel=True)
    with pytest.raises(ValueError, match="apply to exclusive classes"):
        unified_focal_loss(x, (y > 0).expand(-1, 3, -1, -1), rare_classes=(1,), multilabel=True)


@pytest.mark.parametrize(
    "make",
    [UnifiedFocalLoss, HybridFocalLoss, DiceLoss, TverskyLoss, FocalLoss, CrossEntropyLoss, AsymmetricFocalTverskyLoss],
)
def test_bad_reduction(make):
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\); got 'avg'"):
        make(reduction="avg")


def test_bad_reduction_functional():
    x, y = case()
    with pytest.raises(ValueError, match="reduction must be one of"):
        unified_focal_loss(x, y, reduction="batchmean")


def test_smooth_and_region_weights():
    with pytest.raises(ValueError, match="smooth must be > 0"):
        UnifiedFocalLoss(smooth=0.0)
    with pytest.raises(ValueError, match="smooth must be > 0"):
        DiceLoss(smooth=-1.0)
    with pytest.raises(ValueError, match="alpha \\(FP weight\\) and beta \\(FN weight\\) must be >= 0 and not both 0"):
        TverskyLoss(alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        FocalTverskyLoss(gamma=0.0)


# ---------------------------------------------------------------------------------------------------
# Accepted target forms: all give the same loss
# ---------------------------------------------------------------------------------------------------

LOSSES = [
    UnifiedFocalLoss(),
    UnifiedFocalLoss(asymmetric=False, batch_dice=True, gamma=(0.2, 0.4, 0.6)),
    HybridFocalLoss(),
    DiceLoss(),
    FocalLoss(alpha=0.3),
    CrossEntropyLoss(),
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda m: type(m).__name__)
def test_label_dtypes_and_shapes_give_the_same_loss(loss):
    x, y = case(c=3)
    reference = loss(x, y)
    forms = []
    for dtype in (torch.int16, torch.int32, torch.int64, torch.uint8, torch.int8, torch.float16, torch.float32,
                  torch.float64):
        forms += [y.to(dtype), y[:, 0].to(dtype)]
    for target in forms:  # every label map takes the same path: bitwise equal
        torch.testing.assert_close(loss(x, target), reference, rtol=0, atol=0)
    onehot = F.one_hot(y[:, 0], 3).movedim(-1, 1)
    dense = [onehot, onehot.bool(), onehot.to(torch.uint8), onehot.float(), onehot.double(), onehot.half()]
    for target in dense:  # one-hot targets: the same loss to float32 round-off
        torch.testing.assert_close(loss(x, target), reference, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(loss(x, target), loss(x, dense[0]), rtol=0, atol=0)


@pytest.mark.parametrize("loss", [LOSSES[0], LOSSES[2], LOSSES[3]], ids=lambda m: type(m).__name__)
def test_bool_label_map_with_two_classes(loss):
    x, y = case(c=2)
    reference = loss(x, y)
    for target in (y.bool(), y[:, 0].bool()):
        torch.testing.assert_close(loss(x, target), reference, rtol=0, atol=0)
    onehot = F.one_hot(y[:, 0], 2).movedim(-1, 1).bool()
    torch.testing.assert_close(loss(x, onehot), reference, rtol=1e-6, atol=1e-7)


def test_multilabel_target_dtypes():
    x, _ = case()
    y = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    loss = UnifiedFocalLoss(multilabel=True)
    reference = loss(x, y)
    for dtype in (torch.uint8, torch.int16, torch.int64, torch.float16, torch.float32):
        torch.testing.assert_close(loss(x, y.to(dtype)), reference, rtol=0, atol=0)
    # one channel: a (B, *S) map is also accepted
    x1 = x[:, :1]
    torch.testing.assert_close(loss(x1, y[:, 0]), loss(x1, y[:, :1]), rtol=0, atol=0)


def test_ignore_index_with_uint8_labels():
    x, y = case()
    y = y.to(torch.uint8)
    y[0, 0, 0, :] = 255
    mask = y != 255
    expected = UnifiedFocalLoss()(x, y.masked_fill(~mask, 0), mask=mask)
    torch.testing.assert_close(UnifiedFocalLoss(ignore_index=255)(x, y), expected, rtol=0, atol=0)
    torch.testing.assert_close(UnifiedFocalLoss(ignore_index=255)(x, y.long()), expected, rtol=0, atol=0)


def test_soft_targets_are_accepted():
    x, y = case()
    soft = F.one_hot(y[:, 0], 3).movedim(-1, 1).float() * 0.8 + 0.2 / 3  # label smoothing
    assert torch.isfinite(UnifiedFocalLoss()(x, soft))
    assert not torch.isclose(UnifiedFocalLoss()(x, soft), UnifiedFocalLoss()(x, y))


def test_probability_looking_input_with_from_logits_is_treated_as_logits():
    x, y = case()
    p = x.softmax(1)  # already probabilities, but from_logits=True (the default): softmax is applied again
    as_logits = UnifiedFocalLoss()(p, y)
    torch.testing.assert_close(as_logits, UnifiedFocalLoss(from_logits=False)(p.softmax(1), y))
    assert not torch.isclose(as_logits, UnifiedFocalLoss(from_logits=False)(p, y))
    # no warning or guess: a valid probability map is a valid logit map
    q = torch.sigmoid(x)
    torch.testing.assert_close(UnifiedFocalLoss(multilabel=True)(q, (y > 0).expand(-1, 3, -1, -1)),
                               UnifiedFocalLoss(multilabel=True, from_logits=False)(q.sigmoid(), (y > 0).expand(-1, 3, -1, -1)))


def test_input_dtypes_are_computed_in_float32():
    x, y = case()
    reference = UnifiedFocalLoss()(x, y)
    for dtype in (torch.float16, torch.bfloat16):
        value = UnifiedFocalLoss()(x.to(dtype), y)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, UnifiedFocalLoss()(x.to(dtype).float(), y), rtol=0, atol=0)
        torch.testing.assert_close(value, reference, rtol=0.02, atol=0.02)
    assert UnifiedFocalLoss()(x.double(), y).dtype == torch.float64


# ---------------------------------------------------------------------------------------------------
# Settings: checked once, at construction, with the argument's name; nothing is coerced
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: UnifiedFocalLoss(rare_classes="12"), "rare_classes must be a list of class indices"),
    (lambda: UnifiedFocalLoss(rare_classes=(1.7,)), r"rare_classes\[0\] must be an integer label"),
    (lambda: UnifiedFocalLoss(common_classes=(True,)), r"common_classes\[0\] must be an integer label"),
    (lambda: UnifiedFocalLoss(ignore_index=True), "ignore_index must be an integer label value"),
    (lambda: CrossEntropyLoss(ignore_index=2.0), "ignore_index must be an integer label value"),
    (lambda: TverskyLoss(smooth=math.inf), "smooth must be > 0 and finite"),
    (lambda: UnifiedFocalLoss(smooth=math.inf), "smooth must be > 0 and finite"),
    (lambda: CrossEntropyLoss(class_weight=[1.0, math.nan, 1.0]), "class_weight must lie in"),
    (lambda: CrossEntropyLoss(class_weight=[1.0, math.inf, 1.0]), "class_weight must lie in"),
    (lambda: CrossEntropyLoss(class_weight=[1.0, -0.5, 1.0]), "class_weight must lie in"),
    (lambda: CrossEntropyLoss(class_weight="1,2,3"), "class_weight must be a non-empty list of numbers"),
    (lambda: UnifiedFocalLoss(batch_dice="false"), "batch_dice must be a boolean .*Pass a boolean"),
    (lambda: DiceLoss(include_background=0), "include_background must be a boolean"),
    (lambda: UnifiedFocalLoss(multilabel="true"), "multilabel must be a boolean"),
    (lambda: UnifiedFocalLoss(ddp="yes"), "ddp must be a boolean"),
    (lambda: UnifiedFocalLoss(delta="0.6"), "delta must be a number"),
    (lambda: UnifiedFocalLoss(weight=True), r"weight \(lambda\) must be a number"),
    (lambda: FocalLoss(gamma=[2.0, "x"]), "gamma must be a number"),
    (lambda: UnifiedFocalLoss(reduction="avg"), "reduction must be one of"),
])
def test_settings_are_validated_at_construction_without_coercion(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_deep_supervision_weights_must_be_finite_with_a_finite_sum():
    for weights in ([1.0, math.inf, 0.0], [1.0, math.nan, 0.0], [1e308, 1e308, 0.0]):
        with pytest.raises(ValueError, match="deep supervision weights"):
            DeepSupervisionLoss(UnifiedFocalLoss(), weights=weights)
        with pytest.raises(ValueError, match="deep supervision weights"):
            deep_supervision_weights(3, weights)
    with pytest.raises(ValueError, match="deep supervision weights must be a number"):
        DeepSupervisionLoss(UnifiedFocalLoss(), weights=[1.0, "0.5"])


def test_numpy_settings_are_accepted():
    x, y = case()
    loss = UnifiedFocalLoss(gamma=np.array([0.2, 0.5, 0.5]), rare_classes=np.array([1, 2]), batch_dice=np.bool_(True))
    assert loss.options["gamma"] == (0.2, 0.5, 0.5) and loss.options["rare_classes"] == (1, 2)
    torch.testing.assert_close(loss(x, y), UnifiedFocalLoss(gamma=(0.2, 0.5, 0.5), rare_classes=(1, 2),
                                                            batch_dice=True)(x, y))


# ---------------------------------------------------------------------------------------------------
# Class-weighted cross entropy: torch's weighted mean
# ---------------------------------------------------------------------------------------------------
def test_class_weighted_cross_entropy_is_torch_weighted_mean():
    x, y = case(b=3, c=3, spatial=(6, 7), seed=4)
    x = x.double()
    weight = torch.tensor([0.2, 1.0, 3.0], dtype=torch.float64)
    expected = F.cross_entropy(x, y[:, 0], weight=weight)
    torch.testing.assert_close(CrossEntropyLoss(class_weight=(0.2, 1.0, 3.0))(x, y), expected, rtol=1e-12, atol=0)
    # the gap to a division by the voxel count is far from round-off for such weights
    assert abs(float(expected - (F.cross_entropy(x, y[:, 0], weight=weight, reduction="sum") / y.numel()))) > 0.1
    # with an ignore label, as torch's ignore_index
    ignored = y.masked_fill(torch.rand(y.shape, generator=torch.Generator().manual_seed(1)) < 0.3, 7)
    torch.testing.assert_close(CrossEntropyLoss(class_weight=(0.2, 1.0, 3.0), ignore_index=7)(x, ignored),
                               F.cross_entropy(x, ignored[:, 0], weight=weight, ignore_index=7), rtol=1e-12, atol=0)
    # the CE part of DiceCELoss too
    torch.testing.assert_close(DiceCELoss(class_weight=(0.2, 1.0, 3.0), dice_weight=0.0)(x, y), expected,
                               rtol=1e-12, atol=0)
    # per sample ("none"): each sample's weighted mean
    per_sample = torch.stack([F.cross_entropy(x[i : i + 1], y[i : i + 1, 0], weight=weight) for i in range(3)])
    torch.testing.assert_close(CrossEntropyLoss(class_weight=(0.2, 1.0, 3.0), reduction="none")(x, y), per_sample,
                               rtol=1e-12, atol=0)


def _onehot(labels, classes=3):
    return F.one_hot(labels[:, 0], classes).movedim(-1, 1).float()


@pytest.mark.parametrize("fault", ["empty", "multi-hot"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_a_one_hot_target_of_exclusive_classes_has_one_class_per_counted_voxel(fault, dtype):
    """Exclusive classes: a dense target is a distribution over the classes at every counted voxel (one-hot, or
    soft as label smoothing makes it). An empty or multi-hot voxel is an error, eager and compiled; at an
    ignored voxel (mask 0) anything goes; with multilabel=True channels are independent."""
    x, labels = case()
    target = _onehot(labels)
    target[1, :, 2, 3] = 0.0 if fault == "empty" else 1.0
    target = target.to(dtype)
    loss = DiceLoss()
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    for function, error in ((loss, ValueError), (compiled, RuntimeError)):
        with pytest.raises(error, match=r"target with exclusive classes must sum to 1 over the class axis \(dim 1\) "
                                        r"at every counted voxel"):
            function(x, target)
    mask = torch.ones(2, 1, 4, 5)
    mask[1, 0, 2, 3] = 0
    expected = DiceLoss()(x, labels, mask=mask)
    torch.testing.assert_close(loss(x, target, mask=mask), expected)
    torch.testing.assert_close(compiled(x, target, mask=mask), expected)
    assert torch.isfinite(DiceLoss(multilabel=True)(x, target))


def test_a_soft_target_that_sums_to_one_is_accepted_as_given():
    x, labels = case()
    smoothed = _onehot(labels) * 0.9 + 0.1 / 3  # label smoothing
    expected = 0.9 * CrossEntropyLoss()(x, labels) + 0.1 * -F.log_softmax(x, 1).mean(1).mean()
    torch.testing.assert_close(CrossEntropyLoss()(x, smoothed), expected)
    with pytest.raises(ValueError, match=r"deviates by up to 0.1"):
        CrossEntropyLoss()(x, smoothed * 0.9)


def test_a_nan_mask_is_an_error_eager_and_compiled():
    x, labels = case()
    mask = torch.ones(2, 1, 4, 5)
    mask[0, 0, 1, 1] = float("nan")
    loss = UnifiedFocalLoss()
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    for function, error in ((loss, ValueError), (compiled, RuntimeError)):
        with pytest.raises(error, match="mask contains NaN values"):
            function(x, labels, mask=mask)
