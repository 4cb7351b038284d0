"""The loss settings an nnU-Net training of a unifocal trainer recorded, for comparison tables and plots.

Every unifocal trainer writes ``unifocal_loss.json`` into its fold folder (the resolved loss: defaults filled
in, ``auto`` gamma replaced by its numbers). :func:`read_record` is the one reader of such a record (the
trainers, ``unifocal compare``, ``sweep`` and ``demo`` use it); :func:`read_run_settings` turns the records
of a trainer folder's folds into one short line, so that two runs of one trainer with other settings are
told apart. :func:`read_json_object` is the strict JSON reader of unifocal's settings files. Reads JSON
only (no nnunetv2, no torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

__all__ = ["RECORD_FILE", "RecordError", "describe_record", "read_json_object", "read_record", "read_run_settings",
           "layout_with_settings"]

RECORD_FILE = "unifocal_loss.json"


class RecordError(ValueError):
    """A settings file or record that cannot be read; the message names the file."""


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise RecordError(f"key {repeated[0]!r} appears more than once")
    return dict(pairs)


def read_json_object(path: Union[str, Path], where: Optional[str] = None, error: type = RecordError) -> dict:
    """A JSON object from ``path``: UTF-8, no key given twice, an object at the top.

    Raises ``error`` (a ValueError subclass) with one line starting with ``where`` (default: the path).
    """
    where = str(path) if where is None else where
    file = Path(path)
    if not file.is_file():
        raise error(f"{where}: no such file")
    try:
        data = json.loads(file.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except UnicodeDecodeError as problem:
        raise error(f"{where}: not UTF-8 text (byte {problem.start}); save it as UTF-8 JSON") from None
    except RecordError as problem:
        raise error(f"{where}: {problem}; give each key once") from None
    except ValueError as problem:
        raise error(f"{where}: not valid JSON ({problem})") from None
    except OSError as problem:
        raise error(f"{where}: cannot be read ({problem.strerror or problem})") from None
    if not isinstance(data, dict):
        raise error(f"{where}: expected a JSON object {{...}}, got {type(data).__name__ if data is not None else 'null'}")
    return data


def read_record(path: Union[str, Path]) -> dict:
    """The settings record a unifocal trainer wrote (``unifocal_loss.json``): a JSON object with ``loss``
    (text) and ``params`` (an object). Raises RecordError naming the file."""
    record = read_json_object(path)
    if not isinstance(record.get("loss"), str) or not isinstance(record.get("params"), dict):
        raise RecordError(f"{path}: not a unifocal loss record (expected 'loss' and 'params')")
    return record


def _value(value) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_value(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "default" if value is None else str(value)


def describe_record(record: Mapping) -> str:
    """``"asymmetric_unified_focal: weight 0.5, delta 0.6, gamma 0.3, rare_classes default; ds nnunet"``;
    an ``auto`` gamma is marked as such."""
    params = []
    for key, value in record["params"].items():
        text = f"{key} {_value(value)}"
        if key == "gamma" and record.get("gamma_proposal") is not None:
            text = f"gamma auto {_value(value)}"
        params.append(text)
    return f"{record['loss']}: {', '.join(params)}; ds {_value(record.get('ds_scheme', 'nnunet'))}"


def read_run_settings(trainer_folder: Union[str, Path], folds: Optional[Sequence[str]] = None) -> Optional[str]:
    """The loss settings recorded in ``<trainer_folder>/fold_*/unifocal_loss.json`` (the given folds only).

    Returns None when no fold has a record (a trainer that is not a unifocal one); one line when every
    fold recorded the same settings, else ``fold_0: ...; fold_1: ...``. A record that cannot be read is
    reported in the line (this is for display; nothing else depends on it).
    """
    folder = Path(trainer_folder)
    wanted = None if folds is None else {f"fold_{f}" for f in folds}
    texts: dict[str, str] = {}
    for record_file in sorted(folder.glob(f"fold_*/{RECORD_FILE}")):
        fold = record_file.parent.name
        if wanted is not None and fold not in wanted:
            continue
        try:
            texts[fold] = describe_record(read_record(record_file))
        except RecordError as error:
            texts[fold] = f"unreadable {RECORD_FILE} ({str(error).removeprefix(f'{record_file}: ')})"
    if not texts:
        return None
    if len(set(texts.values())) == 1:
        return next(iter(texts.values()))
    return "; ".join(f"{fold}: {text}" for fold, text in texts.items())


def layout_with_settings(fig, settings: Mapping[str, str]) -> None:
    """``fig.tight_layout()``, leaving room for a caption ``method: settings`` (one line per method) along
    the bottom edge of a matplotlib figure; no caption when no method has settings."""
    if not settings:
        fig.tight_layout()
        return
    caption = "\n".join(f"{method}: {text}" for method, text in settings.items())
    line_height = 0.17  # inches, for 7 pt text
    caption_height = line_height * len(settings) + 0.1
    fig.set_figheight(fig.get_figheight() + caption_height)
    fig.text(0.01, 0.01, caption, fontsize=7, va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, caption_height / fig.get_figheight(), 1, 1))
