"""Agreement with the reference implementations in MONAI and nnU-Net on random inputs (2D and 3D), and
tests that document where MONAI's Unified Focal port departs from the paper (docs/losses.md, "How the public Unified Focal ports differ")."""

import pytest
import torch
import torch.nn.functional as F

monai_losses = pytest.importorskip("monai.losses")
monai_ufl = pytest.importorskip("monai.losses.unified_focal_loss")
nnunet_dice = pytest.importorskip("nnunetv2.training.loss.dice")
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss, DC_and_CE_loss  # noqa: E402
from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss  # noqa: E402
from nnunetv2.utilities.helpers import softmax_helper_dim1  # noqa: E402

from unifocal.losses import (  # noqa: E402
    AsymmetricFocalLoss,
    AsymmetricFocalTverskyLoss,
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    TverskyLoss,
    UnifiedFocalLoss,
)

SHAPES = [(2, 3, 6, 5), (2, 4, 4, 3, 5)]  # 2D and 3D
SEEDS = [0, 1, 2]
F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)


def case(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits, labels


def close(a, b, tol):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), **tol)


params = pytest.mark.parametrize("shape,seed", [(s, k) for s in SHAPES for k in SEEDS])


# ---------------------------------------------------------------------------------------------------
# MONAI
# ---------------------------------------------------------------------------------------------------


@params
@pytest.mark.parametrize("include_background", [True, False])
@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("squared", [False, True])
def test_monai_dice(shape, seed, include_background, batch, squared):
    x, y = case(shape, seed)
    s = 1e-5
    theirs = monai_losses.DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                                   squared_pred=squared, smooth_nr=s, smooth_dr=s, batch=batch)(x, y)
    ours = DiceLoss(squared=squared, smooth=s, include_background=include_background, batch_dice=batch)(x, y)
    close(ours, theirs, F32 if squared else F64)  # MONAI's squared form goes through a vector norm


@params
def test_monai_dice_sigmoid_and_jaccard(shape, seed):
    x, y = case(shape, seed)
    regions = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) > 0.6
    theirs = monai_losses.DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0)(x, regions.double())
    close(DiceLoss(multilabel=True, smooth=1.0)(x, regions), theirs, F64)
    # MONAI's jaccard form 1 - (2 TP + s) / (2 (TP + FP + FN) + s) is ours with smoothing s / 2
    theirs = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, jaccard=True, smooth_nr=1.0, smooth_dr=1.0)(x, y)
    close(JaccardLoss(smooth=0.5)(x, y), theirs, F64)


@params
def test_monai_dice_ignore_index(shape, seed):
    x, y = case(shape, seed)
    y = y.clone()
    y[:, :, :2] = 255
    theirs = monai_losses.DiceLoss(to_onehot_y=True, softmax=True, smooth_nr=1.0, smooth_dr=1.0, ignore_index=255)(x, y)
    close(DiceLoss(smooth=1.0, ignore_index=255)(x, y), theirs, F64)


@params
@pytest.mark.parametrize("include_background", [True, False])
def test_monai_generalized_dice(shape, seed, include_background):
    x, y = case(shape, seed)
    y = y.clone()
    y.flatten(2)[:, 0, : shape[1]] = torch.arange(shape[1])  # every class present in every sample (no weight guard)
    s = 1.0
    ours = GeneralizedDiceLoss(smooth=s, include_background=include_background, reduction="none")(x, y)
    onehot = F.one_hot(y[:, 0], shape[1]).movedim(-1, 1).double()
    first = 0 if include_background else 1
    for b in range(shape[0]):
        # ours measures the smoothing in voxels: MONAI's raw 1 / V_c^2 weights need smoothing s * sum_c 1 / V_c^2
        volumes = onehot[b, first:].flatten(1).sum(1)
        w_total = (1 / volumes**2).sum().item()
        theirs = monai_losses.GeneralizedDiceLoss(include_background=include_background, to_onehot_y=True, softmax=True,
                                                  w_type="square", smooth_nr=s * w_total, smooth_dr=s * w_total)
        # (MONAI computes its class weights in float32)
        close(ours[b], theirs(x[b : b + 1], y[b : b + 1]), dict(rtol=1e-7, atol=1e-9))


