"""``unifocal nnunet-path``: print the folder to put in nnU-Net's ``nnUNet_extTrainer`` variable.

    export nnUNet_extTrainer=$(unifocal nnunet-path)

makes ``nnUNetv2_train ... -tr UnifiedFocalTrainer`` (and ``nnUNetv2_predict``, multi-GPU runs, which
inherit the environment) find the unifocal trainers. ``--export`` prints a complete ``export`` line
that keeps folders already listed in the variable; ``--check`` also imports the trainers (needs
``nnunetv2>=2.8``), lists them and checks the ``UNIFOCAL_*`` settings of the environment (a bad value or a
variable no trainer reads is one line naming it, exit status 2).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version

NAME = "nnunet-path"
HELP = "print the nnUNet_extTrainer folder that makes the unifocal nnU-Net trainers visible"

MIN_NNUNET = (2, 8)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export", action="store_true",
                        help="print 'export nnUNet_extTrainer=...' (keeping folders already in the variable)")
    parser.add_argument("--check", action="store_true",
                        help="check that nnunetv2 >= 2.8 is installed and the trainers import; list them; check the "
                             "UNIFOCAL_* settings of the environment")


def _version_tuple(text: str) -> tuple:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def run(args: argparse.Namespace) -> int:
    from nnunet_trainers import TRAINER_NAMES, ext_trainer_path

    path = str(ext_trainer_path())
    if args.check:
        try:
            installed = version("nnunetv2")
        except PackageNotFoundError:
            print("nnunetv2 is not installed: pip install 'unifocal[nnunet]'", file=sys.stderr)
            return 1
        if _version_tuple(installed) < MIN_NNUNET:
            print(f"nnunetv2 {installed} is too old: the nnUNet_extTrainer hook needs nnunetv2 >= 2.8",
                  file=sys.stderr)
            return 1
        import nnunet_trainers.trainers as trainers

        missing = [name for name in TRAINER_NAMES if not hasattr(trainers, name)]
        if missing:
            print(f"trainers missing: {missing}", file=sys.stderr)
            return 1
        current = os.environ.get("nnUNet_extTrainer", "")
        active = path in current.split(os.pathsep)
        print(f"nnunetv2 {installed}; trainers: {', '.join(TRAINER_NAMES)}", file=sys.stderr)
        print(f"nnUNet_extTrainer {'includes' if active else 'does NOT include'} {path}", file=sys.stderr)
        from nnunet_trainers.loss_builder import check_environment

        settings = check_environment()  # a bad or misspelt UNIFOCAL_* variable: one line, status 2
        given = [f"{key}={value} ({settings.source(key)})" for key, value in settings.given().items()]
        print(f"loss settings from the environment: {', '.join(given) or 'none, the defaults'}", file=sys.stderr)
    if args.export:
        folders = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p and p != path]
        print(f"export nnUNet_extTrainer={shlex.quote(os.pathsep.join([path] + folders))}")
    else:
        print(path)
    return 0
