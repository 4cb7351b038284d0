"""Reading nnU-Net's training output: one summary line per epoch (losses, pseudo Dice, epoch time)."""

from __future__ import annotations

import re
from typing import Optional, Sequence

__all__ = ["EpochLogParser"]

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ")
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan")


class EpochLogParser:
    """Turns nnU-Net's training output into one summary line per epoch.

    Feed it lines; it returns a summary when it sees ``Epoch time``, e.g.
    ``epoch 3/20: train loss -0.412, val loss -0.398, pseudo Dice [0.81, 0.12], 9.4 s``.
    """

    def __init__(self, num_epochs: Optional[int] = None, class_names: Sequence[str] = ()):
        self.num_epochs = num_epochs
        self.class_names = list(class_names)
        self._reset()
        self.epochs_done = 0
        self.last_pseudo_dice: list[float] = []

    def _reset(self):
        self.epoch = None
        self.train_loss = None
        self.val_loss = None
        self.pseudo_dice = None

    def feed(self, line: str) -> Optional[str]:
        text = _TIMESTAMP.sub("", line.strip())
        if text.startswith("Epoch time:"):
            seconds = _NUMBER.findall(text)
            self.epochs_done += 1
            epoch = self.epoch if self.epoch is not None else self.epochs_done - 1
            total = f"/{self.num_epochs}" if self.num_epochs else ""
            parts = [f"epoch {epoch + 1}{total}:"]
            if self.train_loss is not None:
                parts.append(f"train loss {self.train_loss:.4f},")
            if self.val_loss is not None:
                parts.append(f"val loss {self.val_loss:.4f},")
            if self.pseudo_dice is not None:
                if len(self.class_names) == len(self.pseudo_dice):
                    dice = " ".join(f"{n} {d:.3f}" for n, d in zip(self.class_names, self.pseudo_dice))
                else:
                    dice = "[" + ", ".join(f"{d:.3f}" for d in self.pseudo_dice) + "]"
                parts.append(f"pseudo Dice {dice},")
                self.last_pseudo_dice = list(self.pseudo_dice)
            if seconds:
                parts.append(f"{float(seconds[0]):.1f} s")
            self._reset()
            return " ".join(parts).rstrip(",")
        if re.fullmatch(r"Epoch \d+", text):
            self.epoch = int(text.split()[1])
        elif text.startswith("train_loss"):
            self.train_loss = _first_number(text)
        elif text.startswith("val_loss"):
            self.val_loss = _first_number(text)
        elif text.startswith("Pseudo dice"):
            inside = text[text.find("[") + 1: text.rfind("]")]
            inside = re.sub(r"np\.float\d*\(([^()]*)\)", r"\1", inside)
            self.pseudo_dice = [float(v) for v in _NUMBER.findall(inside)]
        return None


def _first_number(text: str) -> Optional[float]:
    found = _NUMBER.findall(text.split(maxsplit=1)[1] if " " in text else "")
    return float(found[0]) if found else None


