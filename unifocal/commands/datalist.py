"""``unifocal datalist``: write the decathlon data lists (k-fold cross-validation) that the MONAI bundles read,
from an nnU-Net raw dataset or a KiTS / BraTS download as it comes (:mod:`unifocal.datalist`)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ..datalist import LAYOUTS

NAME = "datalist"
HELP = ("write decathlon data lists with k-fold cross-validation splits for the MONAI bundles, from an nnU-Net "
        "raw dataset or a KiTS19/21/23, BraTS 2021 or BraTS 2023+ download")

EPILOG = """\
Writes datalist_fold0.json ... datalist_fold{K-1}.json and datalist.json (= fold 0, the file the bundles read
by default) into OUTPUT_DIR (default: DATASET). Each has "training" (the other folds), "validation" (the
fold) and "test" (nnU-Net's imagesTs, or the download's cases without labels), with paths relative to
DATASET, which is the bundles' --dataset_dir. Existing files are not replaced without --overwrite, and a
fold file of an earlier run with more folds is never left beside the new ones: it stops the run.

layouts (detected):
  nnunet      dataset.json, imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, imagesTs/
  kits        case_00000/imaging.nii.gz + segmentation.nii.gz (also under data/ or dataset/)
  brats2021   BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz
  brats2023   BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz (GLI, MEN, MET, PED, SSA)

examples:
  unifocal datalist /data/kits23                       # the KiTS23 repository (dataset/case_*/...)
  unifocal datalist /data/RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021 --folds 5
  unifocal datalist /data/ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData
  unifocal datalist $nnUNet_raw/Dataset220_KiTS2023 -o lists --folds 5
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("dataset", help="dataset folder (nnU-Net raw dataset, KiTS or BraTS download)")
    parser.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto",
                        help="folder layout (default: detected)")
    parser.add_argument("--folds", type=int, default=5, help="number of cross-validation folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the case shuffle (default: %(default)s)")
    parser.add_argument("-o", "--output-dir", help="folder for the JSON files (default: DATASET)")
    parser.add_argument("--overwrite", action="store_true", help="replace data lists that already exist")


def _targets(output: Path, lists: list, overwrite: bool) -> dict:
    """The files to write, after checking that none is replaced without ``overwrite`` and that no fold file of
    a run with more folds would stay beside them."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output-dir {output} is a file")
    targets = {output / f"datalist_fold{k}.json": content for k, content in enumerate(lists)}
    targets[output / "datalist.json"] = lists[0]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise ValueError(f"{existing[0]} exists (and {len(existing) - 1} more data lists); pass --overwrite to "
                         "replace them")
    stale = sorted(p.name for p in output.glob("datalist_fold*.json") if p not in targets)
    if stale:
        raise ValueError(f"{output / stale[0]} is a fold of an earlier run with more folds ({len(stale)} such "
                         f"files): remove them or write to another --output-dir")
    return targets


def run(args: argparse.Namespace) -> int:
    from ..datalist import find_cases, fold_lists

    root = Path(args.dataset)
    output = Path(args.output_dir) if args.output_dir else root
    cases = find_cases(root, args.layout)
    lists = fold_lists(cases, args.folds, args.seed)
    targets = _targets(output, lists, args.overwrite)
    output.mkdir(parents=True, exist_ok=True)
    for path, content in targets.items():
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")

    sizes = ", ".join(str(len(content["validation"])) for content in lists)
    print(f"{cases.layout} layout: {len(cases.labelled)} labelled cases in {len(lists)} folds ({sizes}), "
          f"{len(cases.test)} test images")
    print(f"wrote {len(targets)} data lists to {output}")
    dataset_dir = shlex.quote(str(root.resolve()))
    fold = shlex.quote(str((output / "datalist_fold1.json").resolve()))
    print(f"train fold 0:  python -m monai.bundle run ... --dataset_dir {dataset_dir}"
          + ("" if output.resolve() == root.resolve() else
             f" --datalist_file {shlex.quote(str((output / 'datalist.json').resolve()))}"))
    print(f"another fold:  ... --dataset_dir {dataset_dir} --datalist_file {fold}")
    return 0
