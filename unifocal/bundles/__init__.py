"""The MONAI bundles that come with unifocal, one folder each (``configs/``, ``docs/``, ``LICENSE``), shipped
as package data: :func:`names` lists them and :func:`export` writes one as a ready bundle folder, which is what
``unifocal bundle list`` and ``unifocal bundle export NAME DEST`` do."""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath
from typing import Iterator, Union

__all__ = ["names", "metadata", "export"]

_SKIPPED = ("__init__.py", "__pycache__")


def _root() -> Traversable:
    return resources.files(__name__)


def names() -> list[str]:
    """The bundles' names (their folder names), sorted."""
    return sorted(entry.name for entry in _root().iterdir()
                  if entry.is_dir() and entry.joinpath("configs", "metadata.json").is_file())


def _bundle(name: str) -> Traversable:
    if not isinstance(name, str) or name not in names():
        raise ValueError(f"no bundle named {name!r}; the bundles are {', '.join(names())} (unifocal bundle list)")
    return _root() / name


def metadata(name: str) -> dict:
    """The bundle's ``configs/metadata.json``."""
    return json.loads(_bundle(name).joinpath("configs", "metadata.json").read_text(encoding="utf-8"))


def _files(folder: Traversable, relative: PurePosixPath = PurePosixPath()) -> Iterator[tuple[PurePosixPath, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name in _SKIPPED:
            continue
        if entry.is_dir():
            yield from _files(entry, relative / entry.name)
        else:
            yield relative / entry.name, entry


def export(name: str, destination: Union[str, Path], overwrite: bool = False) -> list[Path]:
    """Write bundle ``name`` into the folder ``destination`` (created if missing), with an empty ``models/``
    for the checkpoints; return the files written.

    A folder that holds anything is refused unless ``overwrite``: then the bundle's files replace the ones of
    the same name and every other file stays as it is (nothing is ever removed). Every target is checked
    before the first file is written.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False; got {overwrite!r}")
    files = list(_files(_bundle(name)))
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"{destination} is a file, not a folder for the bundle")
    if destination.is_dir() and any(destination.iterdir()) and not overwrite:
        raise ValueError(f"{destination} is not empty: choose an empty or new folder, or pass --overwrite to write "
                         "the bundle's files into it (other files stay)")
    targets = [destination.joinpath(*relative.parts) for relative, _ in files]
    models = destination / "models"
    in_the_way = [p for target in targets for p in [*target.parents, target] if p.is_file() and p != target
                  or p == target and p.is_dir()] + ([models] if models.exists() and not models.is_dir() else [])
    if in_the_way:
        raise ValueError(f"{in_the_way[0]} is in the way of the bundle's files (a file where a folder belongs, "
                         "or the reverse): move it away")
    for (_, source), target in zip(files, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    models.mkdir(exist_ok=True)
    return targets
