"""The Unified Focal loss family and the segmentation losses it generalises.

Every loss takes raw network outputs (``from_logits=True``) of shape (B, C, *S), 2D or 3D, and a label
map (B, 1, *S) / (B, *S) or one-hot target (B, C, *S); ``multilabel=True`` switches from softmax classes
to independent sigmoid channels (regions). Each loss is an ``nn.Module`` with a functional twin.
The mathematics is documented in ``docs/losses.md``.
"""

from .deep_supervision import WEIGHT_SCHEMES, DeepSupervisionLoss, deep_supervision_weights
from .distribution import (
    BalancedCrossEntropyLoss,
    CrossEntropyLoss,
    FocalLoss,
    WeightedCrossEntropyLoss,
    balanced_cross_entropy_loss,
    cross_entropy_loss,
    focal_loss,
    weighted_cross_entropy_loss,
)
from .region import (
    DiceLoss,
    FocalTverskyLoss,
    JaccardLoss,
    TverskyLoss,
    dice_loss,
    focal_tversky_loss,
    jaccard_loss,
    tversky_loss,
)
from .unified import (
    AsymmetricFocalLoss,
    AsymmetricFocalTverskyLoss,
    AsymmetricUnifiedFocalLoss,
    HybridFocalLoss,
    SymmetricFocalLoss,
    SymmetricFocalTverskyLoss,
    SymmetricUnifiedFocalLoss,
    UnifiedFocalLoss,
    hybrid_focal_loss,
    unified_focal_loss,
)

__all__ = [
    "AsymmetricFocalLoss",
    "AsymmetricFocalTverskyLoss",
    "AsymmetricUnifiedFocalLoss",
    "BalancedCrossEntropyLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "HybridFocalLoss",
    "JaccardLoss",
    "SymmetricFocalLoss",
    "SymmetricFocalTverskyLoss",
    "SymmetricUnifiedFocalLoss",
    "TverskyLoss",
    "UnifiedFocalLoss",
    "WeightedCrossEntropyLoss",
    "WEIGHT_SCHEMES",
    "balanced_cross_entropy_loss",
    "cross_entropy_loss",
    "deep_supervision_weights",
    "dice_loss",
    "focal_loss",
    "focal_tversky_loss",
    "hybrid_focal_loss",
    "jaccard_loss",
    "tversky_loss",
    "unified_focal_loss",
    "weighted_cross_entropy_loss",
]
