"""Loss settings of the unifocal nnU-Net trainers: one table, read from the environment, validated, recorded.

nnU-Net gives a trainer no command-line options of its own, so the loss settings come from environment
variables, a JSON file and the trainer's name (docs/nnunet.md). :data:`SETTINGS` defines each named setting
once: its parser, default, environment variable, token in a trainer name, ``unifocal demo``/``sweep``
option and help. Everything that reads a setting reads this table: :func:`load_settings`, the trainer
names (:mod:`nnunet_trainers.variants`), :func:`add_setting_arguments` / :func:`settings_from_args` /
:func:`settings_environment` for the commands, and the settings record (:mod:`unifocal.run_settings`).

The schema is open: any other keyword parameter of a trainer's loss (``smooth``, ``include_background``,
...) is a setting too, as ``UNIFOCAL_<NAME>`` or a key of the JSON file; its value is JSON (``0.5``,
``false``, ``[1, 2]``) or a comma list of numbers. Such keys are checked against the loss's signature when
the loss is resolved (:func:`nnunet_trainers.loss_builder.resolve`), where an unknown name is refused with
the closest valid one. Ranges are checked by the loss classes themselves.

Lists: items separated by ``,`` or ``;`` (or ``-`` in a trainer name), optionally in brackets; one trailing
separator makes a list of one (``0.6,``); an empty item (``0.3,,0.5``) is refused. In a setting of decimal
numbers, two whole numbers joined by a bare comma (``0,5``) are refused as ambiguous (a decimal comma?):
write ``0.5`` for one number, ``0, 5``, ``0;5`` or ``[0,5]`` for a list of two.

The training schedule of the ``...Short`` trainers comes from :data:`SCHEDULE_ENV` (:func:`short_schedule`).

Nothing here imports nnunetv2 or torch.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Mapping, Optional, Sequence

from unifocal.run_settings import read_json_object

__all__ = [
    "AUTO",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SCHEDULE_ENV",
    "SETTINGS",
    "SETTING_ENV",
    "SETTING_KEYS",
    "Setting",
    "Settings",
    "SettingsError",
    "add_setting_arguments",
    "closest_name",
    "env_name",
    "load_settings",
    "parse_setting",
    "settings_environment",
    "settings_from_args",
    "short_schedule",
]

ENV_PREFIX = "UNIFOCAL_"
CONFIG_ENV = "UNIFOCAL_CONFIG"
AUTO = "auto"
DS_SCHEMES = ("nnunet", "exp", "uniform")

SCHEDULE_ENV = {
    "num_epochs": ("UNIFOCAL_NUM_EPOCHS", 5),
    "num_iterations_per_epoch": ("UNIFOCAL_ITERATIONS_PER_EPOCH", 20),
    "num_val_iterations_per_epoch": ("UNIFOCAL_VAL_ITERATIONS", 5),
}


class SettingsError(ValueError):
    """An invalid unifocal setting; the message names where the value came from."""


def env_name(key: str) -> str:
    """The environment variable of a setting: ``UNIFOCAL_`` and the key in capitals (``UNIFOCAL_SMOOTH``)."""
    return ENV_PREFIX + key.upper()


def closest_name(name: str, valid: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the valid name closest to ``name`` (difflib), else ``""``."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


# -- parsers: (value, where) -> value; value is text (environment, option, trainer name) or a JSON value ----

_DECIMAL_COMMA = re.compile(r"\s*\d+,\d+\s*")  # "0,5": one decimal written with a comma, or two numbers?


def _number(value: Any, where: str, kind: type = float) -> Any:
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingsError(f"{where}: expected {what}, got {value!r}")
    if isinstance(value, str) and "," in value:
        raise SettingsError(f"{where}: expected {what}, got {value!r}; write decimals with a point (0.5)")
    try:
        number = kind(value.strip()) if isinstance(value, str) else kind(value)
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"{where}: expected {what}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise SettingsError(f"{where}: expected an integer, got {value!r}")
    if kind is float and not math.isfinite(number):
        raise SettingsError(f"{where}: expected a finite number, got {value!r}")
    return number


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, str) and any(c in value for c in ",;[("))


def _numbers(value: Any, where: str, kind: type = float) -> tuple:
    """A list of numbers from a JSON list or a text list (see the module docstring for the rules)."""
    if not isinstance(value, str):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
    else:
        if kind is float and _DECIMAL_COMMA.fullmatch(value):
            raise SettingsError(
                f"{where}: {value!r} is ambiguous (a decimal comma, or a list of two numbers?); write 0.5 for one "
                "number, '0, 5' or '0;5' for a list of two")
        text = value.strip()
        if text[:1] + text[-1:] in ("[]", "()"):
            text = text[1:-1]
        items = re.split(r"[,;]", text[:-1] if text[-1:] in ",;" else text)  # "0.6," is a list of one
        if any(not item.strip() for item in items):
            raise SettingsError(f"{where}: {value!r} has an empty item; separate the numbers by one ',' each")
    if not items:
        raise SettingsError(f"{where}: expected a comma-separated list of numbers, got {value!r}")
    return tuple(_number(item, where, kind) for item in items)


def _decimal(value: Any, where: str) -> float:
    return _number(value, where)


def _gamma(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    return _numbers(value, where) if _is_list(value) else _number(value, where)


def _classes(value: Any, where: str) -> tuple:
    return _numbers(value, where, int)


def _ds_weights(value: Any, where: str) -> Any:
    if isinstance(value, str) and value.strip().lower() in DS_SCHEMES:
        return value.strip().lower()
    if isinstance(value, str) and not any(ch.isdigit() for ch in value):
        raise SettingsError(f"{where}: expected one of {DS_SCHEMES} or a comma list of numbers, got {value!r}")
    return _numbers(value, where)


def _generic(value: Any, where: str) -> Any:
    """A loss parameter outside the table: a JSON value as given, or text read as JSON or a number list."""
    if not isinstance(value, str):
        return tuple(value) if isinstance(value, list) else value
    try:
        parsed = json.loads(value)
    except ValueError:
        if _is_list(value):
            return _numbers(value, where)
        raise SettingsError(f"{where}: expected a JSON value (a number, true, false, [1, 2]), got {value!r}") from None
    return tuple(parsed) if isinstance(parsed, list) else parsed


@dataclass(frozen=True)
class Setting:
    """One named loss setting.

    Attributes:
        key: its name in the JSON file, the settings record and :class:`Settings`.
        parse: ``(value, where) -> value``; raises :class:`SettingsError` naming ``where``.
        default: what an unset value means (for help and docs; the loss's own default unless said).
        token: its prefix in a trainer name (``gamma0.3``).
        pattern: the regular expression of its value in a trainer name.
        flag: its option in ``unifocal demo`` / ``sweep``, or None.
        help: what it means (options' help, docs).
        aliases: other keys accepted in the JSON file.
    """

    key: str
    parse: Callable[[Any, str], Any]
    default: str
    token: str
    pattern: str
    flag: Optional[str]
    help: str
    aliases: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return env_name(self.key)


_NUMBER = r"\d+(?:\.\d+)?"
_NUMBERS = rf"{_NUMBER}(?:-{_NUMBER})*"

# In the order a trainer name lists them.
SETTINGS: tuple[Setting, ...] = (
    Setting("gamma", _gamma, "the loss's (Unified Focal: 0.5)", "gamma", _NUMBERS, "--gamma",
            "focal parameter: one number, one per class (comma list, background first; one per region in "
            "region mode), or 'auto' (data-driven, Unified Focal trainers)"),
    Setting("delta", _decimal, "the loss's (Unified Focal: 0.6)", "delta", _NUMBER, "--delta",
            "weight of rare classes and of false negatives (Tversky, Combo: beta)"),
    Setting("weight", _decimal, "the loss's (Unified Focal: 0.5)", "lambda", _NUMBER, "--weight",
            "weight of the cross-entropy-based part of a compound loss (Unified Focal: lambda; Combo: ce_weight)",
            aliases=("lambda",)),
    Setting("rare_classes", _classes, "every foreground class", "rare", r"\d+(?:-\d+)*", "--rare-classes",
            "rare class indices, comma list (label mode only)"),
    Setting("ds_weights", _ds_weights, "nnunet", "ds", rf"nnunet|exp|uniform|{_NUMBERS}", None,
            "deep supervision weights: 'nnunet', 'exp', 'uniform' or one number per output (full resolution first)"),
)
_BY_KEY = {setting.key: setting for setting in SETTINGS}
_ALIASES = {alias: setting.key for setting in SETTINGS for alias in setting.aliases}
SETTING_KEYS = tuple(_BY_KEY)
SETTING_ENV = {setting.key: setting.env for setting in SETTINGS}


class _SettingsMethods:
    def given(self) -> dict:
        """The settings that were set (named ones first), as plain JSON-able values."""
        values = {key: getattr(self, key) for key in SETTING_KEYS if getattr(self, key) is not None}
        values.update(self.other)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}

    def value(self, key: str) -> Any:
        """A setting's value (named or another loss parameter), None when unset."""
        return getattr(self, key) if key in _BY_KEY else self.other.get(key)

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")

    @classmethod
    def of(cls, values: Mapping[str, Any], sources: Optional[Mapping[str, str]] = None) -> "Settings":
        """Settings from ``{key: value}``: the table's keys as fields, any other key in ``other``."""
        named = {key: value for key, value in values.items() if key in _BY_KEY}
        other = {key: value for key, value in values.items() if key not in _BY_KEY and value is not None}
        return cls(**named, other=other, sources=dict(sources or {}))


Settings = make_dataclass(
    "Settings",
    [*((setting.key, Any, field(default=None)) for setting in SETTINGS),
     ("other", Mapping[str, Any], field(default_factory=dict)),
     ("sources", Mapping[str, str], field(default_factory=dict, compare=False))],
    bases=(_SettingsMethods,), frozen=True, namespace={"__module__": __name__})
Settings.__doc__ = """User-given loss settings; ``None`` means "the trainer's default".

One field per row of :data:`SETTINGS`; ``other`` holds the loss's own parameters outside the table
(``{"smooth": 0.5}``); ``sources`` says where each given value came from (``"UNIFOCAL_GAMMA"``,
``"config file x.json [gamma]"``, ``"--gamma"``, ...)."""


def parse_setting(key: str, value: Any, where: str) -> Any:
    """Parse one setting (text or a JSON value) with its table row's parser, or as a generic loss parameter.

    Returns None for an empty string or None. Raises SettingsError naming ``where``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    setting = _BY_KEY.get(key)
    return setting.parse(value, where) if setting is not None else _generic(value, where)


def _from_file(path: str) -> tuple[dict, dict]:
    where = f"{CONFIG_ENV}={path}"
    data = read_json_object(Path(path).expanduser(), where, SettingsError)
    values, sources = {}, {}
    for raw_key, raw_value in data.items():
        key = _ALIASES.get(raw_key, raw_key)
        if key in values:
            raise SettingsError(f"{where}: {key!r} given twice (as {raw_key!r} and {key!r})")
        source = f"config file {Path(path).expanduser()} [{raw_key}]"
        parsed = parse_setting(key, raw_value, source)
        if parsed is not None:
            values[key], sources[key] = parsed, source
    return values, sources


def load_settings(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """Read the settings from ``environ`` (default ``os.environ``): the JSON file named by ``UNIFOCAL_CONFIG``
    first, then the ``UNIFOCAL_*`` variables, which override it. Variables outside the table become other
    loss parameters (``UNIFOCAL_SMOOTH`` -> ``smooth``), checked against the loss by ``resolve``."""
    env = os.environ if environ is None else environ
    values: dict = {}
    sources: dict = {}
    config_file = env.get(CONFIG_ENV, "").strip()
    if config_file:
        values, sources = _from_file(config_file)
    schedule = {name for name, _ in SCHEDULE_ENV.values()}
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV or name in schedule or not raw.strip():
            continue
        key = name[len(ENV_PREFIX):].lower()
        values[key] = parse_setting(key, raw, f"{name}={raw!r}")
        sources[key] = name
    return Settings.of(values, sources)


def known_variables(loss_parameters: Collection[str] = ()) -> list[str]:
    """Every ``UNIFOCAL_*`` variable a trainer reads: the table's, the schedule's, the config file's and
    one per other parameter of its loss."""
    return [*SETTING_ENV.values(), *(name for name, _ in SCHEDULE_ENV.values()), CONFIG_ENV,
            *(env_name(key) for key in loss_parameters)]


def short_schedule(environ: Optional[Mapping[str, str]] = None) -> dict:
    """Epochs and iterations of the ``...Short`` trainers: ``UNIFOCAL_NUM_EPOCHS`` (default 5),
    ``UNIFOCAL_ITERATIONS_PER_EPOCH`` (20) and ``UNIFOCAL_VAL_ITERATIONS`` (5), each a positive integer.

    A variable that looks like a misspelt schedule variable (``UNIFOCAL_EPOCHS``) is refused, naming it."""
    env = os.environ if environ is None else environ
    names = [name for name, _ in SCHEDULE_ENV.values()]
    for name in env:
        if name.startswith(ENV_PREFIX) and name not in names and name not in known_variables():
            match = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
            if match:
                raise SettingsError(f"{name} is not a unifocal setting; did you mean {match[0]!r}?")
    schedule = {}
    for attribute, (name, default) in SCHEDULE_ENV.items():
        raw = env.get(name, "")
        value = default if not raw.strip() else _number(raw, f"{name}={raw!r}", int)
        if value < 1:
            raise SettingsError(f"{name}={raw!r}: must be a positive integer")
        schedule[attribute] = value
    return schedule


# -- the commands' options and the environment of a run --------------------------------------------------

def add_setting_arguments(parser: Any, keys: Sequence[str]) -> None:
    """Add the options of the settings ``keys`` (their :attr:`Setting.flag`) to an argparse parser or group.

    Values stay text; :func:`settings_from_args` parses them with the same rules as the environment."""
    for key in keys:
        setting = _BY_KEY[key]
        if setting.flag is None:
            raise ValueError(f"setting {key!r} has no command-line option")
        parser.add_argument(setting.flag, dest=_dest(setting), metavar=setting.key.upper(),
                            help=f"{setting.help} (default: {setting.default}; {setting.env})")


def _dest(setting: Setting) -> str:
    return setting.flag.lstrip("-").replace("-", "_")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings given as options added by :func:`add_setting_arguments` (sources: the option)."""
    values, sources = {}, {}
    for setting in SETTINGS:
        text = getattr(args, _dest(setting), None) if setting.flag else None
        if text is not None:
            value = parse_setting(setting.key, text, f"{setting.flag} {text}")
            if value is not None:
                values[setting.key], sources[setting.key] = value, setting.flag
    return Settings.of(values, sources)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple) else value)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``UNIFOCAL_*`` variables that give a trainer ``settings`` (:func:`load_settings` reads them back)."""
    return {env_name(key): _text(value) for key, value in settings.given().items()}
