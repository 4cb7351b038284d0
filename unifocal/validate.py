"""The one place values are checked: settings, loss hyperparameters and command line options.

A value is of the right kind and range as given, never coerced: a bool is not a number or a label, a string
such as ``"false"`` (what a command-line override passes) is not a bool, and a string is parsed only by the
command line adapter (:func:`option_number`). Every error is a ``ValueError`` naming the setting, so the
command line reports it as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Callable, Optional, Union

import numpy as np

__all__ = ["check_bool", "check_number", "check_numbers", "option_number"]


def check_bool(name: str, value, fix: str = "Pass a boolean, not a string or a number") -> bool:
    """``value`` if it is a real bool (numpy's included); a string or a number is an error naming ``name``
    and ``fix``, never a truthy setting."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a boolean (True or False); got {value!r} ({type(value).__name__}). {fix}")
    return bool(value)


def check_number(name: str, value, low: float = -math.inf, high: float = math.inf, *, low_open: bool = False,
                 high_open: bool = False, integer: bool = False, why: str = "", entry: Optional[int] = None):
    """A finite real number (not a bool or a string) in ``[low, high]`` (open at an end with ``low_open`` /
    ``high_open``), as a float (an int with ``integer``, which refuses a float); ``why`` explains the bound,
    ``entry`` is the value's position in a list."""
    got = f"; got {value!r}" + ("" if entry is None else f" (entry {entry})")
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be {'an integer' if integer else 'a number'}{why}{got} ({type(value).__name__})")
    value = int(value) if integer else float(value)
    if not (math.isfinite(value) and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)):
        if high == math.inf and low_open:
            raise ValueError(f"{name} must be > {low:g} and finite{why}{got}")
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
        raise ValueError(f"{name} must lie in {interval}{why}{got}")
    return value


def check_numbers(name: str, value, low: float = -math.inf, high: float = math.inf, *, scalar: bool = True,
                  **bounds) -> Union[float, tuple[float, ...]]:
    """One number (when ``scalar``) or a non-empty list/tuple of numbers (returned as a tuple), each as
    :func:`check_number` with the same ``bounds``."""
    if scalar and not isinstance(value, (list, tuple, np.ndarray)):
        return check_number(name, value, low, high, **bounds)
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        raise ValueError(f"{name} must be {'a number or ' if scalar else ''}a non-empty list of numbers; got {value!r}")
    return tuple(check_number(name, v, low, high, entry=i, **bounds) for i, v in enumerate(value))


def option_number(low: float = -math.inf, *, low_open: bool = False, integer: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` that parses an option's text and checks it with :func:`check_number`."""

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None
        try:
            return check_number("the value", value, low, low_open=low_open, integer=integer)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: need a finite {'integer' if integer else 'number'} {'>' if low_open else '>='} "
                f"{low:g}") from None

    return parse
