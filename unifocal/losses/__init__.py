"""The Unified Focal loss family and the segmentation losses it generalises.

Every loss takes raw network outputs (``from_logits=True``) of shape (B, C, *S), 2D or 3D, and a label
map (B, 1, *S) / (B, *S) or one-hot target (B, C, *S); ``multilabel=True`` switches from softmax classes
to independent sigmoid channels (regions). Each loss is an ``nn.Module`` whose hyperparameters are
validated attributes (:mod:`unifocal.losses._base`), with a functional twin ``xyz_loss(input, target,
**options)`` that builds and calls the module. The mathematics is documented in ``docs/losses.md``.
"""

from . import boundary, compound, deep_supervision, distribution, region, unified
from .boundary import *  # noqa: F401,F403  (each module's __all__ lists its losses, modules and functions)
from .compound import *  # noqa: F401,F403
from .deep_supervision import *  # noqa: F401,F403
from .distribution import *  # noqa: F401,F403
from .region import *  # noqa: F401,F403
from .unified import *  # noqa: F401,F403

__all__ = sorted([*boundary.__all__, *compound.__all__, *deep_supervision.__all__, *distribution.__all__,
                  *region.__all__, *unified.__all__])
