"""Loss settings of the unifocal nnU-Net trainers: read from the environment, validated, recorded.

nnU-Net gives a trainer no command-line options of its own, so the loss hyperparameters come from
environment variables (documented in docs/nnunet.md):

==========================  =====================================================================
``UNIFOCAL_CONFIG``          path of a JSON file with any of the keys below (``weight``/``lambda``,
                             ``delta``, ``gamma``, ``rare_classes``, ``ds_weights``)
``UNIFOCAL_WEIGHT``          lambda, weight of the focal (cross-entropy-based) part, in [0, 1]
``UNIFOCAL_DELTA``           delta: weight of rare classes / false negatives, in [0, 1]
``UNIFOCAL_GAMMA``           one number, a comma list (one per class, background first; one per
                             region in region mode), or ``auto`` (data-driven, :mod:`unifocal.gamma`)
``UNIFOCAL_RARE_CLASSES``    comma list of rare class indices (label mode only)
``UNIFOCAL_DS_WEIGHTS``      deep supervision weights: ``nnunet`` (default), ``exp``, ``uniform`` or
                             a comma list, one number per output (full resolution first)
==========================  =====================================================================

A single variable overrides the same key of the JSON file. Unset (or empty) means the trainer's
default. Values are parsed here (errors name the variable); their ranges are checked by the loss
classes themselves when the loss is built (:mod:`nnunet_trainers.loss_builder`), which wraps the
message with the source of the offending value.

The training schedule of the ``...Short`` trainers comes from ``UNIFOCAL_NUM_EPOCHS``,
``UNIFOCAL_ITERATIONS_PER_EPOCH`` and ``UNIFOCAL_VAL_ITERATIONS`` (see :func:`short_schedule`).

Nothing here imports nnunetv2.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

__all__ = [
    "CONFIG_ENV",
    "SETTING_ENV",
    "SETTING_KEYS",
    "AUTO",
    "Settings",
    "SettingsError",
    "load_settings",
    "parse_setting",
    "short_schedule",
    "SCHEDULE_ENV",
]

CONFIG_ENV = "UNIFOCAL_CONFIG"
SETTING_ENV = {
    "weight": "UNIFOCAL_WEIGHT",
    "delta": "UNIFOCAL_DELTA",
    "gamma": "UNIFOCAL_GAMMA",
    "rare_classes": "UNIFOCAL_RARE_CLASSES",
    "ds_weights": "UNIFOCAL_DS_WEIGHTS",
}
SETTING_KEYS = tuple(SETTING_ENV)
_ALIASES = {"lambda": "weight"}
AUTO = "auto"
DS_SCHEMES = ("nnunet", "exp", "uniform")

SCHEDULE_ENV = {
    "num_epochs": ("UNIFOCAL_NUM_EPOCHS", 5),
    "num_iterations_per_epoch": ("UNIFOCAL_ITERATIONS_PER_EPOCH", 20),
    "num_val_iterations_per_epoch": ("UNIFOCAL_VAL_ITERATIONS", 5),
}

Gamma = Union[float, tuple[float, ...], str]


class SettingsError(ValueError):
    """An invalid unifocal setting; the message names where the value came from."""


@dataclass(frozen=True)
class Settings:
    """User-given loss settings; ``None`` means "the trainer's default".

    Attributes:
        weight: lambda in [0, 1] (the focal part's weight; Combo: alpha).
        delta: delta in [0, 1] (Tversky / Focal Tversky: the false-negative weight; Combo: beta).
        gamma: a number, a per-class (per-region) tuple, or "auto".
        rare_classes: rare class indices (label mode).
        ds_weights: "nnunet", "exp", "uniform" or one weight per deep-supervision output.
        sources: where each given value came from (``"UNIFOCAL_GAMMA"``, ``"config file x.json"``, ...).
    """

    weight: Optional[float] = None
    delta: Optional[float] = None
    gamma: Optional[Gamma] = None
    rare_classes: Optional[tuple[int, ...]] = None
    ds_weights: Optional[Union[str, tuple[float, ...]]] = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def given(self) -> dict:
        """The settings that were set, as plain JSON-able values."""
        out = {}
        for key in SETTING_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")


def _number(text: Any, where: str, kind: type = float) -> float:
    if isinstance(text, bool):
        raise SettingsError(f"{where}: expected a number, got {text!r}")
    try:
        value = kind(text.strip()) if isinstance(text, str) else kind(text)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is int and isinstance(text, float) and text != int(text):
        raise SettingsError(f"{where}: expected an integer, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise SettingsError(f"{where}: expected a finite number, got {text!r}")
    return value


def _number_list(value: Any, where: str, kind: type = float) -> tuple:
    if isinstance(value, str):
        text = value.strip()
        if text[:1] + text[-1:] in ("[]", "()"):
            text = text[1:-1]
        items = [item for item in text.replace(";", ",").split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if not items:
        raise SettingsError(f"{where}: expected a comma-separated list of numbers, got {value!r}")
    return tuple(_number(item, where, kind) for item in items)


def parse_setting(key: str, value: Any, where: str) -> Any:
    """Parse one setting (from a string of an environment variable or a JSON value).

    Returns None for an empty string. Raises SettingsError naming ``where``.
    """
    if isinstance(value, str) and not value.strip():
        return None
    if value is None:
        return None
    if key in ("weight", "delta"):
        return _number(value, where)
    if key == "gamma":
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        values = _number_list(value, where)
        is_list = isinstance(value, (list, tuple)) or (isinstance(value, str) and any(c in value for c in ",;["))
        return values if is_list else values[0]
    if key == "rare_classes":
        return _number_list(value, where, int)
    if key == "ds_weights":
        if isinstance(value, str) and value.strip().lower() in DS_SCHEMES:
            return value.strip().lower()
        if isinstance(value, str) and not any(ch.isdigit() for ch in value):
            raise SettingsError(f"{where}: expected one of {DS_SCHEMES} or a comma list of numbers, got {value!r}")
        return _number_list(value, where)
    raise SettingsError(f"unknown setting {key!r} ({where}); known settings: {', '.join(SETTING_KEYS)}")


def _from_file(path: str) -> tuple[dict, dict]:
    file = Path(path).expanduser()
    where = f"{CONFIG_ENV}={path}"
    if not file.is_file():
        raise SettingsError(f"{where}: no such file")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise SettingsError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a JSON object with keys among {SETTING_KEYS}")
    values, sources = {}, {}
    for raw_key, raw_value in data.items():
        key = _ALIASES.get(raw_key, raw_key)
        if key not in SETTING_ENV:
            raise SettingsError(f"{where}: unknown key {raw_key!r}; known keys: {', '.join(SETTING_KEYS)} (or 'lambda')")
        if key in values:
            raise SettingsError(f"{where}: {key!r} given twice (as 'lambda' and 'weight')")
        source = f"config file {file} [{raw_key}]"
        parsed = parse_setting(key, raw_value, source)
        if parsed is not None:
            values[key], sources[key] = parsed, source
    return values, sources


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``): the JSON file named by
    ``UNIFOCAL_CONFIG`` first, then the single variables, which override it."""
    env = os.environ if environ is None else environ
    values: dict = {}
    sources: dict = {}
    config_file = env.get(CONFIG_ENV, "").strip()
    if config_file:
        values, sources = _from_file(config_file)
    for key, name in SETTING_ENV.items():
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        values[key] = parse_setting(key, raw, f"{name}={raw!r}")
        sources[key] = name
    return Settings(**values, sources=sources)


def short_schedule(environ: Optional[Mapping[str, str]] = None) -> dict:
    """Epochs and iterations of the ``...Short`` trainers: ``UNIFOCAL_NUM_EPOCHS`` (default 5),
    ``UNIFOCAL_ITERATIONS_PER_EPOCH`` (20) and ``UNIFOCAL_VAL_ITERATIONS`` (5), each a positive integer."""
    env = os.environ if environ is None else environ
    schedule = {}
    for attribute, (name, default) in SCHEDULE_ENV.items():
        raw = env.get(name, "")
        value = default if not raw.strip() else _number(raw, f"{name}={raw!r}", int)
        if value < 1:
            raise SettingsError(f"{name}={raw!r}: must be a positive integer")
        schedule[attribute] = value
    return schedule
