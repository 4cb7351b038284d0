"""One number validator for settings and command line options: a value is a number of the right kind and
range, never coerced (a bool is not a number, a string is parsed only by the command line adapters)."""

from __future__ import annotations

import argparse
import math
from typing import Callable

import numpy as np

__all__ = ["check_number", "option_number"]


def check_number(name: str, value, minimum: float = -math.inf, strict: bool = False, integer: bool = False):
    """``value`` as a float (an int with ``integer``) when it is a finite number ``>= minimum`` (``>`` with
    ``strict``).

    Raises:
        TypeError: not a number (bools and strings included), or not an integer where one is needed.
        ValueError: not finite or out of range; the message names ``name``.
    """
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}; got {value!r}")
    value = int(value) if integer else float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {minimum:g}; got {value!r}")
    return value


def option_number(minimum: float = -math.inf, strict: bool = False, integer: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` that parses an option's text and checks it with :func:`check_number`."""

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        try:
            return check_number("the value", value, minimum, strict, integer)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: need a finite {'integer' if integer else 'number'} {'>' if strict else '>='} "
                f"{minimum:g}") from None

    return parse
