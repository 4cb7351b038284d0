"""Every exported loss on the inputs real pipelines produce.

A property test (hypothesis) draws a loss of ``unifocal.losses`` (plain or in a DeepSupervisionLoss), a
batch of 1D-3D spatial shape, an input dtype (float16/bfloat16/float32/float64), a target form (label map
of any integer dtype, one-hot, multilabel regions) and a memory layout for each tensor (Fortran order,
permuted strides, channels_last, a strided slice, a batch-expanded view). The loss and its gradient must
equal the same loss on contiguous float64 copies (int64 labels) of the same values, or the call must raise
the same ValueError/TypeError as that reference: never a different value, never an error from inside torch.
Regression tests for the individual failures follow.
"""

import inspect

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import unifocal.losses as losses
from unifocal.losses import (
    AsymmetricUnifiedFocalLoss,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
)

LOSSES = sorted(
    name for name in losses.__all__
    if inspect.isclass(getattr(losses, name)) and issubclass(getattr(losses, name), nn.Module)
    and name != "DeepSupervisionLoss"
)


# Valid constructor options of each loss (besides from_logits/multilabel/ignore_index/reduction); a callable
# entry takes the number of input channels. A loss without an entry runs with its defaults.
OPTIONS = {
    "AsymmetricFocalLoss": [{}, {"delta": 0.25, "gamma": 0.5}],
    "AsymmetricFocalTverskyLoss": [{}, {"delta": 0.4, "gamma": 0.5, "smooth": 1e-5}],
    "AsymmetricUnifiedFocalLoss": [{}, {"weight": 0.3, "delta": 0.7, "gamma": 0.2, "batch_dice": True}],
    "BalancedCrossEntropyLoss": [{}, {"beta": 0.4}],
    "BoundaryLoss": [{}],
    "ComboLoss": [{}, {"ce_weight": 0.3, "beta": 0.6, "batch_dice": True}],
    "CrossEntropyLoss": [{}, lambda c: {"class_weight": [0.5 + i for i in range(c)]}],
    "DiceCELoss": [{}, lambda c: {"dice_weight": 0.5, "class_weight": [1.0 + i for i in range(c)],
                                   "include_background": False, "batch_dice": True}],
    "DiceLoss": [{}, {"squared": True, "include_background": False, "smooth": 1e-5}, {"batch_dice": True}],
    "DistancePenalizedCELoss": [{}],
    "ExponentialLogarithmicLoss": [{}, {"gamma_dice": 0.5, "gamma_ce": 0.5, "batch_dice": True}],
    "FocalLoss": [{}, {"gamma": 0.5, "alpha": 0.25}],
    "FocalTverskyLoss": [{}, {"alpha": 0.5, "beta": 0.5, "gamma": 0.75, "include_background": False}],
    "GeneralizedDiceLoss": [{}, {"batch_dice": True}],
    "HausdorffDTLoss": [{}, {"alpha": 1.0, "include_background": False}],
    "HybridFocalLoss": [{}, {"weight": 0.3, "focal_gamma": 0.5, "tversky_gamma": 0.5, "batch_dice": True}],
    "JaccardLoss": [{}, {"batch_dice": True}],
    "LogCoshDiceLoss": [{}, {"squared": True}],
    "SensitivitySpecificityLoss": [{}, {"sensitivity_weight": 0.5, "include_background": False}],
    "ShapeAwareLoss": [{}],
    "SymmetricFocalLoss": [{}, {"delta": 0.4, "gamma": 0.5}],
    "SymmetricFocalTverskyLoss": [{}, {"delta": 0.4, "gamma": 0.5}],
    "SymmetricUnifiedFocalLoss": [{}, {"weight": 0.7, "gamma": 0.3}],
    "TverskyLoss": [{}, {"alpha": 0.7, "beta": 0.3, "batch_dice": True}],
    "UnifiedFocalLoss": [{}, lambda c: {"gamma": [0.1 * (i + 1) for i in range(c)], "asymmetric": False},
                         {"rare_classes": (1,)}],
    "WeightedCrossEntropyLoss": [{}, {"beta": 0.5}],
}

