"""Rare-class gamma assignment: per-class gamma and the rare set, derived from the data's own statistics.

The Unified Focal loss has one focal parameter gamma per class (see :mod:`unifocal.losses.unified`):
on the common classes it suppresses easy voxels in the focal part, ``(1 - p)^gamma``; on the rare classes
it enhances the Tversky part, ``(1 - TI)^(1 - gamma)``. Both effects should grow with how unbalanced a
class is, and vanish for a class that is not unbalanced at all. This module measures class frequencies by
streaming over label maps (one case in memory at a time) and turns them into a proposal.

Rule "frequency" (the default):

- A class is *rare* when its voxel frequency ``f_c`` is below the uniform share ``1 / C``; the others are
  *common*. The background is common whenever it is the largest class.
- Imbalance of a class: ``r_c = f_ref / f_c`` with ``f_ref`` the frequency of the largest common class for
  a rare class; for a common class, the imbalance it imposes on the rest: ``f_c / (1 - f_c)``
  (its voxels per voxel of all other classes).
- ``gamma_c = L / (1 + L)`` with ``L = log10(r_c)`` (0 for ``r_c <= 1``), clipped to
  ``[GAMMA_MIN, GAMMA_MAX] = [0.1, 0.9]`` for classes with ``r_c > 1``, the range over which the paper
  found the loss stable (Yeung et al. 2022, Fig. 3). One decade of imbalance gives the paper's default
  0.5, two decades 0.67, three 0.75; a balanced class gets 0, where the loss reduces to plain CE + Dice.

Rule "paper": one gamma (0.5) for every class, background common, every foreground class rare: the
paper's default setting.

Multilabel (region) data: each region channel is a binary problem, its complement common and the channel
rare, so only gamma varies: ``r = (1 - f) / f`` for a region covering a fraction ``f`` of the voxels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "GAMMA_MIN",
    "GAMMA_MAX",
    "PAPER_GAMMA",
    "RULES",
    "GammaProposal",
    "LabelValueCounts",
    "count_label_values",
    "count_labels",
    "count_regions",
    "gamma_from_imbalance",
    "propose_gamma",
]

GAMMA_MIN = 0.1
GAMMA_MAX = 0.9
PAPER_GAMMA = 0.5
RULES = ("frequency", "paper")


def count_labels(labels: Iterable[np.ndarray], num_classes: int, ignore_label: Optional[int] = None) -> np.ndarray:
    """Voxel counts per class over an iterable of label maps, one array in memory at a time.

    Values equal to ``ignore_label`` and negative values (nnU-Net's -1 padding) are not counted.

    Raises:
        ValueError: for label values >= ``num_classes`` (other than the ignore label).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for array in labels:
        values = np.asarray(array).ravel()
        keep = values >= 0
        if ignore_label is not None:
            keep &= values != ignore_label
        values = values[keep].astype(np.int64, copy=False)
        if values.size and values.max() >= num_classes:
            raise ValueError(f"label value {values.max()} outside [0, {num_classes}) (ignore_label={ignore_label})")
        counts += np.bincount(values, minlength=num_classes)
    return counts


@dataclass
class LabelValueCounts:
    """The label values that occur in a stream of label maps, with their voxel counts.

    Attributes:
        counts: voxels per label value, for the values that occur (ascending).
        first_seen: for each value, the index (in the stream) of the first label map holding it.
        num_maps: number of label maps read.
    """

    counts: dict
    first_seen: dict
    num_maps: int = 0

    @property
    def values(self) -> list:
        return sorted(self.counts)

    def dense(self, num_classes: int) -> np.ndarray:
        """Counts of the classes 0..num_classes-1 (0 for a value that does not occur)."""
        out = np.zeros(num_classes, dtype=np.int64)
        for value, count in self.counts.items():
            out[value] = count
        return out


def count_label_values(labels: Iterable[np.ndarray], ignore_label: Optional[int] = None) -> LabelValueCounts:
    """Voxel count of each label value that occurs, one label map in memory at a time.

    Values equal to ``ignore_label`` and negative values (nnU-Net's -1 padding) are not counted. Memory
    and time do not depend on how large a value is (a single stray voxel of 10^9 costs nothing): small
    values are counted with ``np.bincount``, others with ``np.unique``.
    """
    counts: dict = {}
    first_seen: dict = {}
    num_maps = 0
    for index, array in enumerate(labels):
        num_maps += 1
        values = np.asarray(array).ravel()
        keep = values >= 0
        if ignore_label is not None:
            keep &= values != ignore_label
        values = values[keep]
        if not values.size:
            continue
        if int(values.max()) < max(values.size, 1 << 16):
            per_value = np.bincount(values.astype(np.intp, copy=False))
            found = np.flatnonzero(per_value)
            found_counts = per_value[found]
        else:
            found, found_counts = np.unique(values, return_counts=True)
        for value, count in zip(found.tolist(), found_counts.tolist()):
            if value not in counts:
                counts[value] = 0
                first_seen[value] = index
            counts[value] += count
    return LabelValueCounts(dict(sorted(counts.items())), first_seen, num_maps)


def count_regions(
    labels: Iterable[np.ndarray], regions: Sequence[Sequence[int]], ignore_label: Optional[int] = None
) -> tuple[np.ndarray, int]:
    """Foreground voxel counts per region (a region is a set of label values, nnU-Net style) and the
    number of counted voxels, over an iterable of label maps."""
    region_sets = [np.asarray(sorted(int(v) for v in (r if isinstance(r, (list, tuple)) else [r]))) for r in regions]
    counts = np.zeros(len(region_sets), dtype=np.int64)
    total = 0
    for array in labels:
        values = np.asarray(array).ravel()
        keep = values >= 0
        if ignore_label is not None:
            keep &= values != ignore_label
        values = values[keep]
        total += values.size
        for index, members in enumerate(region_sets):
            counts[index] += int(np.isin(values, members).sum())
    return counts, total


def gamma_from_imbalance(ratio: float) -> float:
    """``L / (1 + L)`` with ``L = log10(ratio)``, clipped to [GAMMA_MIN, GAMMA_MAX]; 0 when ratio <= 1."""
    if not ratio > 1:
        return 0.0
    if math.isinf(ratio):
        return GAMMA_MAX
    level = math.log10(ratio)
    return float(min(GAMMA_MAX, max(GAMMA_MIN, level / (1 + level))))


@dataclass(frozen=True)
class GammaProposal:
    """A proposed loss setting with the statistics it came from.

    Attributes:
        frequencies: voxel frequency per class (per region channel in multilabel mode).
        gamma: gamma per class (per channel).
        rare_classes / common_classes: the class split (empty for multilabel data).
        rule: the rule that produced it.
        multilabel: whether the frequencies are of region channels.
    """

    frequencies: tuple[float, ...]
    gamma: tuple[float, ...]
    rare_classes: tuple[int, ...]
    common_classes: tuple[int, ...]
    rule: str
    multilabel: bool = False

    def loss_kwargs(self) -> dict:
        """Keyword arguments for :class:`unifocal.losses.UnifiedFocalLoss`."""
        if self.multilabel:
            return {"gamma": list(self.gamma), "multilabel": True}
        return {"gamma": list(self.gamma), "rare_classes": list(self.rare_classes), "common_classes": list(self.common_classes)}

    def to_dict(self) -> dict:
        return asdict(self)


def propose_gamma(frequencies: Sequence[float], rule: str = "frequency", multilabel: bool = False) -> GammaProposal:
    """Per-class gamma and rare set from class frequencies (voxel fractions or raw counts).

    See the module docstring for the rules. For exclusive classes ``frequencies[0]`` is the background.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}")
    values = np.asarray(frequencies, dtype=np.float64)
    if values.ndim != 1 or values.size < 1 or (not multilabel and values.size < 2):
        raise ValueError(f"need one frequency per class (at least 2 classes, or 1 region); got {list(values)}")
    if (values < 0).any() or not np.isfinite(values).all():
        raise ValueError(f"frequencies must be finite and >= 0; got {list(values)}")
    if multilabel:
        if (values > 1).any():
            raise ValueError("region frequencies are fractions of the voxels, in [0, 1]")
        freq = values
        if rule == "paper":
            gamma = [PAPER_GAMMA] * freq.size
        else:
            gamma = [gamma_from_imbalance((1 - f) / f if f > 0 else math.inf) for f in freq]
        return GammaProposal(tuple(freq.tolist()), tuple(gamma), (), (), rule, True)

    if values.sum() <= 0:
        raise ValueError("frequencies sum to 0: no labelled voxels were counted")
    freq = values / values.sum()
    num_classes = freq.size
    if rule == "paper":
        rare = list(range(1, num_classes))
    else:
        rare = [c for c in range(num_classes) if freq[c] < 1.0 / num_classes]
    rare_set = set(rare)  # a set: the class count can be large, the rule stays linear in it
    common = [c for c in range(num_classes) if c not in rare_set]
    if rule == "paper":
        gamma = [PAPER_GAMMA] * num_classes
    else:
        reference = max(freq[c] for c in common)
        gamma = []
        for c in range(num_classes):
            if c in rare_set:
                ratio = reference / freq[c] if freq[c] > 0 else math.inf
            else:
                ratio = freq[c] / (1 - freq[c]) if freq[c] < 1 else math.inf
            gamma.append(gamma_from_imbalance(ratio))
    return GammaProposal(tuple(freq.tolist()), tuple(gamma), tuple(rare), tuple(common), rule, False)
