"""From an nnU-Net trainer's state and the user's settings to the training loss, in one place.

Every unifocal trainer calls :func:`resolve` (settings + trainer state -> concrete, validated loss
parameters, a :class:`ResolvedLoss`) and :func:`build_loss` (-> ``nn.Module``). What nnU-Net hands the
loss (see docs/nnunet.md):

- label mode: logits (B, C, ...) and an int16 label map (B, 1, ...); the ignore label, if the dataset has
  one, keeps its raw value and becomes the loss's ``ignore_index``.
- region mode (``label_manager.has_regions``; KiTS23, BraTS): logits (B, R, ...) and a bool target
  (B, R, ...), plus one extra last channel marking ignored voxels when the dataset has an ignore label;
  the loss runs with ``multilabel=True`` and that channel becomes its ``mask`` (1 where a voxel counts).
- deep supervision: a list of outputs (full resolution first) and a list of targets downsampled by
  nnU-Net; the weights follow nnU-Net's scheme by default (``UNIFOCAL_DS_WEIGHTS`` for others).
- ``batch_dice`` comes from the plans; under DDP the losses are built with ``ddp=True``: batch-level
  TP/FP/FN are all-reduced across ranks and voxel means use the global voxel count, as nnU-Net's
  ``ddp=is_ddp`` does for its batch Dice.

Nothing here imports nnunetv2; :meth:`TrainerState.from_trainer` only reads trainer attributes.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from unifocal import losses as L
from unifocal.losses.deep_supervision import deep_supervision_weights

from .config import AUTO, ENV_PREFIX, SETTING_KEYS, SETTINGS, Settings, SettingsError, closest_name, env_name, \
    known_variables, load_settings, short_schedule
from .trainer_table import TRAINERS, TrainerRow, row_of_loss

__all__ = [
    "TrainerState",
    "LossPlan",
    "loss_plan",
    "loss_parameters",
    "TRAINER_ARGUMENTS",
    "ResolvedLoss",
    "NnUNetTargetAdapter",
    "resolve",
    "build_loss",
    "check_values",
    "check_environment",
    "nnunet_ds_weights",
]

# nnU-Net replaces the zero weight of its lowest-resolution output by this value under DDP without
# torch.compile, so that DDP does not complain about unused parameters (nnUNetTrainer._build_loss).
DDP_ZERO_WEIGHT = 1e-6


@dataclass(frozen=True)
class TrainerState:
    """What the loss needs to know about the trainer.

    Attributes:
        has_regions: region-based training (sigmoid, multilabel loss).
        num_channels: network outputs: classes with background (label mode) or regions.
        ignore_label: the dataset's ignore label value, or None.
        batch_dice: the plans' batch_dice for this configuration.
        deep_supervision: whether the network returns one output per scale.
        num_ds_outputs: number of deep-supervision outputs (1 without deep supervision).
        is_ddp: running under torch.distributed with several ranks.
        compiled: the trainer compiles its network (nnU-Net's DDP weight fix does not apply then).
    """

    has_regions: bool
    num_channels: int
    ignore_label: Optional[int] = None
    batch_dice: bool = False
    deep_supervision: bool = False
    num_ds_outputs: int = 1
    is_ddp: bool = False
    compiled: bool = False

    @classmethod
    def from_trainer(cls, trainer: Any) -> "TrainerState":
        """Read the state of an ``nnUNetTrainer`` (label manager, plans, deep-supervision scales)."""
        label_manager = trainer.label_manager
        scales = trainer._get_deep_supervision_scales() if trainer.enable_deep_supervision else None
        return cls(
            has_regions=bool(label_manager.has_regions),
            num_channels=int(label_manager.num_segmentation_heads),
            ignore_label=label_manager.ignore_label,
            batch_dice=bool(trainer.configuration_manager.batch_dice),
            deep_supervision=bool(trainer.enable_deep_supervision),
            num_ds_outputs=len(scales) if scales is not None else 1,
            is_ddp=bool(trainer.is_ddp),
            compiled=bool(trainer._do_i_compile()),
        )

    def mode_kwargs(self) -> dict:
        """``multilabel`` / ``ignore_index`` and ``ddp`` (global-batch statistics across ranks) for the core losses."""
        if self.has_regions:
            return {"multilabel": True, "ddp": self.is_ddp}
        return {"multilabel": False, "ignore_index": self.ignore_label, "ddp": self.is_ddp}


# Loss arguments the trainer sets from nnU-Net's state (logits, regions, ignore label, plans, DDP).
TRAINER_ARGUMENTS = ("from_logits", "multilabel", "ignore_index", "reduction", "ddp", "batch_dice")
_HELP = {setting.key: setting.help for setting in SETTINGS}


def loss_parameters(loss_class: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a loss class (every loss states them all in its signature)."""
    return {name: parameter for name, parameter in inspect.signature(loss_class).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY}


@dataclass(frozen=True)
class LossPlan:
    """What a trainer row's loss takes, read from the loss's signature.

    Attributes:
        row: the trainer row.
        loss_class: its class in :mod:`unifocal.losses`.
        settings: setting -> the loss parameter it sets, in the loss's order: the named settings the loss
            takes (:data:`~nnunet_trainers.config.SETTINGS`), then its other parameters a user may set.
        defaults: the named settings' defaults (the loss's own), in the record's order.
        accepted: the loss's keyword parameters.
    """

    row: TrainerRow
    loss_class: type
    settings: Mapping[str, str]
    defaults: Mapping[str, Any]
    accepted: frozenset

    @property
    def others(self) -> tuple[str, ...]:
        """The loss's parameters outside the table a user may set (``smooth``, ...)."""
        return tuple(key for key in self.settings if key not in SETTING_KEYS)

    @property
    def auto_gamma(self) -> bool:
        """gamma may be "auto": the proposal gives per-class gamma and rare classes, both taken by the loss."""
        return "gamma" in self.settings and "rare_classes" in self.settings

    def arguments(self, params: Mapping[str, Any]) -> dict:
        """The loss's keyword arguments for resolved ``params`` (the trainer's mode aside)."""
        kwargs = dict(self.row.fixed)
        kwargs.update((self.settings[key], value) for key, value in {**self.defaults, **params}.items())
        for parameter, other in self.row.complements.items():
            kwargs[parameter] = 1.0 - kwargs[other]
        return kwargs


@functools.lru_cache(maxsize=None)
def loss_plan(loss: str) -> LossPlan:
    """The :class:`LossPlan` of the loss with record name ``loss`` (a trainer row's ``loss``)."""
    row = row_of_loss(loss)
    if row is None:
        raise SettingsError(f"unknown loss {loss!r}")
    loss_class = getattr(L, row.loss_class)
    parameters = loss_parameters(loss_class)
    missing = sorted({*row.fixed, *row.renames.values(), *row.complements, *row.complements.values()} - set(parameters))
    if missing:
        raise TypeError(f"trainer row {row.name}: {row.loss_class} has no parameter {', '.join(missing)}")
    set_elsewhere = {*TRAINER_ARGUMENTS, *row.fixed, *row.complements, *row.renames}
    setting_of = {row.renames.get(key, key): key for key in SETTING_KEYS}  # loss parameter -> named setting
    settings = {setting_of.get(name, name): name for name in parameters if name not in set_elsewhere
                or name in row.renames.values()}
    defaults = {key: parameters[name].default for key, name in settings.items() if key in SETTING_KEYS}
    return LossPlan(row, loss_class, settings, defaults, frozenset(parameters))


def check_values(loss: str, params: Mapping[str, Any], where: str) -> None:
    """Build the loss with ``params`` (settings of :func:`loss_plan`) to run its own checks; a rejected
    value raises SettingsError naming ``where``."""
    plan = loss_plan(loss)
    try:
        plan.loss_class(**plan.arguments(params))
    except (ValueError, TypeError) as error:
        raise SettingsError(f"{where}: invalid settings for the {loss} loss: {error}") from None


def _check_names(plan: LossPlan, settings: Settings) -> None:
    """Refuse a given parameter outside the table that the loss does not take, naming the closest one."""
    for key in settings.other:
        if key in plan.settings:
            continue
        source = settings.source(key)
        from_environment = source.startswith(ENV_PREFIX)
        name = env_name(key) if from_environment else key
        if key in plan.accepted:
            setting = next((s for s, p in plan.settings.items() if p == key), None)
            why = (f"this trainer sets it from nnU-Net's plans and mode" if setting is None else
                   f"this trainer sets it from {(env_name(setting) if from_environment else setting)!r}")
            raise SettingsError(f"{name} [{source}]: {why}")
        valid = known_variables(plan.others) if from_environment else [*SETTING_KEYS, "lambda", *plan.others]
        usable = [env_name(k) if from_environment else k for k in [*plan.settings, "ds_weights"]]
        raise SettingsError(f"{_named(name, source)} is not a setting of the {plan.row.name} trainer's loss "
                            f"({plan.loss_class.__name__}){closest_name(name, valid) or '.'} Its settings: "
                            f"{', '.join(usable)}")


def _named(name: str, source: str) -> str:
    """A setting's name with where it came from, unless that is the name itself (an environment variable)."""
    return name if source == name else f"{name} [{source}]"


def check_environment(environ: Optional[Mapping[str, str]] = None) -> Settings:
    """The settings of ``environ`` (default ``os.environ``) as any unifocal trainer would read them, for
    ``unifocal nnunet-path --check``: values parsed, the schedule read, and a ``UNIFOCAL_*`` variable that no
    trainer's loss takes refused naming the closest valid name."""
    settings = load_settings(environ)
    short_schedule(environ)
    others = {key for row in TRAINERS if row.loss is not None for key in loss_plan(row.loss).others}
    for key in settings.other:
        if key not in others:
            name = env_name(key) if settings.source(key).startswith(ENV_PREFIX) else key
            valid = known_variables(others) if name != key else [*SETTING_KEYS, *others]
            raise SettingsError(f"{_named(name, settings.source(key))} is not a setting of any unifocal trainer"
                                f"{closest_name(name, valid) or '.'}")
    return settings


def nnunet_ds_weights(num_outputs: int, scheme: Any, state: TrainerState) -> list[float]:
    """Deep-supervision weights for ``num_outputs`` outputs (full resolution first).

    ``scheme`` as :func:`unifocal.losses.deep_supervision_weights`. Under DDP without torch.compile a
    zero weight becomes 1e-6 before normalisation, as nnU-Net does: a head without loss leaves its
    parameters unused, which DDP rejects.
    """
    if isinstance(scheme, str) and scheme == "nnunet" and state.is_ddp and not state.compiled and num_outputs > 1:
        raw = [0.5**i for i in range(num_outputs)]
        raw[-1] = DDP_ZERO_WEIGHT
        return [w / sum(raw) for w in raw]
    weights = deep_supervision_weights(num_outputs, scheme)
    if state.is_ddp and not state.compiled:
        weights = [w if w != 0 else DDP_ZERO_WEIGHT for w in weights]
    return weights


@dataclass
class ResolvedLoss:
    """Concrete loss parameters of one training run: what is logged, stored with the checkpoint and
    rebuilt on ``--c``.

    Attributes:
        loss: the loss's record name (a trainer row's ``loss``).
        params: every parameter of the loss, defaults filled in, ``auto`` gamma replaced by numbers.
        ds_scheme: the deep-supervision weight scheme as given ("nnunet", ... or numbers).
        ds_weights: the weights it gave for this network (None without deep supervision).
        sources: where each parameter came from (an environment variable, the config file or "default").
        gamma_proposal: the data-driven proposal (:class:`unifocal.gamma.GammaProposal` as a dict) when
            gamma was "auto".
        ignored: settings given but not used by this loss, with their sources.
    """

    loss: str
    params: dict
    ds_scheme: Any = "nnunet"
    ds_weights: Optional[list] = None
    sources: dict = field(default_factory=dict)
    gamma_proposal: Optional[dict] = None
    ignored: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        """A JSON-able record (stored in the checkpoint and in ``unifocal_loss.json``)."""
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params.items()}
        scheme = list(self.ds_scheme) if isinstance(self.ds_scheme, tuple) else self.ds_scheme
        return {"loss": self.loss, "params": params, "ds_scheme": scheme, "ds_weights": self.ds_weights,
                "sources": dict(self.sources), "gamma_proposal": self.gamma_proposal, "ignored": dict(self.ignored)}

    @classmethod
    def from_record(cls, record: Mapping) -> "ResolvedLoss":
        if row_of_loss(record.get("loss")) is None:
            raise SettingsError(f"stored loss record names an unknown loss {record.get('loss')!r}")
        unknown = sorted(set(record["params"]) - set(loss_plan(record["loss"]).settings))
        if unknown:
            raise SettingsError(f"stored loss record of the {record['loss']} loss has parameters it does not take: "
                                f"{', '.join(unknown)}")
        return cls(loss=record["loss"], params=dict(record["params"]), ds_scheme=record.get("ds_scheme", "nnunet"),
                   ds_weights=record.get("ds_weights"), sources=dict(record.get("sources", {})),
                   gamma_proposal=record.get("gamma_proposal"), ignored=dict(record.get("ignored", {})))

    def same_loss(self, other: "ResolvedLoss") -> bool:
        """Whether both describe the same loss function (sources aside)."""
        a, b = self.to_record(), other.to_record()
        return all(a[k] == b[k] for k in ("loss", "params", "ds_scheme"))

    def describe(self) -> str:
        """Human-readable lines for the training log."""
        plan = loss_plan(self.loss)
        lines = [f"unifocal loss: {self.loss} ({plan.loss_class.__name__})"]
        for key, value in self.params.items():
            name = plan.settings[key]
            meaning = _HELP.get(key, "") + (f"; the loss's {name}" if name != key else "")
            lines.append(f"  {key} = {value!r}   [{self.sources.get(key, 'default')}]  ({meaning or 'loss parameter'})")
        lines.append(f"  deep supervision: {self.ds_scheme!r} -> weights {self.ds_weights}"
                     f"   [{self.sources.get('ds_weights', 'default')}]")
        if self.gamma_proposal is not None:
            freqs = ", ".join(f"{f:.4g}" for f in self.gamma_proposal["frequencies"])
            lines.append(f"  gamma 'auto' (rule {self.gamma_proposal['rule']!r}) from training-label frequencies [{freqs}]")
        for key, source in self.ignored.items():
            lines.append(f"  WARNING: {key} [{source}] does not apply to this loss and is ignored")
        return "\n".join(lines)


