"""Machine description and result tables (markdown + JSON) for the benchmarks."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import socket
from pathlib import Path
from typing import Optional, Sequence

import torch

__all__ = ["machine_info", "loss_table", "training_table", "write_results"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """Where and under which load the benchmark ran (load averages are sampled again at the end)."""
    info = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # The vector kernels torch dispatches to (ATEN_CPU_CAPABILITY): with torch 2.14's AVX512 kernels
        # log1p and log_sigmoid cost 6x what they cost with its AVX2 ones, so ratios differ between the two.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # glibc allocator settings (MALLOC_MMAP_THRESHOLD_ ...): they decide which tensors are fresh mmaps.
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "device": str(device),
        "loadavg_start": list(os.getloadavg()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    for package in ("nnunetv2", "monai"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = None
    return info


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def loss_table(rows: Sequence[dict]) -> str:
    """Markdown table of :func:`benchmarks.losses.run_cases` rows, grouped by case."""
    gbps = any("gbps" in r for r in rows)
    memory = any("peak_mib" in r for r in rows)
    peers = any("peer" in r for r in rows)
    header = ["case", "loss", "median ms", "IQR ms", "time ratio", "CPU ms", "CPU-time ratio", "best-CPU ratio"]
    if memory:
        header += ["peak extra MiB", "memory ratio"]
    if peers:
        header += ["peer", "peer CPU-time ratio"] + (["peer memory ratio"] if memory else [])
    if gbps:
        header += ["GB/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["case"], r["loss"], _fmt(r["median_ms"], 1), _fmt(r["q3_ms"] - r["q1_ms"], 1), _fmt(r["ratio"]),
                 _fmt(r["cpu_ms"], 1), _fmt(r["cpu_ratio"]), _fmt(r["best_cpu_ratio"])]
        if memory:
            cells += [_fmt(r.get("peak_mib"), 1), _fmt(r.get("mem_ratio"))]
        if peers:
            cells += [r.get("peer", ""), _fmt(r.get("peer_cpu_ratio"))] + ([_fmt(r.get("peer_mem_ratio"))] if memory else [])
        if gbps:
            cells += [_fmt(r.get("gbps"), 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_table(rows: Sequence[dict]) -> str:
    header = ["configuration", "trainer", "median ms", "IQR ms", "time ratio", "CPU-time ratio"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["configuration"], r["trainer"], _fmt(r["median_ms"], 1), _fmt(r["q3_ms"] - r["q1_ms"], 1),
                 _fmt(r["ratio"], 3), _fmt(r.get("cpu_ratio"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(directory: Path, info: dict, loss_rows: Sequence[dict], training_rows: Sequence[dict],
                  options: dict, family_rows: Sequence[dict] = ()) -> tuple[Path, Path]:
    """Write ``<timestamp>-<host>.md`` and ``.json`` under ``directory``; returns both paths."""
    info = dict(info, loadavg_end=list(os.getloadavg()))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{stamp}-{info['host']}"
    md = [
        f"# Loss benchmark, {stamp}",
        "",
        "Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()),
        "",
        "Options: " + ", ".join(f"{k}={v}" for k, v in options.items()),
        "",
        "Time: median of interleaved forward+backward calls; ratio = median over rounds of the per-round ratio "
        "to the case's reference, the loss nnUNetTrainer builds for it (DC_and_CE_loss for label maps, "
        "DC_and_BCE_loss for regions; wall clock, and process CPU time); peer ratios likewise to the loss's "
        "nnU-Net or MONAI counterpart; best-CPU ratio = ratio of the "
        "smallest CPU times. Peak extra memory: bytes allocated above the inputs during one call "
        "(CPU: torch.profiler memory records; CUDA: max_memory_allocated). See benchmarks/losses.py.",
        "",
        loss_table(loss_rows) if loss_rows else "(no loss cases run)",
        "",
    ]
    if family_rows:
        md += ["## Every member of the family against its counterpart", "", loss_table(family_rows), ""]
    if training_rows:
        md += ["## nnU-Net training iteration (train_step)", "", training_table(training_rows), ""]
    md_path, json_path = stem.with_suffix(".md"), stem.with_suffix(".json")
    md_path.write_text("\n".join(md))
    json_path.write_text(json.dumps({"machine": info, "options": options, "losses": list(loss_rows),
                                     "family": list(family_rows), "training": list(training_rows)}, indent=1,
                                    default=str))
    return md_path, json_path
