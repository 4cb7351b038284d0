"""Boundary-based losses: distance maps turn the segmentation contour into weights or costs.

    distance-map penalised CE (Caliva 2019):  L = (1/N) sum_i (1 + D_i) CE_i,  D = 1 on the contour -> 0 inside
    shape-aware CE:                           L = (1/N) sum_i (1 + d_i) CE_i,  d = distance to the contour
    boundary loss (Kervadec 2019):            L = (1/N) sum_i mean_{c >= 1} phi_ic p_ic, phi signed distance
    Hausdorff DT loss (Karimi 2019):          L = (1/N) sum_i mean_c (p_ic - y_ic)^2 (dp_ic^a + dy_ic^a)

Distance maps come from binary regions with ``scipy.ndimage.distance_transform_edt`` (``sampling=spacing``
for physical units), on the CPU, once per batch, without gradient: the target's classes (``y > 0.5``; each
channel and its complement with ``multilabel=True``) and, for the Hausdorff loss, the prediction at
``p > 0.5``. ``inside``: at a voxel of a region, the distance to the nearest voxel outside it (one spacing on
the contour), 0 elsewhere; ``outside``: at a voxel outside, the distance to the region, 0 inside. An empty or
full region has no contour and both maps 0, so the losses stay finite on absent classes. Ignored voxels
belong to no region and contribute no loss. Choices and peers: docs/losses-literature.md.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from ._autograd import func_transformed
from ._base import SegmentationLoss, check_bool, check_number, check_numbers, functional
from ._inputs import Prepared
from ._stats import BatchLoss, class_statistics, selected_values, voxel_mean
from .distribution import modulated_cross_entropy

__all__ = ["DistancePenalizedCELoss", "ShapeAwareLoss", "BoundaryLoss", "HausdorffDTLoss",
           "distance_penalized_ce_loss", "shape_aware_loss", "boundary_loss", "hausdorff_dt_loss"]

Spacing = Optional[Sequence[float]]

class _DistanceLoss(SegmentationLoss):
    """A loss with distance maps of the target: the voxel ``spacing`` they are measured in."""

    def __init__(self, *, spacing: Spacing = None, from_logits: bool = True, multilabel: bool = False,
                 ignore_index: Optional[int] = None, reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.spacing = None if spacing is None else check_numbers("spacing", spacing, 0.0, low_open=True, scalar=False)

    def spacing_for(self, prep: Prepared) -> Optional[tuple]:
        spatial = prep.scores.ndim - 2
        if self.spacing is not None and len(self.spacing) != spatial:
            raise ValueError(f"spacing has {len(self.spacing)} values but the input has {spatial} spatial axes "
                             f"(shape {tuple(prep.scores.shape)})")
        return self.spacing


@torch.no_grad()
def region_distances(
    regions: Tensor, spacing: Spacing = None, *, outside: bool = True, dtype: torch.dtype = torch.float32
) -> tuple:
    """Euclidean distance maps of binary regions (B, K, *S) (see the module docstring).

    Returns ``(inside, outside, has_contour)``: two ``dtype`` tensors shaped like ``regions`` on its device
    (``outside`` is None when not asked for), and a (B, K, 1, ...) bool tensor that broadcasts against them,
    False for empty or full regions.
    """
    if func_transformed():
        raise RuntimeError("the distance maps of the boundary losses come from scipy on the host, which torch.func "
                           "transforms cannot trace: train these losses with autograd (loss.backward())")
    masks = regions.detach().to("cpu", torch.bool).numpy()
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    inside = np.zeros(masks.shape, dtype=numpy_dtype)
    beyond = np.zeros(masks.shape, dtype=numpy_dtype) if outside else None
    has_contour = np.zeros(masks.shape[:2], dtype=bool)
    for index in np.ndindex(*masks.shape[:2]):
        region = masks[index]
        if region.any() and not region.all():
            has_contour[index] = True
            inside[index] = ndimage.distance_transform_edt(region, sampling=spacing)
            if outside:
                beyond[index] = ndimage.distance_transform_edt(~region, sampling=spacing)

    has_contour = has_contour.reshape(*has_contour.shape, *([1] * (masks.ndim - 2)))
    return tuple(None if a is None else torch.from_numpy(a).to(regions.device) for a in (inside, beyond, has_contour))


def _distance_weighted_ce(prep: Prepared, penalty: Tensor) -> BatchLoss:
    """Cross entropy with weight ``1 + penalty``, ``penalty`` (B, K, *S) a map per target region: summed to
    one voxel map for exclusive classes (each voxel lies in one region), per class and voxel for multilabel."""
    weight = 1 + (penalty if prep.multilabel else penalty.sum(1, keepdim=True))
    return modulated_cross_entropy(class_statistics(prep, cross_entropy=True, voxel_weight=weight, overlap=False), prep)


class DistancePenalizedCELoss(_DistanceLoss):
    r"""Distance-map penalised cross entropy (Caliva, Iriondo, Martinez, Majumdar, Pedoia, "Distance map
    loss penalty term for semantic segmentation", MIDL 2019).

    .. math:: L = -\frac{1}{N} \sum_i (1 + D_i) \sum_c y_{ic} \log p_{ic}, \qquad
              D_i = 1 - \frac{d_i - d_{min}}{d_{max} - d_{min}}

    ``d_i`` is the ``inside`` distance of voxel ``i`` in its target region and ``d_min, d_max`` its extremes
    over the region, per sample: 1 on the contour falling to 0 at the deepest voxels. SegLossOdyssey's
    ``compute_edts_forPenalizedLoss`` computes the same map but gives NaN (0 / 0) on a one-voxel-thin
    structure, which here is all contour (``D = 1``). A region without contour gets ``D = 0``.

    Args:
        spacing, from_logits, multilabel, ignore_index, reduction, ddp: as :class:`HausdorffDTLoss`.
    """

    def compute(self, prep: Prepared) -> BatchLoss:
        regions = prep.target > 0.5
        inside, _, has_contour = region_distances(regions, self.spacing_for(prep), outside=False, dtype=prep.prob.dtype)
        dims = tuple(range(2, inside.ndim))
        near = torch.where(regions, inside, float("inf")).amin(dims, keepdim=True)
        span = inside.amax(dims, keepdim=True) - near
        # a region of contour only (span 0) is all 1; regions without contour get 0 below
        penalty = torch.where(span > 0, 1 - (inside - near) / span.clamp_min(torch.finfo(span.dtype).tiny), 1.0)
        return _distance_weighted_ce(prep, torch.where(regions & has_contour, penalty, 0.0))


class ShapeAwareLoss(_DistanceLoss):
    r"""Shape-aware loss: cross entropy weighted by the distance to the ground-truth contour (after
    Hayder, He, Salzmann, "Boundary-aware instance segmentation", CVPR 2017, in the form of Jadon's survey,
    CIBCB 2020: :math:`L = \sum_i CE_i + \sum_i E_i\, CE_i`).

    .. math:: L = -\frac{1}{N} \sum_i (1 + d_i) \sum_c y_{ic} \log p_{ic}

    ``d_i`` is the ``inside`` distance of voxel ``i`` in its target region (not normalised: its scale is the
    structure size), so errors far from the contour (a far false positive, a hole deep inside) cost most.
    Jadon defines ``E_i`` through the predicted contour; here the weight depends on the target only, so no
    thresholded prediction (without gradient, jumping between steps) enters the loss and a sample's weights
    stay fixed; :class:`HausdorffDTLoss` uses both contours. A sample with a single label gives plain CE.

    Args:
        spacing, from_logits, multilabel, ignore_index, reduction, ddp: as :class:`HausdorffDTLoss`.
    """

    def compute(self, prep: Prepared) -> BatchLoss:
        inside, _, _ = region_distances(prep.target > 0.5, self.spacing_for(prep), outside=False, dtype=prep.prob.dtype)
        return _distance_weighted_ce(prep, inside)


class BoundaryLoss(_DistanceLoss):
    r"""Boundary loss (Kervadec, Bouchtiba, Desrosiers, Granger, Dolz, Ben Ayed, "Boundary loss for
    highly unbalanced segmentation", MIDL 2019 / Medical Image Analysis 67 (2021) 101851).

    .. math:: L = \frac{1}{N} \sum_i \operatorname{mean}_{c \in F} \phi_{ic}\, p_{ic}, \qquad
              \phi_c = \begin{cases} d^{out}_c & \text{outside class } c \\ -(d^{in}_c - 1) & \text{inside} \end{cases}

    over the foreground classes ``F`` (every channel with ``multilabel=True``), with Kervadec's signed
    distance map ``phi_c`` of the target (``-1`` stays one unit with ``spacing``). A class absent from the
    sample (or filling it) has ``phi = 0``: an all-background sample gives 0 with zero gradient. Train it
    with a region loss (Kervadec et al.: ``L_GDL + a L_B``, ``a`` raised from 0.01 by 0.01 per epoch); alone
    it tends to collapse to empty predictions.

    Args:
        spacing: optional voxel spacing, one value > 0 per spatial axis, for distances in physical units
            (default: one voxel = 1).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`);
            "mean" is over all counted voxels of the batch.
    """

    def compute(self, prep: Prepared) -> BatchLoss:
        prob, target = selected_values(prep, include_background=prep.multilabel)  # classes 1.., or every channel
        regions = target > 0.5
        inside, outside, has_contour = region_distances(regions, self.spacing_for(prep), dtype=prob.dtype)
        # Kervadec's one_hot2dist: distance outside, -(distance - 1) inside (0 on the inner contour).
        signed = (outside - torch.where(regions, inside - 1, 0.0)) * has_contour
        per_voxel = (prob * signed).sum(1) / prob.shape[1]
        return voxel_mean(per_voxel, prep)


class HausdorffDTLoss(_DistanceLoss):
    r"""Hausdorff distance loss via distance transforms (Karimi & Salcudean, "Reducing the Hausdorff
    distance in medical image segmentation with convolutional neural networks", IEEE TMI 39(2) 2020, 499-513),
    mean over classes.

    .. math:: L = \frac{1}{N} \sum_i \operatorname{mean}_c (p_{ic} - y_{ic})^2 \big(d^{p}_{ic}{}^{\alpha}
              + d^{y}_{ic}{}^{\alpha}\big)

    ``d^y_c`` is the unsigned distance to the contour of target class ``c`` (``inside + outside``) and
    ``d^p_c`` the same for the prediction at ``p_c > 0.5``, both without gradient: errors far from either
    contour, which drive the Hausdorff distance, cost most. Keeps the background by default (MONAI's default
    drops it), as with ``multilabel=True`` channel 0 is a real region.

    Args:
        alpha: exponent > 0 of the distances (default 2).
        include_background: keep input channel 0 (default True), as :class:`RegionLoss`.
        spacing: optional voxel spacing, one value > 0 per spatial axis, for distances in physical units
            (default: one voxel = 1).
        from_logits, multilabel, ignore_index, reduction, ddp: as every loss (:class:`SegmentationLoss`);
            "mean" is over all counted voxels of the batch.
    """

    def __init__(self, *, alpha: float = 2.0, include_background: bool = True, spacing: Spacing = None,
                 from_logits: bool = True, multilabel: bool = False, ignore_index: Optional[int] = None,
                 reduction: str = "mean", ddp: bool = False) -> None:
        super().__init__(spacing=spacing, from_logits=from_logits, multilabel=multilabel, ignore_index=ignore_index,
                         reduction=reduction, ddp=ddp)
        self.alpha = check_number("alpha", alpha, 0.0, low_open=True, why=" (the distance exponent)")
        self.include_background = check_bool("include_background", include_background)

    def compute(self, prep: Prepared) -> BatchLoss:
        prob, onehot = selected_values(prep, self.include_background)
        counted = prob if prep.mask is None else prob * prep.mask
        k = prob.shape[1]
        regions = torch.cat([counted.detach() > 0.5, onehot > 0.5], 1)
        inside, outside, _ = region_distances(regions, self.spacing_for(prep), dtype=prob.dtype)
        field = (inside + outside).pow(self.alpha)
        per_voxel = ((prob - onehot).square() * (field[:, :k] + field[:, k:])).sum(1) / k
        return voxel_mean(per_voxel, prep)


distance_penalized_ce_loss = functional(DistancePenalizedCELoss)
shape_aware_loss = functional(ShapeAwareLoss)
boundary_loss = functional(BoundaryLoss)
hausdorff_dt_loss = functional(HausdorffDTLoss)