def _check_per_class(name: str, value: Any, state: TrainerState, source: str) -> None:
    if isinstance(value, (list, tuple)) and len(value) != state.num_channels:
        what = "regions" if state.has_regions else "classes (background first)"
        raise SettingsError(
            f"{name} [{source}] has {len(value)} values but this dataset has {state.num_channels} {what}")


def resolve(
    loss: str,
    settings: Settings,
    state: TrainerState,
    gamma_provider: Optional[Callable[[], Any]] = None,
) -> ResolvedLoss:
    """Fill in defaults, resolve ``gamma="auto"`` and validate: the concrete parameters of ``loss``.

    Args:
        loss: the loss's record name (a trainer row's ``loss``).
        settings: the user's settings (:func:`nnunet_trainers.config.load_settings`).
        state: the trainer's state.
        gamma_provider: called (once) for ``gamma="auto"``; returns a :class:`unifocal.gamma.GammaProposal`.

    Raises:
        SettingsError: naming the offending setting and its source.
    """
    plan = loss_plan(loss)
    _check_names(plan, settings)
    params = dict(plan.defaults)
    sources = {}
    ignored = {}
    for key in settings.given():
        if key == "ds_weights":
            continue
        if key in plan.settings:
            params[key] = settings.value(key)
            sources[key] = settings.source(key)
        else:
            ignored[key] = settings.source(key)

    if state.has_regions and params.get("rare_classes") is not None:
        raise SettingsError(
            f"rare_classes [{settings.source('rare_classes')}] applies to label mode only: in region mode every "
            f"region is its own binary problem (the region rare, its complement common)")

    proposal = None
    if params.get("gamma") == AUTO:
        if not plan.auto_gamma:
            raise SettingsError(f"gamma 'auto' [{settings.source('gamma')}] applies to the Unified Focal trainers only "
                                "(a loss that takes per-class gamma and rare_classes)")
        if gamma_provider is None:
            raise SettingsError("gamma 'auto' needs the training labels, but no statistics are available here")
        proposal = gamma_provider()
        params["gamma"] = tuple(float(g) for g in proposal.gamma)
        if not state.has_regions and "rare_classes" not in sources:
            params["rare_classes"] = tuple(int(c) for c in proposal.rare_classes)
            sources["rare_classes"] = "gamma 'auto'"
        if not state.has_regions and not params["rare_classes"]:
            raise SettingsError("gamma 'auto' found no rare class in the training labels; set UNIFOCAL_RARE_CLASSES")

    if "gamma" in params:
        _check_per_class("gamma", params["gamma"], state, settings.source("gamma"))
    rare = params.get("rare_classes")
    if rare is not None:
        bad = [c for c in rare if not 0 <= c < state.num_channels]
        if bad:
            raise SettingsError(f"rare_classes [{settings.source('rare_classes')}] names classes {bad} outside "
                                f"0..{state.num_channels - 1}")
        if len(set(rare)) == state.num_channels:
            raise SettingsError(f"rare_classes [{settings.source('rare_classes')}] makes every class rare; "
                                "leave at least one common class (usually 0, the background)")

    scheme = settings.ds_weights if settings.ds_weights is not None else "nnunet"
    if settings.ds_weights is not None:
        sources["ds_weights"] = settings.source("ds_weights")
    ds_weights = None
    if state.deep_supervision:
        try:
            ds_weights = nnunet_ds_weights(state.num_ds_outputs, scheme, state)
        except ValueError as error:
            raise SettingsError(f"ds_weights [{settings.source('ds_weights')}]: {error}") from None

    resolved = ResolvedLoss(loss, params, scheme, ds_weights, sources, proposal.to_dict() if proposal else None, ignored)
    build_loss(resolved, state)  # validates the values with the loss's own checks
    return resolved


