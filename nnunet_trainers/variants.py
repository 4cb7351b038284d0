"""Trainer names that carry loss settings, nnU-Net's way of naming variants (``nnUNetTrainer_250epochs``).

``nnUNetv2_train 40 3d_fullres 0 -tr UnifiedFocalTrainer_gamma0.3_delta0.7`` trains the Unified Focal
loss with gamma 0.3 and delta 0.7 into ``UnifiedFocalTrainer_gamma0.3_delta0.7__nnUNetPlans__3d_fullres``,
next to the folders of every other setting. The name is ``<trainer>_<setting>_<setting>...``, settings
in this order, each at most once:

==============  ==============================  ===============================================
``gamma<x>``    ``UNIFOCAL_GAMMA``              ``gamma0.3``; one per class/region: ``gamma0.1-0.5-0.7``
``auto``        ``UNIFOCAL_GAMMA=auto``         ``auto`` (instead of ``gamma<x>``)
``delta<x>``    ``UNIFOCAL_DELTA``              ``delta0.7``
``lambda<x>``   ``UNIFOCAL_WEIGHT``             ``lambda0.3``
``rare<i>``     ``UNIFOCAL_RARE_CLASSES``       ``rare2``, ``rare1-2``
``ds<w>``       ``UNIFOCAL_DS_WEIGHTS``         ``dsexp``, ``dsuniform``, ``ds0.5-0.3-0.2``
==============  ==============================  ===============================================

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

from .config import AUTO, SETTING_ENV, SETTING_KEYS, Settings, SettingsError, parse_setting
from .loss_builder import LOSS_SPECS, check_gamma_form

__all__ = ["NAME_TOKENS", "parse_variant", "variant_name", "combine_settings"]

# setting key -> prefix in a trainer name, in the order the name lists them
NAME_TOKENS = {"gamma": "gamma", "delta": "delta", "weight": "lambda", "rare_classes": "rare", "ds_weights": "ds"}
_TOKEN = re.compile(r"^(?P<prefix>lambda|delta|gamma|rare|ds)(?P<value>.+)$")
_NUMBER = r"\d+(?:\.\d+)?"
_VALUE = {
    "weight": rf"{_NUMBER}",
    "delta": rf"{_NUMBER}",
    "gamma": rf"{_NUMBER}(?:-{_NUMBER})*",
    "rare_classes": r"\d+(?:-\d+)*",
    "ds_weights": rf"nnunet|exp|uniform|{_NUMBER}(?:-{_NUMBER})*",
}
_KEY_OF_PREFIX = {prefix: key for key, prefix in NAME_TOKENS.items()}


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


def parse_variant(name: str, losses: Mapping[str, Optional[str]]) -> Optional[tuple[str, Settings]]:
    """Split a trainer name into its base trainer and the settings it names.

    Args:
        name: the name given to ``nnUNetv2_train -tr`` / ``nnUNetv2_predict -tr``.
        losses: base trainer name -> its key in :data:`~nnunet_trainers.loss_builder.LOSS_SPECS` (None for
            a trainer without a unifocal loss).

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
    spec = LOSS_SPECS[loss]
    values: dict = {}
    for token in rest.split("_"):
        key, text = ("gamma", AUTO) if token == "auto" else _split_token(token, where)
        if key in values:
            raise SettingsError(f"{where}: {key} is given twice")
        if key != "ds_weights" and key not in spec.defaults:
            usable = ", ".join(NAME_TOKENS[k] for k in spec.defaults) + ", ds"
            raise SettingsError(f"{where}: {base}'s loss ({loss}) has no setting {NAME_TOKENS[key]!r}; "
                                f"its settings are {usable}")
        values[key] = text if text == AUTO else parse_setting(key, text.replace("-", ","), f"{where} [{token}]")
    if values.get("gamma") == AUTO and not spec.auto_gamma:
        raise SettingsError(f"{where}: gamma 'auto' applies to the Unified Focal trainers only")
    if "gamma" in values:
        check_gamma_form(spec, values["gamma"], where)
    settings = Settings(**values, sources={key: f"trainer name {name}" for key in values})
    canonical = variant_name(base, settings)
    if canonical != name:
        raise SettingsError(f"{where}: write these settings as {canonical!r} (settings in the order "
                            f"{', '.join(NAME_TOKENS.values())}, numbers without trailing zeros), so that one "
                            "setting has one results folder")
    return base, settings


def _split_token(token: str, where: str) -> tuple[str, str]:
    match = _TOKEN.match(token)
    if match is None:
        raise SettingsError(f"{where}: {token!r} is not a setting; write gamma<x> (or auto), delta<x>, lambda<x>, "
                            "rare<i>, ds<w> joined by '_' (lists joined by '-', e.g. gamma0.1-0.5-0.7)")
    key = _KEY_OF_PREFIX[match.group("prefix")]
    if not re.fullmatch(_VALUE[key], match.group("value")):
        raise SettingsError(f"{where}: {token!r}: {match.group('value')!r} is not a value of "
                            f"{SETTING_ENV[key]} as a trainer name writes it (plain decimals, lists joined by '-')")
    return key, match.group("value")


def combine_settings(named: Settings, environment: Settings, name: str) -> Settings:
    """The settings of a run of the trainer ``name``: those its name gives, the rest from the environment.

    Raises:
        SettingsError: the environment sets one of the name's settings to another value.
    """
    values, sources = {}, {}
    for key in SETTING_KEYS:
        mine, theirs = getattr(named, key), getattr(environment, key)
        if mine is not None and theirs is not None and mine != theirs:
            raise SettingsError(
                f"{key} is given twice: {mine!r} by the trainer name {name} and {theirs!r} by "
                f"{environment.source(key)}; unset {environment.source(key)} or train the trainer whose name "
                "carries the value you want")
        value = mine if mine is not None else theirs
        if value is not None:
            values[key] = value
            sources[key] = named.source(key) if mine is not None else environment.source(key)
    return Settings(**values, sources=sources)
