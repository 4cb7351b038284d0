"""The unifocal nnU-Net trainers, one row each.

A row makes two trainer classes (:mod:`nnunet_trainers.trainers` generates them): ``<name>``, nnU-Net's
default trainer with the row's loss, and ``<name>Short``, the same with a short schedule for tests and
demos. The loss is built from the row alone (:func:`nnunet_trainers.loss_builder.build_loss`): its class
in :mod:`unifocal.losses` gets the settings its signature takes (:data:`nnunet_trainers.config.SETTINGS`,
then any other keyword parameter of the loss), the row's fixed arguments and nnU-Net's mode (regions,
ignore label, batch Dice, DDP). Adding a loss's trainer is one row.

Nothing here imports nnunetv2 or torch, so that commands can check a trainer's settings without them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

__all__ = ["TrainerRow", "TRAINERS", "TRAINER_NAMES", "TRAINER_LOSSES", "SHORT", "row_of", "row_of_loss"]

SHORT = "Short"


@dataclass(frozen=True)
class TrainerRow:
    """One trainer and its ``Short`` variant.

    Attributes:
        name: the trainer's name (``-tr``); ``name + "Short"`` is the short variant.
        loss: the loss's name in the settings record and logs; None for nnU-Net's own loss.
        loss_class: the loss's class in :mod:`unifocal.losses`.
        doc: what the trainer trains (its docstring).
        fixed: loss arguments the trainer sets (``asymmetric=True``).
        renames: setting -> the loss parameter it sets, where their names differ (Combo: weight -> ce_weight).
        complements: loss parameter -> the parameter it is one minus (Tversky: alpha = 1 - beta).
        short_only: only the ``Short`` variant exists (the baseline: nnU-Net's own trainer is the other).
    """

    name: str
    loss: Optional[str]
    loss_class: str
    doc: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    renames: Mapping[str, str] = field(default_factory=dict)
    complements: Mapping[str, str] = field(default_factory=dict)
    short_only: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name + SHORT,) if self.short_only else (self.name, self.name + SHORT)


_TVERSKY = {"renames": {"delta": "beta"}, "complements": {"alpha": "beta"}}

TRAINERS: tuple[TrainerRow, ...] = (
    TrainerRow("UnifiedFocalTrainer", "asymmetric_unified_focal", "UnifiedFocalLoss",
               "Asymmetric Unified Focal loss (Yeung et al. 2022); paper defaults lambda 0.5, delta 0.6, gamma 0.5, "
               "every foreground class rare", fixed={"asymmetric": True}),
    TrainerRow("SymmetricUnifiedFocalTrainer", "symmetric_unified_focal", "UnifiedFocalLoss",
               "Symmetric Unified Focal loss (Yeung et al. 2022), same defaults", fixed={"asymmetric": False}),
    TrainerRow("FocalTrainer", "focal", "FocalLoss", "Focal loss (Lin et al. 2017), gamma 2, no alpha"),
    TrainerRow("TverskyTrainer", "tversky", "TverskyLoss",
               "Tversky loss (Salehi et al. 2017), false-negative weight delta 0.7, false positives 1 - delta",
               **_TVERSKY),
    TrainerRow("FocalTverskyTrainer", "focal_tversky", "FocalTverskyLoss",
               "Focal Tversky loss (Abraham & Khan 2019), delta 0.7, gamma 4/3 (exponent 1/gamma)", **_TVERSKY),
    TrainerRow("ComboTrainer", "combo", "ComboLoss",
               "Combo loss (Taghanaki et al. 2019), cross-entropy weight (weight) 0.5, beta (delta) 0.5",
               renames={"weight": "ce_weight", "delta": "beta"}),
    TrainerRow("MatthewsCorrelationTrainer", "matthews_correlation", "MatthewsCorrelationLoss",
               "Matthews correlation coefficient loss (Abhishek & Hamarneh 2021), smooth 1"),
    TrainerRow("BaselineTrainer", None, "",
               "nnU-Net's default loss (Dice + CE, or Dice + BCE for regions): the reference the short runs are "
               "compared with", short_only=True),
)

TRAINER_NAMES = tuple(name for row in TRAINERS for name in row.names)
_ROW_OF_NAME = {name: row for row in TRAINERS for name in row.names}
# trainer name (with or without "Short") -> its loss's record name, None for nnU-Net's own loss
TRAINER_LOSSES = {name: row.loss for name, row in _ROW_OF_NAME.items()}


def row_of(trainer: str) -> Optional[TrainerRow]:
    """The row of a trainer name (also ``<name>Short`` and ``<name>_<settings>``); None if not unifocal's."""
    return _ROW_OF_NAME.get(trainer.partition("_")[0])


def row_of_loss(loss: str) -> Optional[TrainerRow]:
    """The row whose loss has the record name ``loss``."""
    return next((row for row in TRAINERS if row.loss is not None and row.loss == loss), None)
