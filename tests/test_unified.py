"""The Unified Focal family against hand-computed values and the special cases listed in docs/losses.md.

Hand-computed cases spell their arithmetic out; random cases compare against ``reference_unified``, a
direct transcription of the paper's formulas as docs/losses.md writes them (loops over classes, no shared
code with the package).
Everything runs in float64, so agreement is to round-off.
"""

from math import log

import pytest
import torch
import torch.nn.functional as F

from unifocal.losses import (
    AsymmetricFocalLoss,
    AsymmetricFocalTverskyLoss,
    AsymmetricUnifiedFocalLoss,
    ComboLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    HybridFocalLoss,
    SymmetricFocalLoss,
    SymmetricFocalTverskyLoss,
    SymmetricUnifiedFocalLoss,
    TverskyLoss,
    UnifiedFocalLoss,
    unified_focal_loss,
)
from unifocal.losses import unified as unified_module

TOL = dict(rtol=1e-12, atol=1e-13)


def close(a, b, **tol):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    torch.testing.assert_close(a, b, **(tol or TOL))


def random_case(seed, b=2, c=3, spatial=(5, 4)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *spatial, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, c, (b, 1, *spatial), generator=g)
    return logits, labels


def onehot(labels, c):
    return F.one_hot(labels[:, 0].long(), c).movedim(-1, 1).to(torch.float64)


def reference_unified(p, y, *, weight, delta, gamma, asymmetric=True, rare=None, smooth=1.0, batch_dice=False):
    """The paper's L_UF on probabilities p and one-hot y, both (B, C, *S) float64.

    rare: per-class booleans (default: every class but 0); gamma: a number or one per class.
    """
    b, c = p.shape[:2]
    rare = [k != 0 for k in range(c)] if rare is None else list(rare)
    gammas = [gamma] * c if isinstance(gamma, (int, float)) else list(gamma)
    p, y = p.flatten(2), y.flatten(2)
    # focal part: (1/N) sum_i sum_c w_c m_ic CE_ic over all voxels of the batch
    focal = 0.0
    for k in range(c):
        ce = -y[:, k] * p[:, k].log()
        w = delta if rare[k] else 1 - delta
        modulated = (not rare[k]) or not asymmetric
        m = (1 - p[:, k]) ** gammas[k] if modulated else torch.ones_like(ce)
        focal = focal + (w * m * ce).sum()
    focal = focal / (b * p.shape[2])
    # focal Tversky part: mean over classes (and samples) of e_c(1 - TI_c)
    dims = (0, 2) if batch_dice else (2,)
    tp = (y * p).sum(dims)
    fn = (y * (1 - p)).sum(dims)
    fp = ((1 - y) * p).sum(dims)
    ti = (tp + smooth) / (tp + delta * fn + (1 - delta) * fp + smooth)
    terms = []
    for k in range(c):
        enhanced = rare[k] or not asymmetric
        terms.append((1 - ti[..., k]) ** (1 - gammas[k]) if enhanced else 1 - ti[..., k])
    tversky = torch.stack(terms, -1).mean()
    return weight * focal + (1 - weight) * tversky


def binary_probs(fg):
    """(1, 2, 2, 2) probabilities with foreground probabilities ``fg`` (row-major)."""
    fg = torch.tensor(fg, dtype=torch.float64).view(1, 1, 2, 2)
    return torch.cat([1 - fg, fg], 1)


def as_logits(p):
    """Logits whose softmax is p."""
    return p.log()


# ---------------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------------

BINARY_P = [0.9, 0.2, 0.6, 0.1]
BINARY_Y = torch.tensor([1, 0, 1, 0]).view(1, 1, 2, 2)