INPUT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
LABEL_DTYPES = [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64]
LAYOUTS = ["fortran", "permuted", "channels_last", "sliced", "expanded", "contiguous"]
# (value, gradient) tolerance relative to the largest reference magnitude: float64 input is computed in
# float64, everything else in float32 (the gradient is returned in the input dtype)
TOLERANCE = {torch.float64: (1e-9, 1e-9), torch.float32: (2e-5, 1e-4), torch.float16: (2e-5, 2e-3),
             torch.bfloat16: (2e-5, 1.6e-2)}


def test_options_name_only_exported_losses():
    assert set(OPTIONS) <= set(LOSSES)


def arrange(tensor, layout, rng):
    """A tensor with ``tensor``'s values (the batch-expanded layout: its first sample's) in ``layout``."""
    reverse = tuple(range(tensor.ndim))[::-1]
    if layout == "contiguous":
        return tensor.contiguous()
    if layout == "fortran" or (layout == "channels_last" and tensor.ndim not in (4, 5)):
        return tensor.permute(reverse).contiguous().permute(reverse)
    if layout == "channels_last":
        return tensor.contiguous(memory_format=torch.channels_last if tensor.ndim == 4 else torch.channels_last_3d)
    if layout == "permuted":
        order = rng.permutation(tensor.ndim)
        return tensor.permute(*order).contiguous().permute(*np.argsort(order))
    if layout == "sliced":
        wide = tensor.new_zeros(*tensor.shape[:-1], 2 * tensor.shape[-1])
        wide[..., ::2] = tensor
        return wide[..., ::2]
    return tensor[:1].expand_as(tensor)


