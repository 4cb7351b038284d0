"""The loss settings a trainer will use, checked before anything is trained.

:func:`check_loss_settings` runs the checks a unifocal trainer runs when it builds its loss, on the settings
a run will give it, so that a bad setting fails in seconds instead of after planning and a first training.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Mapping, Optional

if TYPE_CHECKING:
    from nnunet_trainers.config import Settings

__all__ = ["describe_settings", "trainer_loss", "check_loss_settings"]


def describe_settings(settings: Optional["Settings"]) -> str:
    """``gamma=0.3, delta=0.6``: the given settings in one line."""
    given = settings.given() if settings is not None else {}
    return ", ".join(f"{key}={value}" for key, value in given.items()) or "trainer defaults"


def trainer_loss(trainer: str) -> Optional[str]:
    """The loss (``nnunet_trainers.TRAINER_LOSSES``) that the unifocal trainer named
    ``trainer`` builds, also for a name that carries settings; None for any other trainer (nnU-Net's, a
    user's, ``BaselineTrainerShort``). Imports no nnunetv2."""
    from nnunet_trainers import TRAINER_LOSSES

    return TRAINER_LOSSES.get(trainer.partition("_")[0])


def check_loss_settings(
    trainer: str,
    loss: Optional["Settings"],
    num_channels: int,
    has_regions: bool = False,
    ignore_label: Optional[int] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> None:
    """Run the checks ``trainer`` runs when it builds its loss, on the settings it will get: the ``UNIFOCAL_*``
    variables of ``environ`` (default ``os.environ``) overridden by ``loss`` (whose ``sources`` name the
    options they came from, for the error message), for a dataset of ``num_channels`` classes (regions).

    Trainers other than the unifocal ones (nnU-Net's, a user's) read no unifocal settings: nothing to check.
    ``gamma="auto"`` takes its values from the fold's labels at training time; here a proposal that makes
    every foreground class rare stands in for it, so that the other settings are checked with it.

    Raises:
        ValueError: (``nnunet_trainers.config.SettingsError``) naming the setting and where it came from.
    """
    key = trainer_loss(trainer)
    if key is None:
        return
    from nnunet_trainers.config import SETTING_KEYS, load_settings
    from nnunet_trainers.loss_builder import TrainerState, resolve

    from ..gamma import propose_gamma

    settings = load_settings(os.environ if environ is None else environ)
    if loss is not None:
        given = {key: value for key, value in loss.given().items() if key in SETTING_KEYS}
        settings = replace(settings, **{key: getattr(loss, key) for key in given},
                           other={**settings.other, **loss.other}, sources={**settings.sources, **loss.sources})
    state = TrainerState(has_regions=has_regions, num_channels=num_channels, ignore_label=ignore_label)
    if has_regions:
        stand_in = propose_gamma([0.1] * num_channels, multilabel=True)
    else:
        stand_in = propose_gamma([0.9] + [0.1 / (num_channels - 1)] * (num_channels - 1))
    resolve(key, settings, state, gamma_provider=lambda: stand_in)
