"""Property tests (hypothesis) of the Unified Focal family and the losses it generalises."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unifocal.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    HybridFocalLoss,
    TverskyLoss,
    UnifiedFocalLoss,
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IGNORE = 255


@st.composite
def configs(draw, allow_batch_dice=True):
    """A random loss configuration and batch (float64)."""
    multilabel = draw(st.booleans())
    c = draw(st.integers(2, 4))
    b = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    weight = draw(st.sampled_from([0.0, 0.3, 0.5, 1.0]))
    gamma = draw(st.one_of(st.floats(0.0, 0.95), st.lists(st.floats(0.0, 0.95), min_size=c, max_size=c)))
    options = dict(
        weight=weight,
        delta=draw(st.floats(0.0, 1.0)),
        gamma=gamma,
        asymmetric=draw(st.booleans()),
        batch_dice=allow_batch_dice and draw(st.booleans()),
        smooth=draw(st.sampled_from([1.0, 1e-5])),
        multilabel=multilabel,
    )
    if not multilabel and isinstance(gamma, float) and draw(st.booleans()):
        rare = draw(st.sets(st.integers(0, c - 1), min_size=0, max_size=c))
        options["rare_classes"] = tuple(sorted(rare))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *spatial, generator=g, dtype=torch.float64) * scale
    if multilabel:
        target = torch.rand(b, c, *spatial, generator=g) > draw(st.floats(0.0, 1.0))
    else:
        target = torch.randint(0, c, (b, 1, *spatial), generator=g)
    ignored = torch.rand(b, 1, *spatial, generator=g) < draw(st.sampled_from([0.0, 0.3]))
    return options, logits, target, ignored


def masked(options, target, ignored):
    """(loss keyword arguments, forward keyword arguments, target) that ignore the voxels ``ignored``."""
    if options["multilabel"]:
        return dict(options), dict(mask=~ignored), target
    return dict(options, ignore_index=IGNORE), {}, target.masked_fill(ignored, IGNORE)


@SETTINGS
@given(configs())
def test_nonnegative_and_finite(case):
    options, logits, target, ignored = case
    loss_kwargs, forward_kwargs, target = masked(options, target, ignored)
    values = UnifiedFocalLoss(reduction="none", **loss_kwargs)(logits, target, **forward_kwargs)
    assert values.shape == (logits.shape[0],)
    assert torch.isfinite(values).all() and (values >= 0).all()


@SETTINGS
@given(configs(), st.sampled_from([CrossEntropyLoss, DiceLoss, TverskyLoss, FocalTverskyLoss, HybridFocalLoss]))
def test_other_losses_nonnegative(case, cls):
    options, logits, target, ignored = case
    options = {k: options[k] for k in ("multilabel",)}
    loss_kwargs, forward_kwargs, target = masked(options, target, ignored)
    values = cls(reduction="none", **loss_kwargs)(logits, target, **forward_kwargs)
    assert torch.isfinite(values).all() and (values >= -1e-12).all()
    focal = FocalLoss(gamma=2.0, alpha=0.25, reduction="none", **loss_kwargs)(logits, target, **forward_kwargs)
    assert (focal >= 0).all()


@SETTINGS
@given(configs(), st.randoms(use_true_random=False))
def test_batch_permutation(case, rnd):
    options, logits, target, ignored = case
    loss_kwargs, forward_kwargs, target = masked(options, target, ignored)
    perm = list(range(logits.shape[0]))
    rnd.shuffle(perm)
    forward_perm = {k: v[perm] for k, v in forward_kwargs.items()}
    mean = UnifiedFocalLoss(**loss_kwargs)
    torch.testing.assert_close(mean(logits[perm], target[perm], **forward_perm), mean(logits, target, **forward_kwargs),
                               rtol=1e-10, atol=1e-12)
    none = UnifiedFocalLoss(reduction="none", **loss_kwargs)
    torch.testing.assert_close(none(logits[perm], target[perm], **forward_perm), none(logits, target, **forward_kwargs)[perm],
                               rtol=1e-10, atol=1e-12)


@SETTINGS
@given(configs(), st.integers(0, 2**31 - 1))
def test_ignored_voxels_do_not_matter(case, seed):
    options, logits, target, ignored = case
    loss_kwargs, forward_kwargs, target = masked(options, target, ignored)
    g = torch.Generator().manual_seed(seed)
    new_logits = torch.where(ignored, torch.randn(logits.shape, generator=g, dtype=torch.float64) * 50, logits)
    if options["multilabel"]:
        new_target = torch.where(ignored, torch.rand(target.shape, generator=g) > 0.5, target)
    else:
        new_target = target  # the ignore label itself marks the voxels; other labels would un-ignore them
    loss = UnifiedFocalLoss(reduction="none", **loss_kwargs)
    torch.testing.assert_close(loss(new_logits, new_target, **forward_kwargs), loss(logits, target, **forward_kwargs),
                               rtol=1e-10, atol=1e-12)
    # a mask over a label map: the labels under the mask may be anything valid
    if not options["multilabel"]:
        labels = target.masked_fill(ignored, 0)
        shuffled = torch.where(ignored, torch.randint(0, logits.shape[1], target.shape, generator=g), labels)
        loss = UnifiedFocalLoss(reduction="none", **options)
        torch.testing.assert_close(loss(new_logits, shuffled, mask=~ignored), loss(logits, labels, mask=~ignored),
                                   rtol=1e-10, atol=1e-12)


@SETTINGS
@given(configs())
def test_2d_equals_3d_with_singleton_depth(case):
    options, logits, target, ignored = case
    if logits.ndim > 4:
        logits, target, ignored = logits[..., 0], target[..., 0], ignored[..., 0]
    loss_kwargs, forward_kwargs, target = masked(options, target, ignored)
    loss = UnifiedFocalLoss(reduction="none", **loss_kwargs)
    depth = {k: v.unsqueeze(2) for k, v in forward_kwargs.items()}
    torch.testing.assert_close(loss(logits.unsqueeze(2), target.unsqueeze(2), **depth), loss(logits, target, **forward_kwargs),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", [UnifiedFocalLoss, DiceLoss, CrossEntropyLoss])
def test_label_map_without_channel_axis_in_3d(cls):
    # (B, *S) label maps in 3D are told apart from (B, 1, *S) ones by their rank
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 1, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 1, 1, 4, 4), generator=g)
    torch.testing.assert_close(cls()(logits, labels[:, 0]), cls()(logits, labels), rtol=0, atol=0)