def test_asymmetric_unified_binary_by_hand():
    delta, gamma, s = 0.6, 0.5, 1.0
    # focal part: class 1 (rare) at voxels 0, 2: plain CE weighted delta;
    # class 0 (common) at voxels 1, 3 with p0 = 0.8, 0.9: weighted 1 - delta and modulated (1 - p0)^gamma
    focal = (
        delta * -log(0.9)
        + (1 - delta) * (1 - 0.8) ** gamma * -log(0.8)
        + delta * -log(0.6)
        + (1 - delta) * (1 - 0.9) ** gamma * -log(0.9)
    ) / 4
    # class 1: TP = 0.9 + 0.6, FN = 0.1 + 0.4, FP = 0.2 + 0.1
    ti1 = (1.5 + s) / (1.5 + delta * 0.5 + (1 - delta) * 0.3 + s)
    # class 0: TP = 0.8 + 0.9, FN = 0.2 + 0.1, FP = 0.1 + 0.4
    ti0 = (1.7 + s) / (1.7 + delta * 0.3 + (1 - delta) * 0.5 + s)
    tversky = ((1 - ti0) + (1 - ti1) ** (1 - gamma)) / 2  # only the rare class is enhanced
    expected = 0.5 * focal + 0.5 * tversky

    p = binary_probs(BINARY_P)
    close(UnifiedFocalLoss(from_logits=False)(p, BINARY_Y), expected)
    close(AsymmetricUnifiedFocalLoss(from_logits=False)(p, BINARY_Y), expected)
    close(UnifiedFocalLoss()(as_logits(p), BINARY_Y), expected)
    close(AsymmetricFocalLoss(delta=0.6, gamma=0.5, from_logits=False)(p, BINARY_Y), focal)
    close(AsymmetricFocalTverskyLoss(delta=0.6, gamma=0.5, from_logits=False)(p, BINARY_Y), tversky)
    assert expected == pytest.approx(0.17853, abs=1e-5)  # 0.5 * 0.10574 + 0.5 * 0.25132


def test_symmetric_unified_binary_by_hand():
    delta, gamma, s = 0.6, 0.5, 1.0
    # every class is modulated and enhanced
    focal = (
        delta * (1 - 0.9) ** gamma * -log(0.9)
        + (1 - delta) * (1 - 0.8) ** gamma * -log(0.8)
        + delta * (1 - 0.6) ** gamma * -log(0.6)
        + (1 - delta) * (1 - 0.9) ** gamma * -log(0.9)
    ) / 4
    ti1 = (1.5 + s) / (1.5 + delta * 0.5 + (1 - delta) * 0.3 + s)
    ti0 = (1.7 + s) / (1.7 + delta * 0.3 + (1 - delta) * 0.5 + s)
    tversky = ((1 - ti0) ** (1 - gamma) + (1 - ti1) ** (1 - gamma)) / 2
    p = binary_probs(BINARY_P)
    close(SymmetricUnifiedFocalLoss(from_logits=False)(p, BINARY_Y), 0.5 * focal + 0.5 * tversky)
    close(UnifiedFocalLoss(asymmetric=False)(as_logits(p), BINARY_Y), 0.5 * focal + 0.5 * tversky)
    close(SymmetricFocalLoss(delta=0.6, gamma=0.5, from_logits=False)(p, BINARY_Y), focal)
    close(SymmetricFocalTverskyLoss(delta=0.6, gamma=0.5, from_logits=False)(p, BINARY_Y), tversky)


THREE_P = torch.tensor(
    [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.3, 0.2]], dtype=torch.float64
).T.reshape(1, 3, 2, 2)  # 4 voxels (rows), 3 classes (columns)
THREE_Y = torch.tensor([0, 1, 2, 2]).view(1, 1, 2, 2)


def test_three_classes_per_class_gamma_by_hand():
    delta, (g0, g1, g2), s = 0.6, (0.2, 0.4, 0.6), 1.0
    # focal: voxel 0 is class 0 (common, p = 0.7); voxels 1-3 are rare classes 1, 2, 2 (p = 0.6, 0.6, 0.2)
    focal = ((1 - delta) * (1 - 0.7) ** g0 * -log(0.7) + delta * -log(0.6) + delta * -log(0.6) + delta * -log(0.2)) / 4
    # class 0: TP 0.7, FN 0.3, FP 0.1 + 0.2 + 0.5; class 1: TP 0.6, FN 0.4, FP 0.2 + 0.2 + 0.3;
    # class 2: TP 0.6 + 0.2, FN 0.4 + 0.8, FP 0.1 + 0.3
    ti0 = (0.7 + s) / (0.7 + delta * 0.3 + (1 - delta) * 0.8 + s)
    ti1 = (0.6 + s) / (0.6 + delta * 0.4 + (1 - delta) * 0.7 + s)
    ti2 = (0.8 + s) / (0.8 + delta * 1.2 + (1 - delta) * 0.4 + s)
    tversky = ((1 - ti0) + (1 - ti1) ** (1 - g1) + (1 - ti2) ** (1 - g2)) / 3
    loss = UnifiedFocalLoss(gamma=(g0, g1, g2), from_logits=False)(THREE_P, THREE_Y)
    close(loss, 0.5 * focal + 0.5 * tversky)

    # class 1 made common: its CE gets 1 - delta and (1 - p)^g1, its Tversky term is no longer enhanced
    focal_c = (
        (1 - delta) * (1 - 0.7) ** g0 * -log(0.7)
        + (1 - delta) * (1 - 0.6) ** g1 * -log(0.6)
        + delta * -log(0.6)
        + delta * -log(0.2)
    ) / 4
    tversky_c = ((1 - ti0) + (1 - ti1) + (1 - ti2) ** (1 - g2)) / 3
    for kwargs in (dict(common_classes=(0, 1)), dict(rare_classes=(2,)), dict(common_classes=[1, 0], rare_classes=[2])):
        loss = UnifiedFocalLoss(gamma=(g0, g1, g2), from_logits=False, **kwargs)(THREE_P, THREE_Y)
        close(loss, 0.5 * focal_c + 0.5 * tversky_c)


