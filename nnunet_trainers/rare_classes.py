"""Rare-class gamma assignment for a training fold, from nnU-Net's preprocessed labels, cached.

``UNIFOCAL_GAMMA=auto`` asks for per-class (per-region) gamma and the rare class set derived from the
class frequencies of the fold's training cases (:func:`unifocal.gamma.propose_gamma`, rule
"frequency"; see docs/gamma.md). The segmentations are read one case at a time through nnU-Net's own
dataset class (blosc2 or numpy, whatever the preprocessing wrote), so the statistics are those of the
data the network trains on (after cropping and resampling); nnU-Net's -1 padding outside the crop and
the ignore label are not counted.

The proposal is cached as JSON next to the plans in the preprocessed dataset folder,
``unifocal_gamma__<plans>__<configuration>__fold_<fold>.json``, together with the rule, the label
definition and a hash of the training case list; a cache that does not match is recomputed. Under DDP
rank 0 computes it while the other ranks wait at a barrier.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from unifocal.gamma import GammaProposal, count_labels, count_regions, propose_gamma

__all__ = ["cache_path", "fold_statistics", "fold_gamma_proposal"]

CACHE_VERSION = 1


def cache_path(trainer: Any) -> Path:
    """Where the proposal for ``trainer``'s plans, configuration and fold is cached."""
    return Path(trainer.preprocessed_dataset_folder_base) / (
        f"unifocal_gamma__{trainer.plans_manager.plans_name}__{trainer.configuration_name}__fold_{trainer.fold}.json")


def _segmentations(trainer: Any, identifiers: list) -> Iterator[np.ndarray]:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    dataset_class = infer_dataset_class(trainer.preprocessed_dataset_folder)
    dataset = dataset_class(trainer.preprocessed_dataset_folder, list(identifiers))
    for identifier in identifiers:
        _, seg, _, _ = dataset.load_case(identifier)
        yield np.asarray(seg[:])


def fold_statistics(trainer: Any, identifiers: list, rule: str = "frequency") -> GammaProposal:
    """Count the labels (regions) of ``identifiers`` in the trainer's preprocessed data and propose gamma."""
    label_manager = trainer.label_manager
    segs = _segmentations(trainer, identifiers)
    if label_manager.has_regions:
        counts, total = count_regions(segs, label_manager.foreground_regions, label_manager.ignore_label)
        if total == 0:
            raise ValueError("no labelled voxels in the training cases")
        return propose_gamma(counts / total, rule=rule, multilabel=True)
    labels = label_manager.all_labels
    if list(labels) != list(range(len(labels))):
        raise ValueError(f"labels must be consecutive from 0 for gamma 'auto'; got {labels}")
    counts = count_labels(segs, len(labels), label_manager.ignore_label)
    return propose_gamma(counts, rule=rule)


def _cache_key(trainer: Any, identifiers: list, rule: str) -> dict:
    digest = hashlib.sha1("\n".join(sorted(identifiers)).encode()).hexdigest()
    return {"version": CACHE_VERSION, "rule": rule, "labels": trainer.dataset_json["labels"],
            "configuration": trainer.configuration_name, "fold": str(trainer.fold), "num_cases": len(identifiers),
            "cases_sha1": digest}


def _read_cache(path: Path, key: dict) -> Optional[GammaProposal]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if stored.get("key") != key:
        return None
    proposal = stored["proposal"]
    return GammaProposal(**{k: tuple(v) if isinstance(v, list) else v for k, v in proposal.items()})


def fold_gamma_proposal(trainer: Any, rule: str = "frequency", log=print) -> GammaProposal:
    """The gamma proposal for ``trainer``'s training fold, from the cache or computed and cached."""
    import torch.distributed as dist

    identifiers, _ = trainer.do_split()
    identifiers = sorted(identifiers)
    key = _cache_key(trainer, identifiers, rule)
    path = cache_path(trainer)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    proposal = _read_cache(path, key)
    if proposal is None and (not distributed or dist.get_rank() == 0):
        log(f"unifocal: counting class frequencies over {len(identifiers)} training cases for gamma 'auto'...")
        proposal = fold_statistics(trainer, identifiers, rule)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "proposal": proposal.to_dict()}, indent=2))
        os.replace(tmp, path)
        log(f"unifocal: cached the gamma proposal in {path}")
    elif proposal is not None:
        log(f"unifocal: gamma proposal read from {path}")
    if distributed:
        dist.barrier()
        if proposal is None:
            proposal = _read_cache(path, key)
            if proposal is None:
                raise RuntimeError(f"rank {dist.get_rank()}: rank 0 did not write a usable gamma cache {path}")
    return proposal
