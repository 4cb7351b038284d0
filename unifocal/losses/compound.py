"""Compound losses: a cross-entropy part and a Dice part, both from one pass of class statistics.

    Combo (Taghanaki 2019):             L = alpha CE_beta - (1 - alpha) mean_c DSC_c
    Dice + CE (MONAI's DiceCELoss):     L = lambda_dice L_Dice + lambda_ce CE
    Exponential logarithmic (Wong 2018): L = w_dice E_c[(-ln DSC_c)^gamma_dice] + w_ce E_i[w_l (-ln p_il)^gamma_ce]

with the soft Dice coefficient ``DSC_c = (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)`` and the smoothing ``s``
of :class:`~unifocal.losses.DiceLoss`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._base import check_number, check_unit_interval, functional
from ._inputs import Prepared
from ._stats import (
    BatchLoss,
    at_target,
    batch_total,
    class_mean,
    class_roles,
    class_statistics,
    class_table,
    per_class,
    region_classes,
    role_weights,
    safe_pow,
    voxel_mean,
    weighted_sum,
)
from .distribution import check_class_weight, modulated_cross_entropy
from .region import RegionLoss

__all__ = ["ComboLoss", "DiceCELoss", "ExponentialLogarithmicLoss", "combo_loss", "dice_ce_loss",
           "exponential_logarithmic_loss"]

class ComboLoss(RegionLoss):
    r"""Combo loss (Taghanaki, Zheng, Zhou, Georgescu, Sharma, Xu, Comaniciu, Hamarneh, "Combo loss: Handling
    input and output imbalance in multi-organ segmentation", CMIG 75 (2019) 24-33).

    .. math:: L = \alpha\, \Big(-\frac{1}{N} \sum_i \sum_c b_c\, y_{ic} \log p_{ic}\Big)
              - (1 - \alpha)\, \operatorname{mean}_c \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}

    with Taghanaki's ``alpha`` as ``ce_weight``. ``b_c = beta`` on the foreground and ``1 - beta`` on the
    background (Taghanaki's modified cross entropy, :class:`BalancedCrossEntropyLoss`; ``beta > 0.5`` punishes
    false negatives more). The Dice mean includes the background by default (as mlyg's ``combo_loss``); with
    ``multilabel=True`` it averages each channel's binary Dice, the channel's and its complement's, as its
    cross entropy and the Unified Focal loss do. ``include_background=False`` leaves channel 0 out, as for
    every loss: with exclusive classes that is Taghanaki et al.'s foreground-only form. The identity
    ``UnifiedFocalLoss(weight=0.5, gamma=0, delta=0.5, smooth=s / 2) == ComboLoss(smooth=s) + 0.5`` (tested)
    holds for the default. The loss is negative for good predictions, as in the paper.

    Args:
        ce_weight: alpha in [0, 1], the weight of the cross-entropy part; the Dice part has 1 - alpha
            (default 0.5).
        beta: weight in [0, 1] of the foreground classes in the cross entropy (default 0.5).
        smooth, include_background, batch_dice: of the Dice part, as :class:`RegionLoss` (defaults 1, True,
            False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, ce_weight: float = 0.5, beta: float = 0.5, smooth: float = 1.0,
                 include_background: bool = True, batch_dice: bool = False, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False) -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.ce_weight = check_unit_interval("ce_weight", ce_weight)
        self.beta = check_unit_interval("beta", beta)

    def classes(self, prep: Prepared) -> Union[slice, list[int]]:
        """As :class:`RegionLoss`; with ``multilabel=True`` each kept channel with its complement."""
        kept = region_classes(prep, self.include_background)
        if not prep.multilabel:
            return kept
        channels = range(kept.start - prep.num_problems, prep.num_problems)
        return [*channels, *(c + prep.num_problems for c in channels)]  # the complements come first

    def compute(self, prep: Prepared) -> BatchLoss:
        stats = class_statistics(prep, cross_entropy=True)
        cross_entropy = modulated_cross_entropy(stats, prep, role_weights(class_roles(prep), self.beta, 1 - self.beta))
        dice = class_mean(1 - self.dice_distance(self.confusion(prep, stats)), prep.batch_size)
        return cross_entropy.scaled(self.ce_weight).plus(dice.scaled(-(1.0 - self.ce_weight)))


class DiceCELoss(RegionLoss):
    r"""Soft Dice loss plus cross entropy, the default compound loss of nnU-Net and MONAI.

    .. math:: L = w_{dice}\, \operatorname{mean}_c \Big[1 - \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}\Big]
              + w_{ce}\, CE

    with :class:`~unifocal.losses.DiceLoss` and :class:`~unifocal.losses.CrossEntropyLoss` (per-channel BCE with
    ``multilabel=True``; with ``class_weight`` torch's weighted mean), both from one pass of class statistics.
    Equal to MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=s, smooth_dr=s)`` (differences:
    docs/losses-literature.md); nnU-Net's ``DC_and_CE_loss`` is ``include_background=False`` with batch Dice.

    Args:
        dice_weight: w_dice >= 0, the weight of the Dice part (MONAI's ``lambda_dice``; default 1).
        ce_weight: w_ce >= 0, the weight of the cross-entropy part (MONAI's ``lambda_ce``; default 1).
        class_weight: optional per-class CE weights (>= 0, one per channel).
        smooth, include_background, batch_dice: of the Dice part, as :class:`RegionLoss` (defaults 1, True,
            False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 class_weight: Optional[Sequence[float]] = None, smooth: float = 1.0, include_background: bool = True,
                 batch_dice: bool = False, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.dice_weight = check_number("dice_weight", dice_weight, 0.0)
        self.ce_weight = check_number("ce_weight", ce_weight, 0.0)
        self.class_weight = check_class_weight(class_weight)

    def compute(self, prep: Prepared) -> BatchLoss:
        dice_formed = self.dice_weight > 0 or self.ce_weight == 0  # with both weights 0, times 0 (weighted_sum)
        stats = class_statistics(prep, cross_entropy=self.ce_weight > 0, overlap=dice_formed)

        def cross_entropy() -> BatchLoss:
            weight = None if self.class_weight is None else per_class(self.class_weight, prep, "class_weight")
            return modulated_cross_entropy(stats, prep, weight, weighted_mean=True)

        def dice() -> BatchLoss:
            return class_mean(self.dice_distance(self.confusion(prep, stats)), prep.batch_size)

        return weighted_sum([(self.dice_weight, dice), (self.ce_weight, cross_entropy)])


def frequency_weights(prep: Prepared) -> Tensor:
    """Wong et al.'s label weights ``w_l = (sum_k f_k / f_l)^0.5``, (1, K, 1, ...), from the counted voxels
    ``f_l`` of class ``l`` in the batch (of every rank with ``ddp``; per channel against its complement with
    ``multilabel=True``; 0 for an absent class, whose weight is never used). No gradient."""
    frequency = batch_total(prep.target.detach().flatten(2).sum(2), prep)[0]  # of the global batch under ddp
    total = frequency.sum() / prep.num_problems
    weights = torch.where(frequency > 0, (total / frequency.clamp_min(torch.finfo(frequency.dtype).tiny)).sqrt(),
                          torch.zeros_like(frequency))
    return weights.view(1, -1, *([1] * (prep.scores.ndim - 2)))


class ExponentialLogarithmicLoss(RegionLoss):
    r"""Exponential logarithmic loss (Wong, Moradi, Tang, Syeda-Mahmood, "3D segmentation with exponential
    logarithmic loss for highly unbalanced object sizes", MICCAI 2018).

    .. math:: L = w_{dice}\, \operatorname{mean}_c \big(-\ln DSC_c\big)^{\gamma_{dice}}
              + w_{ce}\, \frac{1}{N} \sum_i \sum_l y_{il}\, w_l \big(-\ln p_{il}\big)^{\gamma_{ce}},
              \qquad DSC_c = \frac{2 TP_c + s}{2 TP_c + FP_c + FN_c + s}

    Label weights ``w_l = (sum_k f_k / f_l)^0.5`` from the class frequencies ``f`` of the current batch
    (:func:`frequency_weights`); Wong et al. count them over the training set: pass those as
    ``class_weight``. Defaults are the paper's; the gradient of ``x^gamma`` is stopped below ``x = 1e-6``.

    Args:
        dice_weight: w_dice >= 0 (default 0.8).
        ce_weight: w_ce >= 0 (default 0.2).
        gamma_dice: exponent > 0 of the Dice part (default 0.3).
        gamma_ce: exponent > 0 of the cross-entropy part (default 0.3).
        class_weight: fixed label weights w_l (one per channel; in multilabel mode a channel's weight applies
            to its complement too), or None for the batch frequency weights.
        smooth, include_background, batch_dice: of the Dice part, as :class:`RegionLoss` (defaults 1, True,
            False).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`).
    """

    def __init__(self, *, dice_weight: float = 0.8, ce_weight: float = 0.2, gamma_dice: float = 0.3,
                 gamma_ce: float = 0.3, class_weight: Optional[Sequence[float]] = None, smooth: float = 1.0,
                 include_background: bool = True, batch_dice: bool = False, from_logits: bool = True,
                 multilabel: bool = False, ignore_index: Optional[int] = None, reduction: str = "mean",
                 ddp: bool = False) -> None:
        super().__init__(smooth=smooth, include_background=include_background, batch_dice=batch_dice,
                         from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.dice_weight = check_number("dice_weight", dice_weight, 0.0)
        self.ce_weight = check_number("ce_weight", ce_weight, 0.0)
        self.gamma_dice = check_number("gamma_dice", gamma_dice, 0.0, low_open=True)
        self.gamma_ce = check_number("gamma_ce", gamma_ce, 0.0, low_open=True)
        self.class_weight = check_class_weight(class_weight)

    def compute(self, prep: Prepared) -> BatchLoss:
        def dice() -> BatchLoss:
            distance = self.dice_distance(self.confusion(prep))
            # -ln DSC = -log1p(-(1 - DSC)): exact as DSC -> 1; safe_pow keeps the gradient of x^gamma finite at 0.
            return class_mean(safe_pow(-torch.log1p(-distance), self.gamma_dice), prep.batch_size)

        def cross_entropy() -> BatchLoss:
            weight = (frequency_weights(prep) if self.class_weight is None
                      else class_table(per_class(self.class_weight, prep, "class_weight"), prep.scores))
            if prep.labels is None:  # a dense target can put mass on every class
                terms = (prep.target * safe_pow(-prep.log_prob, self.gamma_ce) * weight).sum(1)
            else:  # a label map only on each voxel's own class: one power per voxel, not one per class
                onehot = prep.target
                terms = (at_target(weight, onehot) * safe_pow(-at_target(prep.log_prob, onehot), self.gamma_ce))[:, 0]
            return voxel_mean(terms / prep.num_problems, prep)

        return weighted_sum([(self.dice_weight, dice), (self.ce_weight, cross_entropy)])


combo_loss = functional(ComboLoss)
dice_ce_loss = functional(DiceCELoss)
exponential_logarithmic_loss = functional(ExponentialLogarithmicLoss)