def test_multilabel_by_hand():
    delta, gamma, s = 0.6, 0.5, 1.0
    # two channels (regions), two voxels; channel 0: p = (0.8, 0.3), y = (1, 0); channel 1: p = (0.4, 0.6), y = (0, 1)
    p = torch.tensor([[0.8, 0.3], [0.4, 0.6]], dtype=torch.float64).view(1, 2, 1, 2)
    y = torch.tensor([[1, 0], [0, 1]]).view(1, 2, 1, 2)
    # each channel is a binary problem: rare class 'c' (p), common class 'not c' (1 - p)
    focal0 = (delta * -log(0.8) + (1 - delta) * (1 - 0.7) ** gamma * -log(0.7)) / 2
    focal1 = ((1 - delta) * (1 - 0.6) ** gamma * -log(0.6) + delta * -log(0.6)) / 2
    # channel 0: TP 0.8, FN 0.2, FP 0.3; its complement: TP 0.7, FN 0.3, FP 0.2
    # channel 1: TP 0.6, FN 0.4, FP 0.4; its complement: TP 0.6, FN 0.4, FP 0.4
    ti = lambda tp, fn, fp: (tp + s) / (tp + delta * fn + (1 - delta) * fp + s)  # noqa: E731
    tversky0 = ((1 - ti(0.7, 0.3, 0.2)) + (1 - ti(0.8, 0.2, 0.3)) ** (1 - gamma)) / 2
    tversky1 = ((1 - ti(0.6, 0.4, 0.4)) + (1 - ti(0.6, 0.4, 0.4)) ** (1 - gamma)) / 2
    expected = 0.5 * (focal0 + focal1) / 2 + 0.5 * (tversky0 + tversky1) / 2
    close(UnifiedFocalLoss(multilabel=True, from_logits=False)(p, y), expected)
    close(UnifiedFocalLoss(multilabel=True)(torch.logit(p), y.bool()), expected)
    # the channel mean of the binary losses, each computed as a 2-class exclusive problem
    per_channel = [
        UnifiedFocalLoss(from_logits=False)(torch.cat([1 - p[:, k : k + 1], p[:, k : k + 1]], 1), y[:, k : k + 1])
        for k in range(2)
    ]
    close(sum(per_channel) / 2, expected)