class NnUNetTargetAdapter(nn.Module):
    """Calls a unifocal loss with nnU-Net's targets at one scale.

    Region mode with an ignore label: the last target channel marks ignored voxels; it is split off and
    passed as ``mask`` (1 where a voxel counts). Label mode passes the int16 label map unchanged (the
    loss was built with ``ignore_index``).
    """

    def __init__(self, loss: nn.Module, has_regions: bool, has_ignore: bool) -> None:
        super().__init__()
        self.loss = loss
        self.split_ignore_channel = has_regions and has_ignore

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        if not self.split_ignore_channel:
            return self.loss(output, target)
        ignored = target[:, -1:]
        mask = ~ignored if ignored.dtype == torch.bool else 1 - ignored
        return self.loss(output, target[:, :-1], mask=mask)

    def extra_repr(self) -> str:
        return f"split_ignore_channel={self.split_ignore_channel}"


def build_loss(resolved: ResolvedLoss, state: TrainerState) -> nn.Module:
    """The training loss module for ``resolved`` on a trainer in ``state``.

    Returns ``DeepSupervisionLoss(NnUNetTargetAdapter(loss), weights)`` with deep supervision, else the
    adapter alone; called as ``loss(output, target)`` like nnU-Net's own losses. When the trainer compiles
    (``state.compiled``), the loss is ``torch.compile``d, as nnU-Net compiles its Dice loss.

    Raises:
        SettingsError: when the loss rejects a parameter value (the message names its source).
    """
    plan = loss_plan(resolved.loss)
    mode = {"batch_dice": state.batch_dice, **state.mode_kwargs()}
    try:
        inner = plan.loss_class(**plan.arguments(resolved.params),
                                **{key: value for key, value in mode.items() if key in plan.accepted})
    except (ValueError, TypeError) as error:
        given = {k: resolved.sources[k] for k in resolved.params if k in resolved.sources}
        where = ", ".join(f"{k} from {s}" for k, s in given.items()) or "defaults"
        raise SettingsError(f"invalid settings for the {resolved.loss} loss ({where}): {error}") from None
    if state.compiled:  # as nnUNetTrainer._build_loss compiles its Dice loss when _do_i_compile()
        inner = torch.compile(inner)
    loss: nn.Module = NnUNetTargetAdapter(inner, state.has_regions, state.ignore_label is not None)
    if state.deep_supervision:
        loss = L.DeepSupervisionLoss(loss, weights=list(resolved.ds_weights))
    return loss
