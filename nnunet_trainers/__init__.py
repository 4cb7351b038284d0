"""nnU-Net v2 trainers for the Unified Focal loss family (see docs/nnunet.md).

Importing this package does not import nnunetv2: ``unifocal nnunet-path`` and :func:`ext_trainer_path`
work without it. The trainer classes live in :mod:`nnunet_trainers.trainers` (which needs
``nnunetv2>=2.8``) and are also reachable as attributes of this package, imported on first access, as
are the trainers whose names carry loss settings (``UnifiedFocalTrainer_gamma0.3``,
:mod:`nnunet_trainers.variants`).

nnU-Net finds them through its ``nnUNet_extTrainer`` environment variable, which must point at the thin
folder returned by :func:`ext_trainer_path` (its modules only re-export the classes)::

    export nnUNet_extTrainer=$(unifocal nnunet-path)
"""

from __future__ import annotations

from pathlib import Path

from .trainer_table import TRAINER_LOSSES, TRAINER_NAMES

__all__ = ["ext_trainer_path", "TRAINER_NAMES", "TRAINER_LOSSES"]


def ext_trainer_path() -> Path:
    """The folder to put in ``nnUNet_extTrainer``."""
    return Path(__file__).resolve().parent / "ext"


def __getattr__(name: str):
    if name.partition("_")[0] in TRAINER_NAMES or name == "UnifocalTrainerBase":
        from . import trainers

        return getattr(trainers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
