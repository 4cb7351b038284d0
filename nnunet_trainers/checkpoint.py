"""Loading nnU-Net checkpoints without running pickled code.

nnU-Net's trainer loads its checkpoints with ``torch.load(weights_only=False)``: unpickling may call any
importable function, so a crafted ``checkpoint_*.pth`` runs code as soon as ``--c`` or ``--val`` reads it.
The unifocal trainers read them with ``weights_only=True`` instead, which only rebuilds tensors, containers
and plain values, plus an allow-list of what nnU-Net's checkpoints hold besides: numpy scalars of numeric
dtypes (nnU-Net logs its losses and Dice values as ``numpy.float32``). Anything else is refused with a
:class:`CheckpointError` naming the file and the function its pickle would call; a file torch cannot read
(empty, truncated) is one line naming it too.

Nothing here imports nnunetv2.
"""

from __future__ import annotations

import pickle
import re
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
        CheckpointError: one line naming the file: it holds objects outside the allow-list (a checkpoint that
            would run code when unpickled is refused before anything in it runs; the message names the
            function it would call), it cannot be read (missing, empty, truncated, not a PyTorch file), or
            it is not a checkpoint dictionary.
    """
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(f"checkpoint {path}: refused, {_refused(str(error))}. The unifocal trainers load "
                                  "checkpoints with weights_only=True because unpickling anything else can run code; "
                                  "a checkpoint written by nnU-Net holds only tensors, numbers and strings. Do not use "
                                  "this file unless you know where it came from.") from None
        except OSError as error:
            raise CheckpointError(f"checkpoint {path}: cannot be read ({error.strerror or error})") from None
        except Exception as error:  # torch reports a damaged file as RuntimeError, EOFError, KeyError, ...
            raise CheckpointError(f"checkpoint {path}: not a readable PyTorch checkpoint ({_damage(path, error)}); "
                                  "copy it again, or continue from another checkpoint of the fold") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint or "init_args" not in checkpoint:
        raise CheckpointError(f"checkpoint {path}: not an nnU-Net training checkpoint (no network_weights/init_args)")
    return checkpoint


def _refused(message: str) -> str:
    """What torch's weights-only unpickler refused, without its advice to turn the protection off."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    if match:
        return f"it would call {match.group(1)} when unpickled"
    return "it holds objects that a weights-only load does not rebuild"


def _damage(path: Union[str, Path], error: Exception) -> str:
    if Path(path).stat().st_size == 0:
        return "the file is empty (0 bytes)"
    if "zip archive" in str(error) or isinstance(error, EOFError):
        return "the file is truncated or damaged"
    return f"torch cannot decode it: {type(error).__name__}"
