"""nnU-Net v2 trainers that train with the Unified Focal loss and the paper's baselines.

Each trainer is nnU-Net's default ``nnUNetTrainer`` with another ``_build_loss``; everything else
(plans, augmentation, schedule, inference) is unchanged. Make them visible to ``nnUNetv2_train`` and
``nnUNetv2_predict`` with ``export nnUNet_extTrainer=$(unifocal nnunet-path)`` (docs/nnunet.md).

Loss settings come from the trainer's name (``UnifiedFocalTrainer_gamma0.3``, :mod:`nnunet_trainers.variants`;
this module answers such names through its module ``__getattr__``), then from ``UNIFOCAL_*`` environment
variables or a JSON file (:mod:`nnunet_trainers.config`). The resolved settings are printed to the training
log, written to ``unifocal_loss.json`` in the fold folder and stored in every checkpoint
(``init_args["unifocal_loss"]``). A new training in a fold folder whose ``unifocal_loss.json`` records other
settings is refused before the first epoch. Continuing a training (``--c``) or validating (``--val``)
rebuilds the loss from the checkpoint without reading the environment (a difference is logged), and
checkpoints are loaded with ``torch.load(weights_only=True)`` (:mod:`nnunet_trainers.checkpoint`).
"""

from __future__ import annotations

import json
import os
from os.path import isfile, join
from typing import Optional, Union

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch._dynamo import OptimizedModule

from unifocal.run_settings import RECORD_FILE, read_record

from .checkpoint import load_checkpoint_file
from .config import AUTO, Settings, SettingsError, load_settings, short_schedule
from .loss_builder import ResolvedLoss, TrainerState, build_loss, nnunet_ds_weights, resolve
from .rare_classes import fold_gamma_proposal
from .trainer_table import SHORT, TRAINER_NAMES, TRAINERS, TrainerRow
from .variants import combine_settings, parse_variant, variant_name

__all__ = ["UnifocalTrainerBase", *TRAINER_NAMES, "CHECKPOINT_KEY", "RECORD_FILE", "variant_trainer"]

CHECKPOINT_KEY = "unifocal_loss"