@params
@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7), (0.5, 0.5), (0.8, 0.1)])
@pytest.mark.parametrize("batch", [False, True])
def test_monai_tversky(shape, seed, alpha, beta, batch):
    x, y = case(shape, seed)
    theirs = monai_losses.TverskyLoss(to_onehot_y=True, softmax=True, alpha=alpha, beta=beta, smooth_nr=1.0,
                                      smooth_dr=1.0, batch=batch)(x, y)
    close(TverskyLoss(alpha=alpha, beta=beta, batch_dice=batch)(x, y), theirs, F64)
    # delta of the Unified Focal family is MONAI's beta (false negatives), alpha = 1 - delta
    if alpha + beta == 1:
        close(UnifiedFocalLoss(weight=0.0, gamma=0.0, delta=beta, batch_dice=batch)(x, y), theirs, F64)


@params
@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_monai_focal_softmax(shape, seed, gamma, alpha):
    x, y = case(shape, seed)
    c = shape[1]
    theirs = monai_losses.FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma, alpha=alpha)(x, y)
    # MONAI averages over the class axis too: a factor C smaller than the sum over classes
    close(FocalLoss(gamma=gamma, alpha=alpha)(x, y), c * theirs, F32)


@params
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_monai_focal_sigmoid_is_our_multilabel_focal(shape, seed, alpha):
    x, _ = case(shape, seed)
    regions = (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) > 0.6).double()
    theirs = monai_losses.FocalLoss(gamma=2.0, alpha=alpha)(x, regions)
    # each channel is a binary problem; the mean over channels and voxels: no factor here
    close(FocalLoss(gamma=2.0, alpha=alpha, multilabel=True)(x, regions), theirs, F32)


def _binary_probs(shape, seed):
    """(B, 2, *S) probabilities with the foreground in [0.01, 0.99] (clear of MONAI's 1e-7 clip)."""
    g = torch.Generator().manual_seed(seed)
    fg = torch.rand((shape[0], 1, *shape[2:]), generator=g, dtype=torch.float64) * 0.98 + 0.01
    labels = (torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.7).long()
    return torch.cat([1 - fg, fg], 1), labels


@params
@pytest.mark.parametrize("delta,gamma", [(0.7, 0.75), (0.6, 0.5), (0.5, 0.0)])
def test_monai_asymmetric_focal_tversky_binary(shape, seed, delta, gamma):
    p, y = _binary_probs(shape, seed)
    onehot = torch.cat([1 - y, y], 1)
    # MONAI: probabilities (no activation), delta on false negatives, epsilon as smoothing
    theirs = monai_ufl.AsymmetricFocalTverskyLoss(delta=delta, gamma=gamma, epsilon=1e-7)(p, onehot)
    ours = AsymmetricFocalTverskyLoss(delta=delta, gamma=gamma, smooth=1e-7, from_logits=False)
    close(ours(p, y), theirs, F64)
    close(ours(p, onehot), theirs, F64)
    close(monai_ufl.AsymmetricFocalTverskyLoss(delta=delta, gamma=gamma, to_onehot_y=True)(p, y), theirs, F64)


@params
def test_monai_asymmetric_focal_term_is_half_of_the_paper(shape, seed):
    p, y = _binary_probs(shape, seed)
    onehot = torch.cat([1 - y, y], 1)
    theirs = monai_ufl.AsymmetricFocalLoss(delta=0.7, gamma=2.0)(p, onehot)
    ours = AsymmetricFocalLoss(delta=0.7, gamma=2.0, from_logits=False)(p, y)
    # MONAI takes loss.mean() over its [B, 2, *S] stack: the paper sums over classes, then averages voxels
    close(2 * theirs, ours, F64)
    # the paper's (and mlyg's) value: (1/N) sum_i [delta CE_i1 + (1 - delta) (1 - p_i0)^gamma CE_i0]
    paper = (0.7 * -(y * p[:, 1:].log()) + 0.3 * (1 - p[:, :1]) ** 2 * -((1 - y) * p[:, :1].log())).mean()
    close(ours, paper, F64)


