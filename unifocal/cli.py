"""The ``unifocal`` command line: one subcommand per module in :mod:`unifocal.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` and
imports its heavy dependencies inside ``run``, so that ``unifocal --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from . import __version__

COMMAND_MODULES = ("demo", "compare", "gamma", "sweep", "nnunet_path", "datalist")


def _commands():
    for name in COMMAND_MODULES:
        try:
            yield importlib.import_module(f"unifocal.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"unifocal.commands.{name}":
                raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unifocal",
        description="Unified Focal loss family for class-imbalanced medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"unifocal {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