class UnifocalTrainerBase(nnUNetTrainer):
    """nnU-Net's trainer with a loss from :mod:`nnunet_trainers.loss_builder`.

    Subclasses name their loss in ``unifocal_loss`` (a trainer row's ``loss``); the classes made from
    trainer names that carry settings also have ``named_base`` (the trainer they vary) and
    ``named_settings`` (the settings in the name).
    """

    unifocal_loss: str = ""
    named_base: Optional[str] = None
    named_settings: Optional[Settings] = None
    # while load_checkpoint initializes the trainer: the loss record of the checkpoint being loaded
    _loading_checkpoint = False
    _checkpoint_record: Optional[dict] = None

    def _build_loss(self):
        state = TrainerState.from_trainer(self)
        if self._loading_checkpoint and self._checkpoint_record is not None:
            return self._use_resolved(self._checkpoint_loss(self._checkpoint_record, state), state)
        settings = self._settings()
        resolved = resolve(self.unifocal_loss, settings, state,
                           gamma_provider=lambda: fold_gamma_proposal(self, log=self.print_to_log_file))
        if not self._loading_checkpoint:
            self._refuse_to_overwrite_other_settings(resolved, settings)
        return self._use_resolved(resolved, state)

    def _settings(self) -> Settings:
        """The trainer name's settings, the others from the environment."""
        environment = load_settings()
        if self.named_settings is None:
            return environment
        return combine_settings(self.named_settings, environment, self.__class__.__name__)

    def _use_resolved(self, resolved: ResolvedLoss, state: TrainerState) -> torch.nn.Module:
        module = build_loss(resolved, state)
        self._unifocal_resolved = resolved
        record = resolved.to_record()
        self.my_init_kwargs[CHECKPOINT_KEY] = record
        self.print_to_log_file(resolved.describe(), also_print_to_console=self.local_rank == 0)
        if self.local_rank == 0 and self.output_folder is not None:
            path = join(self.output_folder, RECORD_FILE)
            temporary = f"{path}.{os.getpid()}.tmp"  # other ranks may read it at the same time
            with open(temporary, "w") as handle:
                json.dump({"trainer": self.__class__.__name__, **record}, handle, indent=2)
            os.replace(temporary, path)
        return module

    def _refuse_to_overwrite_other_settings(self, resolved: ResolvedLoss, settings: Settings) -> None:
        """Stop a new training in a fold folder that holds a run with other loss settings."""
        if self.output_folder is None or not isfile(join(self.output_folder, RECORD_FILE)):
            return
        path = join(self.output_folder, RECORD_FILE)
        try:
            previous = ResolvedLoss.from_record(read_record(path))
        except ValueError as error:  # RecordError, SettingsError
            raise SettingsError(f"{path}: cannot tell which loss settings the training in this fold folder used "
                                f"({str(error).removeprefix(path + ': ')}); move that folder away before starting a "
                                "new training there") from None
        if previous.same_loss(resolved):
            return
        base = self.named_base or self.__class__.__name__
        suggestion = variant_name(base, settings)
        if suggestion == self.__class__.__name__:  # the new settings are the defaults: spell them out
            spelled = {key: value for key, value in resolved.params.items() if value is not None}
            suggestion = variant_name(base, Settings.of(spelled))
        raise SettingsError(
            f"{self.output_folder} holds a training with other loss settings ({_differences(previous, resolved)}; "
            f"recorded in {RECORD_FILE}). Starting a new training there would overwrite its checkpoints, logs and "
            "validation results, so nothing was started. To keep both, train a trainer whose name carries the "
            f"new settings (-tr {suggestion}); to continue that training with its own settings, add --c; to "
            f"replace it, delete {self.output_folder} first.")

    def _checkpoint_loss(self, record: dict, state: TrainerState) -> ResolvedLoss:
        """The loss stored in a checkpoint, for this trainer's state; says what the environment asked
        for instead (without failing on it: it is not used)."""
        stored = ResolvedLoss.from_record(record)
        if state.deep_supervision:
            stored.ds_weights = nnunet_ds_weights(state.num_ds_outputs, stored.ds_scheme, state)
        try:
            differing = _unused_settings(stored, self._settings())
            note = f"the current environment asked for {differing}, which is NOT used" if differing else ""
        except SettingsError as error:
            note = f"the current UNIFOCAL_* settings are NOT used (they are invalid: {error})"
        if note:
            self.print_to_log_file(
                f"unifocal: continuing with the loss settings stored in the checkpoint ({stored.params}, deep "
                f"supervision {stored.ds_scheme!r}); {note}", also_print_to_console=self.local_rank == 0)
        return stored

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """nnU-Net's checkpoint loading, with ``torch.load(weights_only=True)``; the loss is the one stored
        in the checkpoint, whatever the environment says now.

        nnU-Net's own method loads the file itself (``weights_only=False``) and cannot take a loaded
        dictionary, so its steps are repeated here on the safely loaded one.
        """
        checkpoint = filename_or_checkpoint
        if isinstance(filename_or_checkpoint, str):
            checkpoint = load_checkpoint_file(filename_or_checkpoint, map_location=self.device)
        self._checkpoint_record = checkpoint["init_args"].get(CHECKPOINT_KEY)
        built_before = self.was_initialized
        if not built_before:
            self._loading_checkpoint = True
            try:
                self.initialize()  # builds the loss of the record
            finally:
                self._loading_checkpoint = False
        self._restore(checkpoint)
        if self._checkpoint_record is None:
            self.print_to_log_file("unifocal: the checkpoint holds no loss settings; keeping the current ones")
        elif built_before:  # the loss came from the environment before this checkpoint was loaded
            state = TrainerState.from_trainer(self)
            stored = self._checkpoint_loss(self._checkpoint_record, state)
            if not stored.same_loss(self._unifocal_resolved):
                self.loss = self._use_resolved(stored, state)
        self.my_init_kwargs[CHECKPOINT_KEY] = self._unifocal_resolved.to_record()

    def _restore(self, checkpoint: dict) -> None:
        """What nnUNetTrainer.load_checkpoint does after reading the file (nnunetv2 2.8)."""
        network = self.network.module if self.is_ddp else self.network
        if isinstance(network, OptimizedModule):
            network = network._orig_mod
        own_keys = network.state_dict().keys()
        # a checkpoint of a DDP-wrapped network has 'module.' prefixes
        weights = {key[7:] if key not in own_keys and key.startswith("module.") else key: value
                   for key, value in checkpoint["network_weights"].items()}
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        network.load_state_dict(weights)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])


