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

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor, nn

from unifocal import losses as L
from unifocal.losses.deep_supervision import deep_supervision_weights

from .config import AUTO, Settings, SettingsError

__all__ = [
    "TrainerState",
    "LossSpec",
    "LOSS_SPECS",
    "ResolvedLoss",
    "NnUNetTargetAdapter",
    "resolve",
    "build_loss",
    "nnunet_ds_weights",
    "check_gamma_form",
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


def _unified(asymmetric: bool) -> Callable[[dict, TrainerState], nn.Module]:
    def build(params: dict, state: TrainerState) -> nn.Module:
        rare = params.get("rare_classes")
        return L.UnifiedFocalLoss(
            weight=params["weight"], delta=params["delta"], gamma=params["gamma"], asymmetric=asymmetric,
            rare_classes=rare, batch_dice=state.batch_dice, **state.mode_kwargs(),
        )
    return build


def _focal(params: dict, state: TrainerState) -> nn.Module:
    return L.FocalLoss(gamma=params["gamma"], **state.mode_kwargs())


def _tversky(params: dict, state: TrainerState) -> nn.Module:
    delta = params["delta"]
    return L.TverskyLoss(alpha=1.0 - delta, beta=delta, batch_dice=state.batch_dice, **state.mode_kwargs())


def _focal_tversky(params: dict, state: TrainerState) -> nn.Module:
    delta = params["delta"]
    return L.FocalTverskyLoss(alpha=1.0 - delta, beta=delta, gamma=params["gamma"], batch_dice=state.batch_dice,
                              **state.mode_kwargs())


def _combo(params: dict, state: TrainerState) -> nn.Module:
    return L.ComboLoss(alpha=params["weight"], beta=params["delta"], batch_dice=state.batch_dice, **state.mode_kwargs())


@dataclass(frozen=True)
class LossSpec:
    """A loss the trainers can use: which settings it reads, their defaults, and how to build it.

    ``meaning`` says what each setting means for this loss (docs and logs); ``auto_gamma``: gamma may be
    "auto"; ``per_class_gamma``: gamma may be one value per class (region).
    """

    name: str
    build: Callable[[dict, TrainerState], nn.Module]
    defaults: Mapping[str, Any]
    meaning: Mapping[str, str]
    auto_gamma: bool = False
    per_class_gamma: bool = True

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(self.defaults)


_UNIFIED_MEANING = {
    "weight": "lambda, weight of the focal part (1 - lambda on the focal Tversky part)",
    "delta": "weight of rare classes (focal part) and of false negatives (Tversky index)",
    "gamma": "focal parameter in [0, 1): (1 - p)^gamma suppression, (1 - TI)^(1 - gamma) enhancement",
    "rare_classes": "rare classes (label mode; default every foreground class)",
}

LOSS_SPECS: dict[str, LossSpec] = {
    "asymmetric_unified_focal": LossSpec(
        "asymmetric_unified_focal", _unified(True),
        {"weight": 0.5, "delta": 0.6, "gamma": 0.5, "rare_classes": None}, _UNIFIED_MEANING, auto_gamma=True),
    "symmetric_unified_focal": LossSpec(
        "symmetric_unified_focal", _unified(False),
        {"weight": 0.5, "delta": 0.6, "gamma": 0.5, "rare_classes": None}, _UNIFIED_MEANING, auto_gamma=True),
    "focal": LossSpec(
        "focal", _focal, {"gamma": 2.0},
        {"gamma": "focusing parameter >= 0 (Lin et al. 2017), one value or one per class/region"}),
    "tversky": LossSpec(
        "tversky", _tversky, {"delta": 0.7},
        {"delta": "false-negative weight beta; the false-positive weight is 1 - delta"}),
    "focal_tversky": LossSpec(
        "focal_tversky", _focal_tversky, {"delta": 0.7, "gamma": 4.0 / 3.0},
        {"delta": "false-negative weight; the false-positive weight is 1 - delta",
         "gamma": "Abraham & Khan's gamma > 0; the loss is (1 - TI)^(1/gamma)"}, per_class_gamma=False),
    "combo": LossSpec(
        "combo", _combo, {"weight": 0.5, "delta": 0.5},
        {"weight": "alpha, weight of the modified cross entropy (1 - alpha on Dice)",
         "delta": "beta, weight of false negatives in the modified cross entropy"}),
}


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
        loss: key into :data:`LOSS_SPECS`.
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
        if record.get("loss") not in LOSS_SPECS:
            raise SettingsError(f"stored loss record names an unknown loss {record.get('loss')!r}")
        return cls(loss=record["loss"], params=dict(record["params"]), ds_scheme=record.get("ds_scheme", "nnunet"),
                   ds_weights=record.get("ds_weights"), sources=dict(record.get("sources", {})),
                   gamma_proposal=record.get("gamma_proposal"), ignored=dict(record.get("ignored", {})))

    def same_loss(self, other: "ResolvedLoss") -> bool:
        """Whether both describe the same loss function (sources aside)."""
        a, b = self.to_record(), other.to_record()
        return all(a[k] == b[k] for k in ("loss", "params", "ds_scheme"))

    def describe(self) -> str:
        """Human-readable lines for the training log."""
        spec = LOSS_SPECS[self.loss]
        lines = [f"unifocal loss: {self.loss}"]
        for key, value in self.params.items():
            lines.append(f"  {key} = {value!r}   [{self.sources.get(key, 'default')}]  ({spec.meaning.get(key, '')})")
        lines.append(f"  deep supervision: {self.ds_scheme!r} -> weights {self.ds_weights}"
                     f"   [{self.sources.get('ds_weights', 'default')}]")
        if self.gamma_proposal is not None:
            freqs = ", ".join(f"{f:.4g}" for f in self.gamma_proposal["frequencies"])
            lines.append(f"  gamma 'auto' (rule {self.gamma_proposal['rule']!r}) from training-label frequencies [{freqs}]")
        for key, source in self.ignored.items():
            lines.append(f"  WARNING: {key} [{source}] does not apply to this loss and is ignored")
        return "\n".join(lines)


def check_gamma_form(spec: LossSpec, gamma: Any, source: str) -> None:
    """Reject a per-class gamma for a loss that takes one gamma, naming ``source``."""
    if isinstance(gamma, (list, tuple)) and not spec.per_class_gamma:
        raise SettingsError(
            f"gamma [{source}] has {len(gamma)} values, but the {spec.name} loss takes one gamma for every class "
            "(its exponent 1/gamma); give one number, or use a trainer with per-class gamma (the Unified Focal "
            "trainers, FocalTrainer)")


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
        loss: a key of :data:`LOSS_SPECS`.
        settings: the user's settings (:func:`nnunet_trainers.config.load_settings`).
        state: the trainer's state.
        gamma_provider: called (once) for ``gamma="auto"``; returns a :class:`unifocal.gamma.GammaProposal`.

    Raises:
        SettingsError: naming the offending setting and its source.
    """
    spec = LOSS_SPECS[loss]
    given = {k: getattr(settings, k) for k in settings.given()}
    params = dict(spec.defaults)
    sources = {}
    ignored = {}
    for key, value in given.items():
        if key == "ds_weights":
            continue
        if key in spec.defaults:
            params[key] = value
            sources[key] = settings.source(key)
        else:
            ignored[key] = settings.source(key)

    if state.has_regions and params.get("rare_classes") is not None:
        raise SettingsError(
            f"rare_classes [{settings.source('rare_classes')}] applies to label mode only: in region mode every "
            f"region is its own binary problem (the region rare, its complement common)")

    proposal = None
    if params.get("gamma") == AUTO:
        if not spec.auto_gamma:
            raise SettingsError(f"gamma 'auto' [{settings.source('gamma')}] applies to the Unified Focal trainers only")
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
        check_gamma_form(spec, params["gamma"], settings.source("gamma"))
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
    spec = LOSS_SPECS[resolved.loss]
    try:
        inner = spec.build(dict(resolved.params), state)
    except ValueError as error:
        given = {k: resolved.sources[k] for k in resolved.params if k in resolved.sources}
        where = ", ".join(f"{k} from {s}" for k, s in given.items()) or "defaults"
        raise SettingsError(f"invalid settings for the {spec.name} loss ({where}): {error}") from None
    if state.compiled:  # as nnUNetTrainer._build_loss compiles its Dice loss when _do_i_compile()
        inner = torch.compile(inner)
    loss: nn.Module = NnUNetTargetAdapter(inner, state.has_regions, state.ignore_label is not None)
    if state.deep_supervision:
        loss = L.DeepSupervisionLoss(loss, weights=list(resolved.ds_weights))
    return loss
