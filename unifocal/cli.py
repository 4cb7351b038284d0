"""The ``unifocal`` command line: one subcommand per module in :mod:`unifocal.commands`.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` and
imports its heavy dependencies inside ``run``, so that ``unifocal --help`` stays fast.

Errors are one line on stderr, never a traceback (``--debug`` shows it): usage errors (an unknown option, a
value of the wrong type: the parser's message and where the usage is, without argparse's usage block), a
command's ``SystemExit("message")`` and bad input (:class:`unifocal.io.InputError` and the other
``ValueError`` of the input checks, or an ``OSError`` naming a file) exit with status 2; anything else is
reported as an internal error with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from . import __version__

COMMAND_MODULES = ("demo", "compare", "gamma", "sweep", "nnunet_path", "datalist", "bundle")

USAGE_ERROR = 2
INTERNAL_ERROR = 1
INTERRUPTED = 130


def _commands():
    for name in COMMAND_MODULES:
        try:
            yield importlib.import_module(f"unifocal.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"unifocal.commands.{name}":
                raise


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (subcommands' parsers are of the same class)."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: {' '.join(message.split())} (usage: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="unifocal",
        description="Unified Focal loss family for class-imbalanced medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"unifocal {__version__}")
    debug_help = "show the full traceback of an error instead of one line"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _commands():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        # Accepted after the command name too; SUPPRESS keeps a --debug given before it.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
        sub.set_defaults(run=module.run, parser=sub)
    return parser


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, which names the command
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not hasattr(args, "run"):
        parser.print_help()
        return USAGE_ERROR
    prefix = f"unifocal {args.command}"
    try:
        return int(args.run(args) or 0)
    except SystemExit as stop:
        if not isinstance(stop.code, str):
            raise
        # A command's one-line error: print it and exit with status 2; str(stop) stays the message.
        print(stop.code, file=sys.stderr)
        stop.code = USAGE_ERROR
        raise
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"{prefix}: {_one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as error:
        if args.debug:
            raise
        print(f"{prefix}: internal error ({type(error).__name__}: {_one_line(error)}); rerun with --debug for "
              "the traceback", file=sys.stderr)
        return INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