def _differences(before: ResolvedLoss, after: ResolvedLoss) -> str:
    """``"gamma 0.5 there, 0.3 now; ..."`` for the settings that differ between two runs."""
    a, b = before.to_record(), after.to_record()
    lines = [] if a["loss"] == b["loss"] else [f"loss {a['loss']} there, {b['loss']} now"]
    for key in dict.fromkeys([*a["params"], *b["params"]]):
        if a["params"].get(key) != b["params"].get(key):
            lines.append(f"{key} {a['params'].get(key, 'default')} there, {b['params'].get(key, 'default')} now")
    if a["ds_scheme"] != b["ds_scheme"]:
        lines.append(f"ds_weights {a['ds_scheme']} there, {b['ds_scheme']} now")
    return "; ".join(lines)


def _unused_settings(stored: ResolvedLoss, asked: Settings) -> dict:
    """The given settings that differ from the stored loss (an ``auto`` gamma matches a stored ``auto``)."""
    differing = {}
    for key, value in asked.given().items():
        if key == "ds_weights":
            same = value == stored.to_record()["ds_scheme"]
        elif key == "gamma" and value == AUTO:
            same = stored.gamma_proposal is not None
        else:
            same = key not in stored.params or stored.to_record()["params"][key] == value
        if not same:
            differing[key] = value
    return differing


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


def _trainer_class(name: str, bases: tuple, doc: str, **attributes) -> type:
    return type(name, bases, {"__module__": __name__, "__qualname__": name, "__doc__": doc, **attributes})


def _trainer_classes(row: TrainerRow) -> dict[str, type]:
    """The trainer of a table row and its ``Short`` variant."""
    if row.loss is None:
        base = nnUNetTrainer
    else:
        base = _trainer_class(row.name, (UnifocalTrainerBase,), f"{row.doc}.", unifocal_loss=row.loss)
    short = _trainer_class(row.name + SHORT, (_ShortSchedule, base), f"{row.doc}; short schedule.")
    return {row.name + SHORT: short} if row.short_only else {row.name: base, row.name + SHORT: short}


for _row in TRAINERS:
    globals().update(_trainer_classes(_row))
del _row


_VARIANTS: dict = {}


def variant_trainer(name: str) -> Optional[type]:
    """The trainer class for a name that carries settings (``UnifiedFocalTrainer_gamma0.3``), made once;
    None when ``name`` is not a unifocal trainer's. Raises SettingsError for an invalid settings name."""
    if name not in _VARIANTS:
        parsed = parse_variant(name)
        if parsed is None:
            return None
        base, settings = parsed
        _VARIANTS[name] = type(name, (globals()[base],), {
            "__module__": __name__, "__qualname__": name, "named_base": base, "named_settings": settings,
            "__doc__": f":class:`{base}` with the settings of its name: {settings.given()}."})
    return _VARIANTS[name]


def __getattr__(name: str):
    # nnU-Net looks trainers up with hasattr/getattr on the modules of nnUNet_extTrainer
    trainer = variant_trainer(name)
    if trainer is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return trainer
