"""``unifocal bundle``: list the MONAI bundles that come with unifocal and write one out as a bundle folder
(:mod:`unifocal.bundles`)."""

from __future__ import annotations

import argparse
import shlex

NAME = "bundle"
HELP = "list the MONAI bundles that come with unifocal, or write one into a folder ready for python -m monai.bundle"

EPILOG = """\
examples:
  unifocal bundle list
  unifocal bundle export kits_unified_focal ./kits_bundle
  unifocal bundle export kits_unified_focal ./kits_bundle --overwrite   # into a folder that holds files

export refuses a folder that holds anything unless --overwrite is given; then the bundle's files replace
those of the same name and every other file (your checkpoints, settings, predictions) stays. Nothing is
removed.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="the bundles, with their task and version")
    export = actions.add_parser("export", help="write a bundle into DEST")
    export.add_argument("name", metavar="NAME", help="bundle name (unifocal bundle list)")
    export.add_argument("dest", metavar="DEST", help="folder to write the bundle into (created if missing)")
    export.add_argument("--overwrite", action="store_true",
                        help="write into a folder that holds files, replacing the bundle's own files there")


def run(args: argparse.Namespace) -> int:
    from .. import bundles

    if args.action == "list":
        for name in bundles.names():
            meta = bundles.metadata(name)
            print(f"{name}  {meta['version']}  {meta['name']}")
        return 0
    written = bundles.export(args.name, args.dest, args.overwrite)
    print(f"wrote {len(written)} files of {args.name} to {args.dest}")
    print(f"next: cd {shlex.quote(args.dest)} and follow docs/README.md, e.g.")
    print("  python -m monai.bundle run --config_file configs/train.json --meta_file configs/metadata.json "
          "--bundle_root . --dataset_dir /path/to/data")
    return 0
