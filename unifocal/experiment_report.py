"""The names ``unifocal demo`` and ``unifocal sweep`` import; the code lives in :mod:`unifocal.report`."""

from .report import *  # noqa: F401,F403
from .report import __all__  # noqa: F401