@params
@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_monai_unified_weight_is_on_the_focal_part(shape, seed, weight):
    p, y = _binary_probs(shape, seed)
    onehot = torch.cat([1 - y, y], 1)
    theirs = monai_ufl.AsymmetricUnifiedFocalLoss(weight=weight, delta=0.6, gamma=0.5)(p, onehot)
    focal = UnifiedFocalLoss(weight=1.0, delta=0.6, gamma=0.5, from_logits=False)(p, y)
    tversky = UnifiedFocalLoss(weight=0.0, delta=0.6, gamma=0.5, smooth=1e-7, from_logits=False)(p, y)
    # monai 1.6.1 weights the focal part by `weight`, as the paper's lambda (mlyg's code puts it on the
    # Tversky part), but its focal part is half the paper's
    close(theirs, weight * focal / 2 + (1 - weight) * tversky, F64)
    ours = UnifiedFocalLoss(weight=weight, delta=0.6, gamma=0.5, smooth=1e-7, from_logits=False)(p, y)
    close(ours, weight * focal + (1 - weight) * tversky, F64)
    if weight > 0:
        assert not torch.isclose(ours, theirs)


def test_monai_unified_is_binary_only_and_ignores_reduction_none():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 4, 5, 4, generator=g, dtype=torch.float64), 1)
    y = torch.randint(0, 4, (2, 1, 5, 4), generator=g)
    onehot = F.one_hot(y[:, 0], 4).movedim(-1, 1)
    monai = monai_ufl.AsymmetricUnifiedFocalLoss(num_classes=4, to_onehot_y=True)
    # four classes silently use channels 0 and 1 only
    close(monai(p, y), monai_ufl.AsymmetricUnifiedFocalLoss()(p[:, :2], onehot[:, :2]), F64)
    swapped = p[:, [0, 1, 3, 2]]  # exchanging the probabilities of classes 2 and 3 changes nothing
    close(monai(swapped, y), monai(p, y), F64)
    # ours uses every class
    ours = UnifiedFocalLoss(delta=0.7, from_logits=False)
    assert not torch.isclose(ours(swapped, y), ours(p, y))
    # reduction="none" still returns a scalar; ours returns one value per sample
    assert monai_ufl.AsymmetricUnifiedFocalLoss(reduction="none")(p[:, :2], onehot[:, :2]).shape == ()
    assert UnifiedFocalLoss(reduction="none", from_logits=False)(p, y).shape == (2,)


def test_monai_unified_takes_probabilities_not_logits():
    # its docstring says the input is transformed by a sigmoid; the code applies no activation, only a clip
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 1, 4, 4), generator=g)
    onehot = torch.cat([1 - y, y], 1)
    monai = monai_ufl.AsymmetricUnifiedFocalLoss(weight=0.0, delta=0.6, gamma=0.5)
    theirs = monai(logits, onehot)
    close(theirs, monai(logits.clamp(1e-7, 1 - 1e-7), onehot), F64)
    assert not torch.isclose(theirs, monai(logits.softmax(1), onehot))
    # ours takes logits and applies the softmax
    ours = UnifiedFocalLoss(weight=0.0, delta=0.6, gamma=0.5, smooth=1e-7)(logits, y)
    close(ours, monai(logits.softmax(1), onehot), F64)


def test_monai_absent_foreground_predicted_absent_is_not_zero():
    # a known defect of the ports (docs/losses.md): the clip makes an absent class predicted absent cost ~ (1 - 1/(1 + 0.3 N))^0.25
    p = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
    p[:, 0] = 1.0
    y = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    theirs = monai_ufl.AsymmetricFocalTverskyLoss()(p, torch.cat([1 - y, y], 1))  # delta 0.7, gamma 0.75
    ti1 = 1 / (1 + 0.3 * 64)
    close(theirs, (1 - ti1) ** 0.25 / 2, dict(rtol=1e-6, atol=1e-9))
    assert AsymmetricFocalTverskyLoss(from_logits=False)(p, y) == 0


# ---------------------------------------------------------------------------------------------------
# nnU-Net
# ---------------------------------------------------------------------------------------------------