@st.composite
def cases(draw):
    name = draw(st.sampled_from(LOSSES))
    mode = draw(st.sampled_from(["labels", "onehot", "multilabel"]))
    channels = draw(st.integers(1 if mode == "multilabel" else 2, 4))
    options = draw(st.sampled_from(OPTIONS.get(name, [{}])))
    options = dict(options(channels) if callable(options) else options)
    dtype = draw(st.sampled_from(INPUT_DTYPES))
    # probabilities rounded to half precision no longer sum to 1 within the float64 reference's tolerance
    options["from_logits"] = dtype in (torch.float16, torch.bfloat16) or draw(st.sampled_from([True, True, False]))
    options["multilabel"] = mode == "multilabel"
    options["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    spatial = tuple(draw(st.lists(st.integers(2, 5), min_size=1, max_size=3)))
    case = dict(
        name=name, mode=mode, channels=channels, options=options, dtype=dtype,
        batch=draw(st.sampled_from([2, 1])), spatial=spatial,
        label_dtype=draw(st.sampled_from(LABEL_DTYPES)),
        target_dtype=draw(st.sampled_from([torch.bool, torch.uint8, torch.float32, dtype])),
        channel_axis=draw(st.booleans()),
        layouts={part: draw(st.sampled_from(LAYOUTS)) for part in ("input", "target", "mask")},
        deep_supervision=draw(st.sampled_from([False, True, False])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    if mode == "labels" and draw(st.sampled_from([True, False])):
        info = torch.iinfo(case["label_dtype"])
        ignore = draw(st.sampled_from([v for v in (-1, channels, 100, 255) if info.min <= v <= info.max]))
        options["ignore_index"] = ignore
    case["mask"] = not case["deep_supervision"] and draw(st.sampled_from([True, False]))
    case["mask_dtype"] = draw(st.sampled_from([torch.bool, torch.uint8, torch.float32]))
    return case


def make_inputs(case):
    """(input, target, mask) as the case lays them out, input requiring grad; mask None if not drawn."""
    g = torch.Generator().manual_seed(case["seed"])
    rng = np.random.default_rng(case["seed"])
    b, c, spatial, layouts = case["batch"], case["channels"], case["spatial"], case["layouts"]
    logits = torch.randn(b, c, *spatial, generator=g, dtype=torch.float64) * 3
    if not case["options"]["from_logits"]:
        logits = torch.sigmoid(logits) if case["mode"] == "multilabel" else torch.softmax(logits, 1)
    input = arrange(logits.to(case["dtype"]).requires_grad_(), layouts["input"], rng)
    if case["mode"] == "labels":
        labels = torch.randint(0, c, (b, 1, *spatial), generator=g)
        ignore = case["options"].get("ignore_index")
        if ignore is not None:
            labels[torch.rand(labels.shape, generator=g) < 0.2] = ignore
        target = labels.to(case["label_dtype"])
        if not case["channel_axis"]:
            target = target[:, 0]
    elif case["mode"] == "onehot":
        target = nn.functional.one_hot(torch.randint(0, c, (b, *spatial), generator=g), c).movedim(-1, 1)
        target = target.to(case["target_dtype"])
    else:
        target = (torch.rand(b, c, *spatial, generator=g) < 0.4).to(case["target_dtype"])
    target = arrange(target, layouts["target"], rng)
    mask = None
    if case["mask"]:
        mask = (torch.rand(b, 1, *spatial, generator=g) < 0.7).to(case["mask_dtype"])
        mask = arrange(mask if case["channel_axis"] else mask[:, 0], layouts["mask"], rng)
    return input, target, mask


def reference(tensor, integer):
    """A contiguous float64 (or int64) copy of ``tensor``'s values."""
    return tensor.detach().to(torch.int64 if integer else torch.float64).contiguous()


def raised_by_unifocal(error):
    """Whether ``error`` was raised by the project's own checks (a message written for the user)."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    return "unifocal" in frame.tb_frame.f_code.co_filename and bool(str(error))


def evaluate(loss, input, target, mask, deep_supervision):
    """(loss value, d loss / d input) or the ValueError/TypeError the call raised."""
    outputs = input
    if deep_supervision:  # a second, coarser output of the same values
        coarse = input[(slice(None), slice(None), *(slice(None, None, 2) for _ in input.shape[2:]))]
        outputs = [input, coarse]
    try:
        value = loss(outputs, target) if mask is None else loss(outputs, target, mask=mask)
        (grad,) = torch.autograd.grad(value.sum(), input)
    except (ValueError, TypeError) as error:
        assert raised_by_unifocal(error), f"an error from inside torch or a library: {error!r}"
        return error
    return value.detach().double(), grad.double()


def check(case):
    loss = getattr(losses, case["name"])(**case["options"])
    if case["deep_supervision"]:
        loss = DeepSupervisionLoss(loss, weights="exp")
    input, target, mask = make_inputs(case)
    got = evaluate(loss, input, target, mask, case["deep_supervision"])
    ref_input = reference(input, False).requires_grad_()
    ref_target = reference(target, case["mode"] == "labels")
    expected = evaluate(loss, ref_input, ref_target, None if mask is None else reference(mask, False),
                        case["deep_supervision"])
    if isinstance(expected, Exception):
        assert (type(got), str(got)) == (type(expected), str(expected)), f"reference: {expected!r}, case: {got!r}"
        return
    assert not isinstance(got, Exception), f"the contiguous float64 reference gives a loss, the case raised {got!r}"
    value_tol, grad_tol = TOLERANCE[case["dtype"]]
    (value, grad), (ref_value, ref_grad) = got, expected
    torch.testing.assert_close(value, ref_value, rtol=value_tol, atol=value_tol * float(ref_value.abs().max()) + 1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=grad_tol * float(ref_grad.abs().max()) + 1e-12)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_loss_on_real_inputs_equals_the_contiguous_float64_loss(case):
    check(case)


def _batch(classes=3, spatial=(4, 5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, *spatial, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (2, *spatial), generator=g)
    return logits, labels


@pytest.mark.parametrize("cls", [AsymmetricUnifiedFocalLoss, DiceLoss, CrossEntropyLoss])
def test_fortran_ordered_label_map_with_ignore_index(cls):
    """A label map as nibabel returns it (Fortran order), with an ignore label: same loss and gradient as
    the C-ordered map (it raised 'view size is not compatible' in the fused statistics)."""
    logits, labels = _batch()
    labels[0, :2] = 2
    fortran = torch.from_numpy(np.asfortranarray(labels.numpy()))
    assert not fortran.is_contiguous()
    results = []
    for target in (labels, fortran):
        x = logits.clone().requires_grad_()
        value = cls(ignore_index=2)(x, target)
        value.backward()
        results.append((value.detach(), x.grad))
    torch.testing.assert_close(results[1], results[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [AsymmetricUnifiedFocalLoss, TverskyLoss, FocalLoss])
def test_strided_mask(cls):
    logits, labels = _batch()
    mask = torch.rand(2, 4, 5, 6, generator=torch.Generator().manual_seed(1)) < 0.6
    strided = torch.from_numpy(np.asfortranarray(mask.numpy()))
    expected = cls()(logits, labels, mask=mask)
    torch.testing.assert_close(cls()(logits, labels, mask=strided), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cls()(logits, labels, mask=mask.transpose(1, 2).contiguous().transpose(1, 2)),
                               expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [AsymmetricUnifiedFocalLoss, DiceLoss, CrossEntropyLoss])
@pytest.mark.parametrize("dtype, classes", [(torch.uint8, 300), (torch.int8, 200)])
def test_narrow_label_dtype_with_more_classes_than_it_holds(cls, dtype, classes):
    """Class indices beyond the label dtype's range never match a label (uint8: class 256 + k matched
    label k, giving a wrong loss)."""
    logits, labels = _batch(classes, (3, 4))
    labels = labels % (torch.iinfo(dtype).max + 1)
    labels[0, 0, :3] = torch.tensor([0, 4, 44])  # labels whose wrapped twins (256 + k) exist for uint8
    torch.testing.assert_close(cls()(logits, labels.to(dtype)), cls()(logits, labels), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, stray, ignore_index", [(torch.uint8, 255, -1), (torch.uint8, 255, 511),
                                                        (torch.int8, -1, 255)])
def test_ignore_index_outside_the_label_dtype_ignores_nothing(dtype, stray, ignore_index):
    """torch compares ``uint8_labels == -1`` as 255: a label the dtype cannot equal to ignore_index is a
    label out of range, not an ignored voxel."""
    logits, labels = _batch(3, (3, 4))
    labels = labels.to(dtype)
    labels[0, 0, 0] = stray
    with pytest.raises(ValueError, match=rf"\[0, 3\) or equal ignore_index={ignore_index}; found {stray}"):
        CrossEntropyLoss(ignore_index=ignore_index)(logits, labels)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)])
def test_empty_input_is_a_clear_error(name, shape):
    """No loss has a value without a voxel: torch's cross_entropy returns NaN (0 / 0) for an empty batch,
    which would poison an optimiser step; here it is a ValueError (it failed inside the checks)."""
    logits = torch.zeros(shape)
    labels = torch.zeros(shape[0], *shape[2:], dtype=torch.long)
    for loss in (getattr(losses, name)(), DeepSupervisionLoss(getattr(losses, name)())):
        with pytest.raises(ValueError, match=rf"input of shape \({', '.join(map(str, shape))}\) is empty"):
            loss(logits, labels)


def test_deep_supervision_resizes_a_label_map_without_channel_axis():
    """One full-resolution (B, *S) label map for several outputs (F.interpolate raised on it)."""
    logits, labels = _batch(3, (4, 6, 8))
    outputs = [logits, logits[:, :, ::2, ::2, ::2]]
    loss = DeepSupervisionLoss(AsymmetricUnifiedFocalLoss(), weights="exp")
    torch.testing.assert_close(loss(outputs, labels), loss(outputs, labels[:, None]), rtol=1e-12, atol=1e-12)
