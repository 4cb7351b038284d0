"""Trainer names that carry loss settings, nnU-Net's way of naming variants (``nnUNetTrainer_250epochs``).

``nnUNetv2_train 40 3d_fullres 0 -tr UnifiedFocalTrainer_gamma0.3_delta0.7`` trains the Unified Focal
loss with gamma 0.3 and delta 0.7 into ``UnifiedFocalTrainer_gamma0.3_delta0.7__nnUNetPlans__3d_fullres``,
next to the folders of every other setting. The name is ``<trainer>_<setting>_<setting>...``, settings
in this order, each at most once:

``gamma<x>`` (or ``auto``), ``delta<x>``, ``lambda<x>`` (the weight), ``rare<i>`` and ``ds<w>``: the ``token``
column of the settings table (:data:`nnunet_trainers.config.SETTINGS`, listed in docs/nnunet.md), lists
joined by ``-`` (``gamma0.1-0.5-0.7``, ``rare1-2``, ``dsexp``). The loss's other parameters are not part of
names; they come from the environment or the JSON file.

Numbers are written in plain decimal notation without trailing zeros (``0.3``, not ``0.30`` or ``.3``),
so that one setting has one name and one results folder. A name whose trainer is a unifocal trainer but
whose settings do not parse, do not apply to the trainer's loss, or are not written in that one way is
refused with a :class:`~nnunet_trainers.config.SettingsError` that says what to write instead.

nnU-Net finds a trainer by ``getattr`` on the modules of the ``nnUNet_extTrainer`` folder; the module
there answers these names through a module ``__getattr__`` (:func:`nnunet_trainers.trainers.__getattr__`),
which creates the subclass on first use. Nothing here imports nnunetv2.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import numpy as np

from .config import AUTO, SETTINGS, Settings, SettingsError, parse_setting
from .loss_builder import check_values, loss_plan
from .trainer_table import TRAINER_LOSSES

__all__ = ["NAME_TOKENS", "parse_variant", "variant_name", "combine_settings"]

# setting key -> prefix in a trainer name, in the order the name lists them (the settings table's order)
NAME_TOKENS = {setting.key: setting.token for setting in SETTINGS}
_TOKEN = re.compile(rf"^(?P<prefix>{'|'.join(NAME_TOKENS.values())})(?P<value>.+)$")
_VALUE = {setting.key: setting.pattern for setting in SETTINGS}
_KEY_OF_PREFIX = {prefix: key for key, prefix in NAME_TOKENS.items()}
_SPELLING = ", ".join(f"{token}<x>" for token in NAME_TOKENS.values()).replace("gamma<x>", "gamma<x> (or auto)")


def _number_text(value: float) -> str:
    return np.format_float_positional(float(value), trim="-")


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "-".join(_value_text(v) for v in value)
    if isinstance(value, int):
        return str(value)
    return _number_text(value)


def variant_name(base: str, settings: Settings) -> str:
    """The trainer name of ``base`` with the settings given in ``settings`` (the one accepted spelling)."""
    parts = [base]
    for key, prefix in NAME_TOKENS.items():
        value = getattr(settings, key)
        if value is None:
            continue
        parts.append("auto" if key == "gamma" and value == AUTO else prefix + _value_text(value))
    return "_".join(parts)


def parse_variant(name: str, losses: Mapping[str, Optional[str]] = TRAINER_LOSSES) -> Optional[tuple[str, Settings]]:
    """Split a trainer name into its base trainer and the settings it names.

    Args:
        name: the name given to ``nnUNetv2_train -tr`` / ``nnUNetv2_predict -tr``.
        losses: base trainer name -> its loss's record name (None for a trainer without a unifocal loss);
            default: :data:`~nnunet_trainers.trainer_table.TRAINER_LOSSES`.

    Returns:
        None when ``name`` is not ``<base>_<...>`` for a base in ``losses`` (someone else's trainer);
        else ``(base, settings)``, each setting's source being ``trainer name <name>``.

    Raises:
        SettingsError: the name is meant for a unifocal trainer but is not a valid settings name.
    """
    base, _, rest = name.partition("_")
    if base not in losses or not rest:
        return None
    where = f"trainer name {name!r}"
    loss = losses[base]
    if loss is None:
        raise SettingsError(f"{where}: {base} trains nnU-Net's own loss and takes no loss settings")
    plan = loss_plan(loss)
    values: dict = {}
    for token in rest.split("_"):
        key, text = ("gamma", AUTO) if token == "auto" else _split_token(token, where)
        if key in values:
            raise SettingsError(f"{where}: {key} is given twice")
        if key != "ds_weights" and key not in plan.settings:
            usable = ", ".join(NAME_TOKENS[k] for k in plan.settings if k in NAME_TOKENS) + ", ds"
            raise SettingsError(f"{where}: {base}'s loss ({loss}) has no setting {NAME_TOKENS[key]!r}; "
                                f"its settings are {usable}")
        values[key] = text if text == AUTO else parse_setting(key, text.replace("-", ","), f"{where} [{token}]")
    if values.get("gamma") == AUTO and not plan.auto_gamma:
        raise SettingsError(f"{where}: gamma 'auto' applies to the Unified Focal trainers only")
    settings = Settings.of(values, {key: f"trainer name {name}" for key in values})
    canonical = variant_name(base, settings)
    if canonical != name:
        raise SettingsError(f"{where}: write these settings as {canonical!r} (settings in the order "
                            f"{', '.join(NAME_TOKENS.values())}, numbers without trailing zeros), so that one "
                            "setting has one results folder")
    check_values(loss, {k: v for k, v in values.items() if k != "ds_weights" and v != AUTO}, where)
    return base, settings


def _split_token(token: str, where: str) -> tuple[str, str]:
    match = _TOKEN.match(token)
    if match is None:
        raise SettingsError(f"{where}: {token!r} is not a setting; write {_SPELLING} joined by '_' "
                            "(lists joined by '-', e.g. gamma0.1-0.5-0.7)")
    key = _KEY_OF_PREFIX[match.group("prefix")]
    if not re.fullmatch(_VALUE[key], match.group("value")):
        raise SettingsError(f"{where}: {token!r}: {match.group('value')!r} is not a value of "
                            f"UNIFOCAL_{key.upper()} as a trainer name writes it (plain decimals, lists joined by '-')")
    return key, match.group("value")


def combine_settings(named: Settings, environment: Settings, name: str) -> Settings:
    """The settings of a run of the trainer ``name``: those its name gives, the rest from the environment.

    Raises:
        SettingsError: the environment sets one of the name's settings to another value.
    """
    values, sources = {}, {}
    for key in dict.fromkeys([*named.given(), *environment.given()]):
        mine, theirs = named.value(key), environment.value(key)
        if mine is not None and theirs is not None and mine != theirs:
            raise SettingsError(
                f"{key} is given twice: {mine!r} by the trainer name {name} and {theirs!r} by "
                f"{environment.source(key)}; unset {environment.source(key)} or train the trainer whose name "
                "carries the value you want")
        values[key] = mine if mine is not None else theirs
        sources[key] = named.source(key) if mine is not None else environment.source(key)
    return Settings.of(values, sources)
