"""``python -m benchmarks``: loss and nnU-Net training-iteration benchmarks; ``python -m benchmarks metrics``:
the clinical metrics of ``unifocal compare``; both write benchmarks/results/."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from . import losses, report

RESULTS = Path(__file__).resolve().parent / "results"


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats (a smoke run of ~1 minute)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="dtype of the logits (nnU-Net's CUDA training hands the loss float16 under autocast)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default 7, quick 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--shapes", nargs="*", default=None, metavar="B,C,X,Y[,Z]", help="override the shapes")
    parser.add_argument("--no-deep-supervision", action="store_true", help="skip the deep-supervision cases")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd AsymmetricUnifiedFocalLoss")
    parser.add_argument("--autograd", action="store_true",
                        help="also time the two Unified Focal losses without their hand-written passes (autograd alone)")
    parser.add_argument("--losses", nargs="*", default=None, help="only these candidate names (reference kept)")
    parser.add_argument("--mode", choices=("labels", "regions", "both"), default="both",
                        help="label maps (nnU-Net's DC_and_CE_loss as reference), regions (DC_and_BCE_loss), or both")
    parser.add_argument("--no-family", action="store_true",
                        help="skip the family rows (every member against its nnU-Net/MONAI counterpart)")
    parser.add_argument("--no-training", action="store_true", help="skip the nnU-Net training-iteration benchmark")
    parser.add_argument("--training-repeats", type=int, default=None, help="timed train_steps per trainer")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["metrics"]:  # python -m benchmarks metrics: unifocal compare's evaluation (see metrics.py)
        from . import metrics

        return metrics.main(argv[1:])
    args = _parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    given = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else None
    modes = {"labels": [False], "regions": [True], "both": [False, True]}[args.mode]
    repeats = args.repeats or (3 if args.quick else 7)
    info = report.machine_info(device)
    print("machine:", info, flush=True)
    start = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    cases, family_cases = [], []
    for regions in modes:
        shapes = given or {(False, False): losses.SHAPES, (False, True): losses.QUICK_SHAPES,
                           (True, False): losses.REGION_SHAPES, (True, True): losses.QUICK_REGION_SHAPES}[
            (regions, args.quick)]
        cases += losses.make_cases(shapes, deep_supervision=not args.no_deep_supervision, regions=regions)
        family_shapes = given or (losses.QUICK_FAMILY_SHAPES if args.quick else losses.FAMILY_SHAPES)
        family_cases += losses.make_cases(family_shapes, deep_supervision=False, regions=regions)
    options = dict(repeats=repeats, device=device, dtype=dtype, memory=not args.no_memory, names=args.losses, log=log)
    loss_rows = losses.run_cases(cases, compile_unifocal=args.compile, autograd=args.autograd, **options)
    family_rows = [] if args.no_family else losses.run_cases(family_cases, family=True, **options)
    training_rows = []
    if not args.no_training:
        from . import training

        training_rows = training.run(quick=args.quick, device=device, repeats=args.training_repeats,
                                     log=lambda s: print(s, flush=True))
    elapsed = time.perf_counter() - start
    options = dict(vars(args), repeats=repeats, elapsed_s=round(elapsed, 1), out=str(args.out))
    md, js = report.write_results(args.out, info, loss_rows, training_rows, options, family_rows)
    print()
    print(report.loss_table(loss_rows))
    if family_rows:
        print()
        print(report.loss_table(family_rows))
    if training_rows:
        print()
        print(report.training_table(training_rows))
    print(f"\nwrote {md} and {js} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
