"""Re-exports the unifocal trainers for nnU-Net's ``nnUNet_extTrainer`` lookup (see the package docstring)."""

from nnunet_trainers.trainers import *  # noqa: F401,F403
from nnunet_trainers.trainers import __all__  # noqa: F401
