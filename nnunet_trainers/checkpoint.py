"""Loading nnU-Net checkpoints without running pickled code.

nnU-Net's trainer loads its checkpoints with ``torch.load(weights_only=False)``: unpickling may call any
importable function, so a crafted ``checkpoint_*.pth`` runs code as soon as ``--c`` or ``--val`` reads it.
The unifocal trainers read them with ``weights_only=True`` instead, which only rebuilds tensors, containers
and plain values, plus an allow-list of what nnU-Net's checkpoints hold besides: numpy scalars of numeric
dtypes (nnU-Net logs its losses and Dice values as ``numpy.float32``). Anything else is refused with a
:class:`CheckpointError` naming the file and the refused object.

Nothing here imports nnunetv2.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Union

import numpy as np
import torch

__all__ = ["CheckpointError", "SAFE_GLOBALS", "load_checkpoint_file"]

# numpy pickles a scalar as scalar(dtype, bytes); the reconstructor's module moved in numpy 2, so take it
# from a scalar's own reduce. Numeric dtypes only: object arrays could hold anything.
SAFE_GLOBALS = [
    np.float32(0).__reduce__()[0],
    np.dtype,
    *sorted({type(np.dtype(code)) for code in "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]},
            key=lambda cls: cls.__name__),
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded safely or is not an nnU-Net checkpoint."""


def load_checkpoint_file(path: Union[str, Path], map_location: Union[str, torch.device, None] = "cpu") -> dict:
    """``torch.load(path, weights_only=True)`` with :data:`SAFE_GLOBALS` allowed.

    Raises:
        CheckpointError: the file holds objects outside the allow-list (a checkpoint that would run code
            when unpickled is refused before anything in it runs), or is not a checkpoint dictionary.
        FileNotFoundError: no such file.
    """
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            detail = str(error).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0]
            reason = detail.split(" was not an allowed global")[0]  # torch's own advice is to allow it
            raise CheckpointError(
                f"checkpoint {path}: refused, it holds objects that a weights-only load does not rebuild "
                f"({reason}). The unifocal trainers load checkpoints with torch.load(weights_only=True), "
                "because unpickling anything else can run code; a checkpoint written by nnU-Net holds only "
                "tensors, numbers and strings. Do not use this file unless you know where it came from."
            ) from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint or "init_args" not in checkpoint:
        raise CheckpointError(f"checkpoint {path}: not an nnU-Net training checkpoint (no network_weights/init_args)")
    return checkpoint