@params
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("do_bg", [False, True])
def test_nnunet_soft_dice(shape, seed, batch_dice, do_bg):
    x, y = case(shape, seed, torch.float32)
    for dice_class in (nnunet_dice.SoftDiceLoss, nnunet_dice.MemoryEfficientSoftDiceLoss):
        theirs = dice_class(apply_nonlin=softmax_helper_dim1, batch_dice=batch_dice, do_bg=do_bg, smooth=1e-5,
                            ddp=False)(x, y)
        # nnU-Net returns -mean Dice
        close(DiceLoss(include_background=do_bg, batch_dice=batch_dice, smooth=1e-5)(x, y), 1 + theirs, F32)


@params
def test_nnunet_robust_cross_entropy_with_ignore_label(shape, seed):
    x, y = case(shape, seed, torch.float32)
    ignore = shape[1]  # nnU-Net's ignore label is the highest label value
    close(CrossEntropyLoss()(x, y), RobustCrossEntropyLoss()(x, y), F32)
    y = y.clone()
    y[:, :, 0] = ignore
    theirs = RobustCrossEntropyLoss(ignore_index=ignore)(x, y.float())
    close(CrossEntropyLoss(ignore_index=ignore)(x, y.float()), theirs, F32)


@params
@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("ignore", [False, True])
def test_nnunet_dc_and_ce_as_a_composition(shape, seed, batch_dice, ignore):
    x, y = case(shape, seed, torch.float32)
    y = y.to(torch.int16)  # what nnU-Net's data loader delivers
    ignore_label = shape[1] if ignore else None
    if ignore:
        y = y.clone()
        y[:, :, 1:3] = ignore_label
    kwargs = dict(batch_dice=batch_dice, smooth=1e-5, do_bg=False, ddp=False)
    for dice_class in (nnunet_dice.SoftDiceLoss, nnunet_dice.MemoryEfficientSoftDiceLoss):
        theirs = DC_and_CE_loss(dict(kwargs), {}, weight_ce=1, weight_dice=1, ignore_label=ignore_label,
                                dice_class=dice_class)(x, y)
        ours = DiceLoss(include_background=False, batch_dice=batch_dice, smooth=1e-5, ignore_index=ignore_label)(x, y)
        ours = ours + CrossEntropyLoss(ignore_index=ignore_label)(x, y)
        close(ours, 1 + theirs, F32)


@params
@pytest.mark.parametrize("batch_dice", [False, True])
def test_nnunet_dc_and_bce_regions(shape, seed, batch_dice):
    x, _ = case(shape, seed, torch.float32)
    g = torch.Generator().manual_seed(seed + 10)
    regions = torch.rand(x.shape, generator=g) > 0.6  # bool, as nnU-Net's region targets
    kwargs = dict(batch_dice=batch_dice, do_bg=True, smooth=1e-5, ddp=False)
    theirs = DC_and_BCE_loss({}, dict(kwargs))(x, regions)
    ours = DiceLoss(multilabel=True, batch_dice=batch_dice, smooth=1e-5)(x, regions)
    ours = ours + CrossEntropyLoss(multilabel=True)(x, regions)
    close(ours, 1 + theirs, F32)

    # with the ignore label as an extra last target channel: Dice agrees; nnU-Net's masked BCE divides the
    # sum over C channels by the number of voxels only (a factor C over its unmasked channel mean)
    ignored = torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.7
    target = torch.cat([regions & ~ignored, ignored], 1)
    theirs = DC_and_BCE_loss({}, dict(kwargs), weight_ce=0, use_ignore_label=True)(x, target)
    dice = DiceLoss(multilabel=True, batch_dice=batch_dice, smooth=1e-5)(x, target[:, :-1], mask=~ignored)
    close(dice, 1 + theirs, F32)
    bce = DC_and_BCE_loss({}, dict(kwargs), weight_dice=0, use_ignore_label=True)(x, target)
    ours_bce = CrossEntropyLoss(multilabel=True)(x, target[:, :-1], mask=~ignored)
    close(bce, shape[1] * ours_bce, F32)

