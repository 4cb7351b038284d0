"""nnU-Net v2 trainers that train with the Unified Focal loss and the paper's baselines.

Each trainer is nnU-Net's default ``nnUNetTrainer`` with another ``_build_loss``; everything else
(plans, augmentation, schedule, inference) is unchanged. Make them visible to ``nnUNetv2_train`` and
``nnUNetv2_predict`` with ``export nnUNet_extTrainer=$(unifocal nnunet-path)`` (docs/nnunet.md).

Loss settings come from ``UNIFOCAL_*`` environment variables or a JSON file
(:mod:`nnunet_trainers.config`); the resolved settings are printed to the training log, written to
``unifocal_loss.json`` in the fold folder and stored in every checkpoint (``init_args["unifocal_loss"]``).
Continuing a training (``--c``) or validating (``--val``) rebuilds the loss from the checkpoint, whatever
the environment says now (a difference is logged).
"""

from __future__ import annotations

import json
from os.path import join
from typing import Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from . import TRAINER_NAMES
from .config import load_settings, short_schedule
from .loss_builder import ResolvedLoss, TrainerState, build_loss, nnunet_ds_weights, resolve
from .rare_classes import fold_gamma_proposal

__all__ = ["UnifocalTrainerBase", *TRAINER_NAMES, "CHECKPOINT_KEY"]

CHECKPOINT_KEY = "unifocal_loss"
RECORD_FILE = "unifocal_loss.json"


class UnifocalTrainerBase(nnUNetTrainer):
    """nnU-Net's trainer with a loss from :mod:`nnunet_trainers.loss_builder`; subclasses pick the loss
    in ``_build_loss`` by calling :meth:`_build_unifocal_loss`."""

    def _build_unifocal_loss(self, loss: str) -> torch.nn.Module:
        state = TrainerState.from_trainer(self)
        resolved = resolve(loss, load_settings(), state,
                           gamma_provider=lambda: fold_gamma_proposal(self, log=self.print_to_log_file))
        return self._use_resolved(resolved, state)

    def _use_resolved(self, resolved: ResolvedLoss, state: TrainerState) -> torch.nn.Module:
        module = build_loss(resolved, state)
        self._unifocal_resolved = resolved
        record = resolved.to_record()
        self.my_init_kwargs[CHECKPOINT_KEY] = record
        self.print_to_log_file(resolved.describe(), also_print_to_console=self.local_rank == 0)
        if self.local_rank == 0 and self.output_folder is not None:
            with open(join(self.output_folder, RECORD_FILE), "w") as handle:
                json.dump({"trainer": self.__class__.__name__, **record}, handle, indent=2)
        return module

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """nnU-Net's checkpoint loading, then the loss of the checkpoint (if it differs from the one the
        current environment gave)."""
        super().load_checkpoint(filename_or_checkpoint)
        current = getattr(self, "_unifocal_resolved", None)
        record = self.my_init_kwargs.get(CHECKPOINT_KEY)
        if current is None:
            return
        if record is None:
            self.print_to_log_file("unifocal: the checkpoint holds no loss settings; keeping the current ones")
            self.my_init_kwargs[CHECKPOINT_KEY] = current.to_record()
            return
        stored = ResolvedLoss.from_record(record)
        if stored.same_loss(current):
            return
        state = TrainerState.from_trainer(self)
        if state.deep_supervision:
            stored.ds_weights = nnunet_ds_weights(state.num_ds_outputs, stored.ds_scheme, state)
        self.print_to_log_file(
            "unifocal: continuing with the loss settings stored in the checkpoint; the current environment "
            f"asked for {current.to_record()['params']} (ds {current.ds_scheme!r}), which is NOT used")
        self.loss = self._use_resolved(stored, state)


class UnifiedFocalTrainer(UnifocalTrainerBase):
    """Asymmetric Unified Focal loss (Yeung et al. 2022), paper defaults: lambda 0.5, delta 0.6, gamma 0.5,
    every foreground class rare. Settings: weight, delta, gamma (or "auto"), rare_classes, ds_weights."""

    def _build_loss(self):
        return self._build_unifocal_loss("asymmetric_unified_focal")


class SymmetricUnifiedFocalTrainer(UnifocalTrainerBase):
    """Symmetric Unified Focal loss, same defaults and settings as :class:`UnifiedFocalTrainer`."""

    def _build_loss(self):
        return self._build_unifocal_loss("symmetric_unified_focal")


class FocalTrainer(UnifocalTrainerBase):
    """Focal loss (Lin et al. 2017), gamma 2, no alpha. Settings: gamma, ds_weights."""

    def _build_loss(self):
        return self._build_unifocal_loss("focal")


class TverskyTrainer(UnifocalTrainerBase):
    """Tversky loss (Salehi et al. 2017), false-negative weight delta 0.7 (false positives 0.3), background
    included. Settings: delta, ds_weights."""

    def _build_loss(self):
        return self._build_unifocal_loss("tversky")


class FocalTverskyTrainer(UnifocalTrainerBase):
    """Focal Tversky loss (Abraham & Khan 2019), delta 0.7, gamma 4/3 (exponent 1/gamma).
    Settings: delta, gamma, ds_weights."""

    def _build_loss(self):
        return self._build_unifocal_loss("focal_tversky")


class ComboTrainer(UnifocalTrainerBase):
    """Combo loss (Taghanaki et al. 2019), alpha 0.5 (``weight``), beta 0.5 (``delta``).
    Settings: weight, delta, ds_weights."""

    def _build_loss(self):
        return self._build_unifocal_loss("combo")


class _ShortSchedule:
    """Short training for tests and demos: ``UNIFOCAL_NUM_EPOCHS`` (5), ``UNIFOCAL_ITERATIONS_PER_EPOCH``
    (20), ``UNIFOCAL_VAL_ITERATIONS`` (5). Keeps nnU-Net's exact ``__init__`` signature (nnU-Net records its
    init arguments by introspection)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        schedule = short_schedule()
        for attribute, value in schedule.items():
            setattr(self, attribute, value)
        self.print_to_log_file(f"unifocal short schedule: {schedule}", also_print_to_console=False)


class UnifiedFocalTrainerShort(_ShortSchedule, UnifiedFocalTrainer):
    """:class:`UnifiedFocalTrainer` with the short schedule."""


class SymmetricUnifiedFocalTrainerShort(_ShortSchedule, SymmetricUnifiedFocalTrainer):
    """:class:`SymmetricUnifiedFocalTrainer` with the short schedule."""


class FocalTrainerShort(_ShortSchedule, FocalTrainer):
    """:class:`FocalTrainer` with the short schedule."""


class TverskyTrainerShort(_ShortSchedule, TverskyTrainer):
    """:class:`TverskyTrainer` with the short schedule."""


class FocalTverskyTrainerShort(_ShortSchedule, FocalTverskyTrainer):
    """:class:`FocalTverskyTrainer` with the short schedule."""


class ComboTrainerShort(_ShortSchedule, ComboTrainer):
    """:class:`ComboTrainer` with the short schedule."""


class BaselineTrainerShort(_ShortSchedule, nnUNetTrainer):
    """nnU-Net's default loss (Dice + CE, or Dice + BCE for regions) with the short schedule: the
    reference the short Unified Focal runs are compared with."""
