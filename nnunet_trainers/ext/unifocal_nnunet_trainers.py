"""Re-exports the unifocal trainers for nnU-Net's ``nnUNet_extTrainer`` lookup (see the package docstring).

nnU-Net looks a trainer up with ``hasattr``/``getattr`` on this module; the module ``__getattr__`` answers
the names that carry loss settings (``UnifiedFocalTrainer_gamma0.3``, see :mod:`nnunet_trainers.variants`).
"""

from nnunet_trainers.trainers import *  # noqa: F401,F403
from nnunet_trainers.trainers import __all__, __getattr__  # noqa: F401
