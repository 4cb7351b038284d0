"""What a run may write and remove in its output folder.

Every unifocal run keeps a record of the entries it created in its output folder
(``.unifocal_outputs.json``); :func:`check_output` decides, before anything is written, which existing entries a
run may replace, and :func:`claim_output` carries that out.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

__all__ = ["MARKER", "OutputClaim", "check_output", "claim_output", "nnunet_variables"]

MARKER = ".unifocal_outputs.json"
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class OutputClaim:
    """The entries (files or folders directly in ``root``) a run writes, and the existing ones it removes
    first. Made by :func:`check_output`, carried out by :func:`claim_output`."""

    root: Path
    entries: tuple[str, ...]
    remove: tuple[Path, ...]


def nnunet_variables(environ: Optional[Mapping[str, str]] = None) -> dict[str, Path]:
    """The folders the nnU-Net variables point to (those that are set), as ``{"$nnUNet_raw": path}``."""
    env = os.environ if environ is None else environ
    return {f"${name}": Path(env[name]) for name in NNUNET_VARIABLES if env.get(name, "").strip()}


def _recorded_entries(root: Path) -> set[str]:
    """The entries earlier unifocal runs recorded creating in ``root`` (none when the record is unreadable)."""
    try:
        record = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    entries = record.get("entries") if isinstance(record, dict) else None
    return {e for e in entries if isinstance(e, str)} if isinstance(entries, list) else set()


def check_output(
    root: Path, entries: Sequence[str], overwrite: bool, protected: Mapping[str, Path]
) -> OutputClaim:
    """Decide what a run may do in its output folder ``root``, without touching anything.

    The run writes ``entries`` (names directly in ``root``). An entry that already exists is removed only
    when all of these hold:

    - ``overwrite`` is given;
    - an earlier unifocal run created it: it is listed in ``root/.unifocal_outputs.json``, the record every
      run keeps of the entries it created (:func:`claim_output`);
    - it is not a symbolic link (unifocal never creates one);
    - it neither is nor contains a protected path: a folder an nnU-Net variable points to
      (:func:`nnunet_variables`) or data the run reads (a ``--dataset``, ``--workspace``, predictions).

    Raises:
        ValueError: naming the first entry that may not be removed, and why.
    """
    root = Path(root).resolve()
    recorded = _recorded_entries(root)
    guarded = {name: Path(path).resolve() for name, path in protected.items()}
    remove = []
    for name in entries:
        path = root / name
        if not (path.exists() or path.is_symlink()):
            continue
        if path.is_symlink():
            raise ValueError(f"{path} is a symbolic link; unifocal does not replace it: choose another --output")
        for what, target in guarded.items():
            if path == target or path in target.parents:
                relation = "is" if path == target else "contains"
                raise ValueError(f"{path} {relation} {what} ({target}); unifocal never removes it: choose another "
                                 "--output")
        if name not in recorded:
            raise ValueError(f"{path} already exists and no unifocal run recorded creating it (in {root / MARKER}); "
                             "move it away or choose another --output")
        if not overwrite:
            raise ValueError(f"{path} exists from an earlier unifocal run; pass --overwrite to replace it, or "
                             "choose another --output")
        remove.append(path)
    return OutputClaim(root, tuple(entries), tuple(remove))


def claim_output(claim: OutputClaim) -> None:
    """Remove what :func:`check_output` allowed and record the run's entries as unifocal's (before they
    exist, so that an interrupted run's partial output can be replaced with ``--overwrite`` too)."""
    claim.root.mkdir(parents=True, exist_ok=True)
    for path in claim.remove:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    entries = sorted(_recorded_entries(claim.root) | set(claim.entries))
    record = {"created_by": "unifocal", "entries": entries,
              "note": "entries a later unifocal run may replace with --overwrite; nothing else is ever removed"}
    (claim.root / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


