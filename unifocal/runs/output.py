"""What a run may write and remove in its output folder.

Every unifocal run keeps a record, ``.unifocal_outputs.json`` in its output folder, of the entries (names
directly in the folder) it writes and of every file it wrote under them. :func:`check_output` decides, before
anything is written, what a run may do with the entries that already exist; :func:`claim_output` removes what
it allowed, and :func:`record_outputs` adds the files the run wrote to the record. Only recorded files are
ever removed, never a folder with anything else in it: a file the record does not list (a user's checkpoint
or prediction placed there later, or one a killed run wrote after its last record) makes ``--overwrite``
refuse, naming the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

__all__ = ["MARKER", "OutputClaim", "check_output", "claim_output", "record_outputs", "nnunet_variables"]

MARKER = ".unifocal_outputs.json"
NNUNET_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class OutputClaim:
    """The entries a run writes in ``root``, the recorded files it removes first, and the files already there
    that it keeps (a resumed run's earlier output). Made by :func:`check_output`, carried out by
    :func:`claim_output`, completed by :func:`record_outputs`."""

    root: Path
    entries: tuple[str, ...]
    remove: tuple[Path, ...]
    kept: frozenset = frozenset()


def nnunet_variables(environ: Optional[Mapping[str, str]] = None) -> dict[str, Path]:
    """The folders the nnU-Net variables point to (those that are set), as ``{"$nnUNet_raw": path}``."""
    env = os.environ if environ is None else environ
    return {f"${name}": Path(env[name]) for name in NNUNET_VARIABLES if env.get(name, "").strip()}


def _read_record(root: Path) -> tuple[set[str], set[str]]:
    """The entries and files (paths relative to ``root``) earlier unifocal runs recorded writing in ``root``;
    nothing when the record is unreadable."""
    try:
        record = json.loads((root / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set(), set()
    if not isinstance(record, dict):
        return set(), set()

    def strings(key: str) -> set[str]:
        values = record.get(key)
        return {v for v in values if isinstance(v, str)} if isinstance(values, list) else set()

    return strings("entries"), strings("files")


def _write_record(root: Path, entries: Iterable[str], files: Iterable[str]) -> None:
    record = {"created_by": "unifocal", "entries": sorted(entries), "files": sorted(files),
              "note": "files a later unifocal run may replace with --overwrite; nothing else is ever removed"}
    temporary = root / f"{MARKER}.tmp"
    temporary.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(temporary, root / MARKER)  # a reader never sees half a record


def _files_under(path: Path) -> list[Path]:
    """Every file, symbolic link or other non-folder at or below ``path`` (links are not followed)."""
    if path.is_symlink() or not path.is_dir():
        return [path] if (path.exists() or path.is_symlink()) else []
    found = []
    for folder, folders, names in os.walk(path):
        found += [Path(folder, name) for name in names]
        found += [Path(folder, name) for name in folders if Path(folder, name).is_symlink()]
    return found


def check_output(
    root: Path, entries: Sequence[str], overwrite: bool, protected: Mapping[str, Path], resume: bool = False
) -> OutputClaim:
    """Decide what a run may do in its output folder ``root``, without touching anything.

    The run writes ``entries`` (names directly in ``root``). An entry that already exists must have been
    created by an earlier unifocal run (listed in ``root/.unifocal_outputs.json``), must not be a symbolic link
    (unifocal never creates one), and must neither be nor contain a protected path: a folder an nnU-Net variable
    points to (:func:`nnunet_variables`) or data the run reads (a ``--dataset``, ``--workspace``, predictions).
    Then, with ``overwrite``, the files recorded under it are removed, and the run refuses when it holds
    anything the record does not list; with ``resume``, it is kept and added to; else the run refuses.

    Raises:
        ValueError: naming the first entry or file that may not be removed, and why.
    """
    root = Path(root).resolve()
    recorded_entries, recorded_files = _read_record(root)
    guarded = {name: Path(path).resolve() for name, path in protected.items()}
    remove, kept = [], set()
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
        if name not in recorded_entries:
            raise ValueError(f"{path} already exists and no unifocal run recorded creating it (in {root / MARKER}); "
                             "move it away or choose another --output")
        files = _files_under(path)
        if resume and not overwrite:
            kept.update(f.relative_to(root).as_posix() for f in files)
            continue
        if not overwrite:
            raise ValueError(f"{path} exists from an earlier unifocal run; pass --overwrite to replace it, or "
                             "choose another --output")
        for file in files:
            if file.relative_to(root).as_posix() not in recorded_files:
                raise ValueError(f"{file} was not written by a unifocal run (it is not in {root / MARKER}); "
                                 "unifocal removes only what it wrote: move it away or choose another --output")
        remove += files
    return OutputClaim(root, tuple(entries), tuple(remove), frozenset(kept))


def claim_output(claim: OutputClaim) -> None:
    """Remove the files :func:`check_output` allowed (and the folders that held only them), and record the
    run's entries as unifocal's before they exist."""
    claim.root.mkdir(parents=True, exist_ok=True)
    entries, files = _read_record(claim.root)
    for path in claim.remove:
        path.unlink()  # a recorded symbolic link (submitit's) goes, never what it points to
        files.discard(path.relative_to(claim.root).as_posix())
    for name in claim.entries:
        _remove_empty_folders(claim.root / name)
    _write_record(claim.root, entries | set(claim.entries), files)


def _remove_empty_folders(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        return
    for folder, _, _ in sorted(os.walk(path), key=lambda walked: -len(Path(walked[0]).parts)):
        try:
            os.rmdir(folder)  # only an empty folder; anything else stays
        except OSError:
            pass


def record_outputs(claim: OutputClaim, owned: Iterable[Path] = ()) -> None:
    """Add to the record the files the run wrote under its entries: those that were not there when it began
    (:attr:`OutputClaim.kept` are not the run's), and every file under ``owned``, folders only this run's jobs
    write (they may have written while no unifocal process was running). Call it when a run ends, however
    it ends."""
    entries, files = _read_record(claim.root)
    for name in claim.entries:
        for path in _files_under(claim.root / name):
            relative = path.relative_to(claim.root).as_posix()
            if relative not in claim.kept:
                files.add(relative)
    for folder in owned:
        files.update(p.relative_to(claim.root).as_posix() for p in _files_under(Path(folder)))
    _write_record(claim.root, entries | set(claim.entries), files)
