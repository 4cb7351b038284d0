"""The loss settings a trainer will use, checked before anything is trained.

:func:`check_loss_settings` runs the checks a unifocal trainer runs when it builds its loss, on the settings
a run will give it, so that a bad setting fails in seconds instead of after planning and a first training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional

__all__ = ["LossSettings", "trainer_loss", "check_loss_settings"]


@dataclass(frozen=True)
class LossSettings:
    """Loss settings for the unifocal trainers; ``None`` leaves the trainer's default."""

    gamma: Optional[str] = None
    delta: Optional[float] = None
    weight: Optional[float] = None
    rare_classes: Optional[str] = None

    def env(self) -> dict[str, str]:
        out = {}
        if self.gamma is not None:
            out["UNIFOCAL_GAMMA"] = str(self.gamma)
        if self.delta is not None:
            out["UNIFOCAL_DELTA"] = str(self.delta)
        if self.weight is not None:
            out["UNIFOCAL_WEIGHT"] = str(self.weight)
        if self.rare_classes is not None:
            out["UNIFOCAL_RARE_CLASSES"] = str(self.rare_classes)
        return out

    def describe(self) -> str:
        given = {k: v for k, v in (("gamma", self.gamma), ("delta", self.delta), ("weight", self.weight),
                                   ("rare_classes", self.rare_classes)) if v is not None}
        return ", ".join(f"{k}={v}" for k, v in given.items()) or "trainer defaults"


def trainer_loss(trainer: str) -> Optional[str]:
    """The loss (a key of ``nnunet_trainers.loss_builder.LOSS_SPECS``) that the unifocal trainer named
    ``trainer`` builds, also for a name that carries settings; None for any other trainer (nnU-Net's, a
    user's, ``BaselineTrainerShort``). Imports no nnunetv2."""
    from nnunet_trainers import TRAINER_LOSSES

    return TRAINER_LOSSES.get(trainer.partition("_")[0])


def check_loss_settings(
    trainer: str,
    loss: Optional[LossSettings],
    num_channels: int,
    has_regions: bool = False,
    ignore_label: Optional[int] = None,
    options: Optional[Mapping[str, str]] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> None:
    """Run the checks ``trainer`` runs when it builds its loss, on the settings it will get: the ``UNIFOCAL_*``
    variables of ``environ`` (default ``os.environ``) overridden by ``loss``, for a dataset of
    ``num_channels`` classes (regions). ``options`` names where each of ``loss``'s values came from (e.g.
    ``{"gamma": "--gamma"}``), for the error message.

    Trainers other than the unifocal ones (nnU-Net's, a user's) read no unifocal settings: nothing to check.
    ``gamma="auto"`` takes its values from the fold's labels at training time; here a proposal that makes
    every foreground class rare stands in for it, so that the other settings are checked with it.

    Raises:
        ValueError: (``nnunet_trainers.config.SettingsError``) naming the setting and where it came from.
    """
    key = trainer_loss(trainer)
    if key is None:
        return
    from nnunet_trainers.config import SETTING_ENV, load_settings, parse_setting
    from nnunet_trainers.loss_builder import TrainerState, resolve

    from ..gamma import propose_gamma

    settings = load_settings(os.environ if environ is None else environ)
    given, sources = {}, dict(settings.sources)
    for setting, text in (loss.env() if loss is not None else {}).items():
        setting = next(k for k, variable in SETTING_ENV.items() if variable == setting)
        where = (options or {}).get(setting, SETTING_ENV[setting])
        given[setting] = parse_setting(setting, text, f"{where} {text}")
        sources[setting] = where
    settings = replace(settings, **given, sources=sources)
    state = TrainerState(has_regions=has_regions, num_channels=num_channels, ignore_label=ignore_label)
    if has_regions:
        stand_in = propose_gamma([0.1] * num_channels, multilabel=True)
    else:
        stand_in = propose_gamma([0.9] + [0.1 / (num_channels - 1)] * (num_channels - 1))
    resolve(key, settings, state, gamma_provider=lambda: stand_in)