def test_multilabel_per_channel_gamma():
    logits, _ = random_case(3, c=3)
    y = torch.rand(logits.shape, generator=torch.Generator().manual_seed(4)) > 0.6
    gammas = (0.1, 0.5, 0.8)
    loss = UnifiedFocalLoss(multilabel=True, gamma=gammas)(logits, y)
    p = torch.sigmoid(logits)
    per_channel = [
        unified_focal_loss(torch.cat([1 - p[:, k : k + 1], p[:, k : k + 1]], 1), y[:, k : k + 1].long(),
                           gamma=gammas[k], from_logits=False)
        for k in range(3)
    ]
    close(loss, sum(per_channel) / 3, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("asymmetric", [True, False])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_against_reference_formula(seed, asymmetric, batch_dice):
    logits, labels = random_case(seed, b=3, c=4, spatial=(3, 4, 2))
    gamma = (0.1, 0.3, 0.5, 0.7)
    for weight, delta in ((0.5, 0.6), (0.3, 0.8), (0.9, 0.25)):
        loss = UnifiedFocalLoss(weight=weight, delta=delta, gamma=gamma, asymmetric=asymmetric, batch_dice=batch_dice)
        expected = reference_unified(logits.softmax(1), onehot(labels, 4), weight=weight, delta=delta, gamma=gamma,
                                     asymmetric=asymmetric, batch_dice=batch_dice)
        close(loss(logits, labels), expected, rtol=1e-11, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Special cases (docs/losses.md, "Special cases"), to float64 round-off
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_special_case_cross_entropy_half(seed):
    logits, labels = random_case(seed)
    loss = UnifiedFocalLoss(weight=1.0, gamma=0.0, delta=0.5)(logits, labels)
    close(loss, F.cross_entropy(logits, labels[:, 0]) / 2)
    close(UnifiedFocalLoss(weight=1.0, gamma=0.0, delta=0.5, asymmetric=False)(logits, labels), loss)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("smooth", [1.0, 1e-5])
def test_special_case_soft_dice(seed, smooth):
    logits, labels = random_case(seed)
    p, y = logits.softmax(1), onehot(labels, 3)
    # delta = 0.5: TI = (TP + s) / (TP + FN/2 + FP/2 + s) = (2TP + 2s) / (sum p + sum y + 2s)
    dims = (2, 3)
    dice = (2 * (p * y).sum(dims) + 2 * smooth) / (p.sum(dims) + y.sum(dims) + 2 * smooth)
    expected = (1 - dice).mean()
    for asymmetric in (True, False):
        loss = UnifiedFocalLoss(weight=0.0, gamma=0.0, delta=0.5, smooth=smooth, asymmetric=asymmetric)(logits, labels)
        close(loss, expected)
    close(DiceLoss(smooth=2 * smooth)(logits, labels), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_special_case_tversky(seed):
    logits, labels = random_case(seed)
    p, y = logits.softmax(1), onehot(labels, 3)
    dims = (2, 3)
    tp, fp, fn = (p * y).sum(dims), (p * (1 - y)).sum(dims), ((1 - p) * y).sum(dims)
    expected = (1 - (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)).mean()  # Salehi 2017, FP 0.3 / FN 0.7
    close(UnifiedFocalLoss(weight=0.0, gamma=0.0, delta=0.7)(logits, labels), expected)
    close(TverskyLoss(alpha=0.3, beta=0.7)(logits, labels), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_special_case_focal_tversky(seed):
    logits, labels = random_case(seed)
    p, y = logits.softmax(1), onehot(labels, 3)
    dims = (2, 3)
    tp, fp, fn = (p * y).sum(dims), (p * (1 - y)).sum(dims), ((1 - p) * y).sum(dims)
    ti = (tp + 1) / (tp + 0.3 * fp + 0.7 * fn + 1)
    gamma_ft = 4 / 3
    expected = ((1 - ti) ** (1 / gamma_ft)).mean()  # Abraham & Khan 2019
    gamma = 1 - 1 / gamma_ft  # 1 - gamma = 1 / gamma_FT
    close(UnifiedFocalLoss(weight=0.0, gamma=gamma, delta=0.7, asymmetric=False)(logits, labels), expected)
    close(SymmetricFocalTverskyLoss(delta=0.7, gamma=gamma)(logits, labels), expected)
    close(FocalTverskyLoss(alpha=0.3, beta=0.7, gamma=gamma_ft)(logits, labels), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [0.25, 0.75])
def test_special_case_binary_focal(seed, alpha):
    logits, labels = random_case(seed, c=2)
    p = logits.softmax(1)[:, 1:]  # foreground probability
    y = labels.to(torch.float64)
    # Lin et al. 2017: -alpha (1 - p)^2 log p on positives, -(1 - alpha) p^2 log(1 - p) on negatives
    expected = (-alpha * (1 - p) ** 2 * p.log() * y - (1 - alpha) * p**2 * (1 - p).log() * (1 - y)).mean()
    close(UnifiedFocalLoss(weight=1.0, delta=alpha, gamma=2.0, asymmetric=False)(logits, labels), expected)
    close(SymmetricFocalLoss(delta=alpha, gamma=2.0)(logits, labels), expected)
    close(FocalLoss(gamma=2.0, alpha=alpha)(logits, labels), expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_special_case_combo_plus_half(seed):
    logits, labels = random_case(seed)
    p, y = logits.softmax(1), onehot(labels, 3)
    s, alpha, beta = 1.0, 0.5, 0.5
    # Combo (Taghanaki 2019, mlyg's form): alpha * mean_i sum_c beta_c CE_ic - (1 - alpha) * mean_c Dice_c,
    # beta_c = beta on the foreground, 1 - beta on the background (all 0.5 here)
    ce = (-(y * p.log()).sum(1) * beta).mean()
    dims = (2, 3)
    dice = ((2 * (p * y).sum(dims) + 2 * s) / (p.sum(dims) + y.sum(dims) + 2 * s)).mean()
    combo = alpha * ce - (1 - alpha) * dice
    loss = UnifiedFocalLoss(weight=0.5, gamma=0.0, delta=0.5, smooth=s)(logits, labels)
    close(loss, combo + 0.5)
    # the package's ComboLoss writes the Dice smoothing as (2 TP + s) / (2 TP + FP + FN + s): s = 2 s'
    close(ComboLoss(ce_weight=alpha, beta=beta, smooth=2 * s)(logits, labels) + 0.5, loss)


@pytest.mark.parametrize("seed", [0, 1])
def test_special_case_hybrid(seed):
    logits, labels = random_case(seed)
    lam = 0.3
    hybrid = HybridFocalLoss(weight=lam, focal_delta=0.25, focal_gamma=2.0, tversky_delta=0.7, tversky_gamma=0.25)
    focal = SymmetricFocalLoss(delta=0.25, gamma=2.0)(logits, labels)
    focal_tversky = SymmetricFocalTverskyLoss(delta=0.7, gamma=0.25)(logits, labels)
    close(hybrid(logits, labels), lam * focal + (1 - lam) * focal_tversky)
    # and in the original parametrisations: alpha-balanced focal, Abraham's focal Tversky with gamma_FT = 4/3
    original = lam * FocalLoss(gamma=2.0, alpha=0.25)(logits, labels) + (1 - lam) * FocalTverskyLoss(
        alpha=0.3, beta=0.7, gamma=4 / 3
    )(logits, labels)
    close(hybrid(logits, labels), original)


# ---------------------------------------------------------------------------------------------------
# Per-class gamma, class roles, variants, weight
# ---------------------------------------------------------------------------------------------------


def _parts(logits, labels, **kwargs):
    """(focal part, focal Tversky part) of the Unified Focal loss with the given options."""
    return (
        unified_focal_loss(logits, labels, weight=1.0, **kwargs),
        unified_focal_loss(logits, labels, weight=0.0, **kwargs),
    )


def test_gamma_of_a_common_class_changes_only_its_focal_terms():
    logits, labels = random_case(5)
    delta = 0.6
    f_a, t_a = _parts(logits, labels, delta=delta, gamma=(0.2, 0.5, 0.5))
    f_b, t_b = _parts(logits, labels, delta=delta, gamma=(0.7, 0.5, 0.5))
    close(t_a, t_b)  # asymmetric: the common class's Tversky term has exponent 1 whatever gamma_0
    p, y = logits.softmax(1), onehot(labels, 3)
    n = labels.numel()
    ce0 = -y[:, 0] * p[:, 0].log()
    expected = ((1 - delta) * ((1 - p[:, 0]) ** 0.7 - (1 - p[:, 0]) ** 0.2) * ce0).sum() / n
    close(f_b - f_a, expected)
    assert abs(expected) > 1e-3


def test_gamma_of_a_rare_class_changes_only_its_tversky_term():
    logits, labels = random_case(6)
    delta = 0.6
    f_a, t_a = _parts(logits, labels, delta=delta, gamma=(0.5, 0.5, 0.2))
    f_b, t_b = _parts(logits, labels, delta=delta, gamma=(0.5, 0.5, 0.7))
    close(f_a, f_b)  # asymmetric: rare classes are not modulated in the focal part
    p, y = logits.softmax(1), onehot(labels, 3)
    dims = (2, 3)
    tp, fp, fn = (p * y).sum(dims), (p * (1 - y)).sum(dims), ((1 - p) * y).sum(dims)
    d2 = 1 - ((tp + 1) / (tp + delta * fn + (1 - delta) * fp + 1))[:, 2]
    expected = (d2 ** (1 - 0.7) - d2 ** (1 - 0.2)).mean() / 3  # one class of three, mean over samples
    close(t_b - t_a, expected)
    assert abs(expected) > 1e-3


def test_symmetric_gamma_change_touches_only_that_class():
    logits, labels = random_case(7)
    base = dict(delta=0.6, asymmetric=False)
    f_a, t_a = _parts(logits, labels, gamma=(0.2, 0.4, 0.6), **base)
    f_b, t_b = _parts(logits, labels, gamma=(0.2, 0.9, 0.6), **base)
    p, y = logits.softmax(1), onehot(labels, 3)
    ce1 = -y[:, 1] * p[:, 1].log()
    close(f_b - f_a, (0.6 * ((1 - p[:, 1]) ** 0.9 - (1 - p[:, 1]) ** 0.4) * ce1).sum() / labels.numel())
    dims = (2, 3)
    tp, fp, fn = (p * y).sum(dims), (p * (1 - y)).sum(dims), ((1 - p) * y).sum(dims)
    d1 = 1 - ((tp + 1) / (tp + 0.6 * fn + 0.4 * fp + 1))[:, 1]
    close(t_b - t_a, (d1 ** (1 - 0.9) - d1 ** (1 - 0.4)).mean() / 3)


def test_asymmetric_and_symmetric_differ_as_the_formulas_say():
    logits, labels = random_case(8)
    delta, gamma = 0.6, 0.5
    fa, ta = _parts(logits, labels, delta=delta, gamma=gamma, asymmetric=True)
    fs, ts = _parts(logits, labels, delta=delta, gamma=gamma, asymmetric=False)
    p, y = logits.softmax(1), onehot(labels, 3)
    # focal: symmetric also modulates the rare classes (1, 2) by (1 - p)^gamma
    ce_rare = -(y[:, 1:] * p[:, 1:].log())
    close(fs - fa, (delta * ((1 - p[:, 1:]) ** gamma - 1) * ce_rare).sum() / labels.numel())
    assert fs < fa
    # Tversky: symmetric also enhances the common class 0
    dims = (2, 3)
    tp, fp, fn = (p * y).sum(dims), (p * (1 - y)).sum(dims), ((1 - p) * y).sum(dims)
    d0 = 1 - ((tp + 1) / (tp + delta * fn + (1 - delta) * fp + 1))[:, 0]
    close(ts - ta, (d0 ** (1 - gamma) - d0).mean() / 3)
    assert ts > ta
    # and the unified loss combines the parts with lambda on the focal part
    close(UnifiedFocalLoss(weight=0.3, asymmetric=False)(logits, labels), 0.3 * fs + 0.7 * ts)
    close(UnifiedFocalLoss(weight=0.3)(logits, labels), 0.3 * fa + 0.7 * ta)


def test_weight_one_and_zero_skip_the_other_part(monkeypatch):
    logits, labels = random_case(9)
    expected_focal = unified_focal_loss(logits, labels, weight=1.0)
    expected_tversky = unified_focal_loss(logits, labels, weight=0.0)

    def fail(*args, **kwargs):
        raise AssertionError("this part has weight 0 and must not be computed")

    with monkeypatch.context() as m:
        m.setattr(unified_module, "tversky_distance", fail)
        close(unified_focal_loss(logits, labels, weight=1.0), expected_focal)
        # the Tversky exponent constraint does not apply without the Tversky part: gamma = 2 is allowed
        assert torch.isfinite(UnifiedFocalLoss(weight=1.0, gamma=2.0)(logits, labels))
    with monkeypatch.context() as m:
        m.setattr(unified_module, "modulated_cross_entropy", fail)
        close(unified_focal_loss(logits, labels, weight=0.0), expected_tversky)
    # lambda weights the CE-based part (the paper's convention; mlyg puts its weight on the Tversky part)
    close(unified_focal_loss(logits, labels, weight=0.8), 0.8 * expected_focal + 0.2 * expected_tversky)


def test_weight_one_ignores_smooth_and_batch_dice():
    logits, labels = random_case(10)
    a = UnifiedFocalLoss(weight=1.0, smooth=1.0)(logits, labels)
    close(UnifiedFocalLoss(weight=1.0, smooth=1e-3, batch_dice=True)(logits, labels), a)


# ---------------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [UnifiedFocalLoss, SymmetricUnifiedFocalLoss, HybridFocalLoss])
def test_reduction_none_is_per_sample(cls):
    logits, labels = random_case(11, b=3)
    per_sample = cls(reduction="none")(logits, labels)
    assert per_sample.shape == (3,)
    singles = torch.stack([cls()(logits[i : i + 1], labels[i : i + 1]) for i in range(3)])
    close(per_sample, singles)
    close(cls(reduction="sum")(logits, labels), singles.sum())
    close(cls(reduction="mean")(logits, labels), singles.mean())  # equal voxel counts: mean of samples


def test_reduction_mean_counts_voxels_with_ignore():
    logits, labels = random_case(12, b=2, c=3, spatial=(4, 4))
    labels = labels.clone()
    labels[0, 0, :3] = 255  # sample 0 keeps 4 voxels, sample 1 all 16
    loss = UnifiedFocalLoss(weight=1.0, gamma=0.0, delta=0.5, ignore_index=255)
    # mean: over the 20 counted voxels of the batch, as torch's cross entropy with ignore_index
    close(loss(logits, labels), F.cross_entropy(logits, labels[:, 0], ignore_index=255) / 2)
    per_sample = UnifiedFocalLoss(weight=1.0, gamma=0.0, delta=0.5, ignore_index=255, reduction="none")(logits, labels)
    ce = F.cross_entropy(logits, labels[:, 0], ignore_index=255, reduction="none")
    close(per_sample, torch.stack([ce[0, 3:].mean(), ce[1].mean()]) / 2)  # each sample over its own voxels
    assert not torch.isclose(per_sample.mean(), loss(logits, labels))


def test_batch_dice_reductions():
    logits, labels = random_case(13, b=3)
    loss = UnifiedFocalLoss(batch_dice=True, reduction="none")(logits, labels)
    focal = UnifiedFocalLoss(weight=1.0, reduction="none")(logits, labels)
    batch_tversky = UnifiedFocalLoss(weight=0.0, batch_dice=True)(logits, labels)
    close(loss, 0.5 * focal + 0.5 * batch_tversky)  # the batch-level Tversky term is shared by every sample
    # batch_dice on B samples == one sample made of the B samples side by side
    joined_logits = torch.cat(logits.unbind(0), -1)[None]
    joined_labels = torch.cat(labels.unbind(0), -1)[None]
    close(UnifiedFocalLoss(batch_dice=True)(logits, labels), UnifiedFocalLoss()(joined_logits, joined_labels))


# ---------------------------------------------------------------------------------------------------
# ignore_index and mask
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(), dict(asymmetric=False, batch_dice=True), dict(gamma=(0.1, 0.2, 0.3))])
def test_ignore_index_equals_dropping_the_voxels(kwargs):
    logits, labels = random_case(14, b=1, spatial=(6, 5))
    labels = labels.clone()
    labels.view(-1)[[0, 3, 7, 8, 20, 29]] = 7
    loss = UnifiedFocalLoss(ignore_index=7, **kwargs)(logits, labels)
    keep = labels.view(-1) != 7
    kept = UnifiedFocalLoss(**kwargs)(logits.flatten(2)[..., keep], labels.flatten(2)[..., keep])
    close(loss, kept)
    # a mask does the same, with label maps and with one-hot targets
    mask = labels != 7
    close(UnifiedFocalLoss(**kwargs)(logits, labels.masked_fill(~mask, 0), mask=mask), kept)
    target = onehot(labels.masked_fill(~mask, 0), 3)
    close(UnifiedFocalLoss(**kwargs)(logits, target, mask=mask[:, 0]), kept)


def test_mask_in_multilabel_mode():
    logits, _ = random_case(15, b=1, c=2, spatial=(4, 6))
    y = torch.rand(logits.shape, generator=torch.Generator().manual_seed(1)) > 0.5
    mask = torch.rand(1, 1, 4, 6, generator=torch.Generator().manual_seed(2)) > 0.3
    keep = mask.view(-1)
    loss = UnifiedFocalLoss(multilabel=True)(logits, y, mask=mask)
    close(loss, UnifiedFocalLoss(multilabel=True)(logits.flatten(2)[..., keep], y.flatten(2)[..., keep]))


def test_ignore_index_combined_with_mask():
    logits, labels = random_case(16, b=1, spatial=(4, 4))
    labels = labels.clone()
    labels[0, 0, 0] = 9
    mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 3] = False
    keep = ((labels != 9) & mask).view(-1)
    loss = UnifiedFocalLoss(ignore_index=9)(logits, labels, mask=mask)
    close(loss, UnifiedFocalLoss()(logits.flatten(2)[..., keep], labels.flatten(2)[..., keep]))


def test_fully_ignored_sample_gives_zero_focal_part():
    logits, labels = random_case(17, b=2, spatial=(3, 3))
    labels = labels.clone()
    labels[1] = 4
    per_sample = UnifiedFocalLoss(weight=1.0, ignore_index=4, reduction="none")(logits, labels)
    assert per_sample[1] == 0
    close(UnifiedFocalLoss(weight=1.0, ignore_index=4)(logits, labels), per_sample[0])


# ---------------------------------------------------------------------------------------------------
# Absent classes, perfect and saturated predictions
# ---------------------------------------------------------------------------------------------------


def mlyg_asymmetric_focal_tversky(p, y, delta=0.6, gamma=0.5, epsilon=1e-7):
    """mlyg's ``asymmetric_focal_tversky_loss`` (binary, channels-first here): probabilities clipped to
    [epsilon, 1 - epsilon] and epsilon as smoothing."""
    p = p.clamp(epsilon, 1 - epsilon)
    dims = tuple(range(2, p.ndim))
    tp = (y * p).sum(dims)
    fn = (y * (1 - p)).sum(dims)
    fp = ((1 - y) * p).sum(dims)
    dice = (tp + epsilon) / (tp + delta * fn + (1 - delta) * fp + epsilon)
    return torch.stack([1 - dice[:, 0], (1 - dice[:, 1]) * (1 - dice[:, 1]) ** -gamma], -1).mean()


def test_absent_class_predicted_absent_has_zero_loss():
    # 3 classes, class 2 absent from the target and predicted absent everywhere; the rest predicted right
    labels = torch.tensor([0, 1, 1, 0, 0, 1, 0, 0]).view(1, 1, 2, 4)
    logits = 30.0 * onehot(labels, 3) - 15.0  # the true class at +15, the others at -15
    for kwargs in (dict(), dict(asymmetric=False), dict(weight=0.0), dict(gamma=(0.5, 0.3, 0.5))):
        loss = UnifiedFocalLoss(**kwargs)(logits, labels)
        assert 0 <= loss < 1e-5, kwargs
    # (1 - TI)^(1 - gamma) magnifies tiny distances when 1 - gamma is small: still the exact formula
    loss = UnifiedFocalLoss(gamma=(0.5, 0.3, 0.9))(logits, labels)
    expected = reference_unified(logits.softmax(1), onehot(labels, 3), weight=0.5, delta=0.6, gamma=(0.5, 0.3, 0.9))
    # (to 1e-4 only: FP = sum p - TP cancels for near-perfect classes, and the 0.1 power magnifies it)
    close(loss, expected, rtol=1e-4, atol=0)
    assert loss < 0.01


def test_absent_foreground_defect_of_the_public_ports():
    # binary, an all-background 4 x 4 image predicted all background: a perfect prediction
    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    logits = torch.cat([torch.full((1, 1, 4, 4), 10.0), torch.full((1, 1, 4, 4), -10.0)], 1).double()
    ours = AsymmetricFocalTverskyLoss(delta=0.6, gamma=0.5)(logits, labels)
    assert ours < 1e-4
    # mlyg (and MONAI): the clipped foreground probability 1e-7 at 16 voxels is a false-positive mass of
    # 16e-7, so TI_1 = 1e-7 / ((1 - delta) 16e-7 + 1e-7) = 1 / (1 + 0.4 * 16) and the loss is far from 0
    reference = mlyg_asymmetric_focal_tversky(logits.softmax(1), onehot(labels, 2))
    ti1 = 1 / (1 + 0.4 * 16)
    close(reference, (1 - ti1) ** 0.5 / 2, rtol=1e-6, atol=1e-9)
    assert reference > 0.45


@pytest.mark.parametrize(
    "loss",
    [
        UnifiedFocalLoss(),
        UnifiedFocalLoss(asymmetric=False, gamma=0.9),
        UnifiedFocalLoss(batch_dice=True, gamma=(0.2, 0.5, 0.9)),
        AsymmetricFocalTverskyLoss(gamma=0.95),
        SymmetricFocalLoss(gamma=0.5),
        HybridFocalLoss(),
    ],
    ids=["default", "symmetric", "batch_dice", "aft", "sf", "hybrid"],
)
@pytest.mark.parametrize("scale", [20.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perfect_and_saturated_predictions_have_finite_gradients(loss, scale, dtype):
    _, labels = random_case(18)
    right = (scale * (2 * onehot(labels, 3) - 1)).to(dtype).requires_grad_()
    value = loss(right, labels)
    value.backward()
    assert torch.isfinite(value) and value < 1e-3  # TI -> 1, p -> 1
    assert torch.isfinite(right.grad).all()
    wrong = (-scale * (2 * onehot(labels, 3) - 1)).to(dtype).requires_grad_()
    value = loss(wrong, labels)
    value.backward()
    assert torch.isfinite(value) and value > 0.1
    assert torch.isfinite(wrong.grad).all() and wrong.grad.abs().sum() > 0


def test_gradient_near_perfect_prediction_is_bounded():
    # (1 - TI)^(1 - gamma) has an unbounded derivative as TI -> 1; here it stays finite and small
    labels = torch.tensor([0, 1, 1, 0]).view(1, 1, 2, 2)
    for scale in (5.0, 10.0, 15.0, 20.0):
        logits = (scale * (2 * onehot(labels, 2) - 1)).requires_grad_()
        AsymmetricFocalTverskyLoss(gamma=0.9, smooth=1e-6)(logits, labels).backward()
        assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() < 1e3


@pytest.mark.parametrize("multilabel", [False, True])
def test_empty_foreground_and_all_background_batch(multilabel):
    logits, _ = random_case(19, b=2, c=3)
    logits.requires_grad_()
    target = torch.zeros_like(logits, dtype=torch.bool) if multilabel else torch.zeros(2, 1, 5, 4, dtype=torch.long)
    for kwargs in (dict(), dict(batch_dice=True), dict(asymmetric=False)):
        loss = UnifiedFocalLoss(multilabel=multilabel, **kwargs)
        value = loss(logits, target)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and value > 0
        assert torch.isfinite(grad).all()
        # predicting the empty foreground drives the loss to 0
        if multilabel:
            perfect = torch.full_like(logits, -20.0)
        else:
            perfect = torch.cat([torch.full((2, 1, 5, 4), 20.0), torch.full((2, 2, 5, 4), -20.0)], 1).double()
        assert loss(perfect, target) < 1e-3  # sqrt of a false-positive mass of 20 * 2e-9
