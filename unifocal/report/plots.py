"""Box plots of the per-case values."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..run_settings import layout_with_settings
from .evaluation import Evaluation

__all__ = ["box_plots"]


def box_plots(evaluation: Evaluation, path: Union[str, Path], title: Optional[str] = None) -> Path:
    """Box plots of the per-case values: one panel per metric (rows) and class (columns), one box per
    method, the cases as dots. Written with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    rows = evaluation.rows()
    width = max(5.0, 2.2 + 1.1 * len(evaluation.methods) * len(rows))
    metrics = evaluation.metrics
    fig, axes = plt.subplots(len(metrics), len(rows), figsize=(width, 2.6 * len(metrics)), squeeze=False,
                             sharey="row")
    rng = np.random.default_rng(0)
    for j, row in enumerate(rows):
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            data = []
            for method in evaluation.methods:
                column = evaluation.column(method, metric, row)
                data.append(column[~np.isnan(column)])
            positions = np.arange(1, len(data) + 1)
            ax.boxplot([d if d.size else [math.nan] for d in data], positions=positions, widths=0.6,
                       showfliers=False)
            for x, d in zip(positions, data):
                ax.plot(x + rng.uniform(-0.15, 0.15, d.size), d, ".", ms=3, alpha=0.5, color="tab:blue")
            ax.set_xticks(positions)
            ax.set_xticklabels(evaluation.methods if i == len(metrics) - 1 else [""] * len(data),
                               rotation=30, ha="right", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
            if i == 0:
                ax.set_title(row, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{metric} ({_axis_unit(evaluation)})" if metric == "HD95" else metric)
    if title:
        fig.suptitle(textwrap.fill(title, width=int(width * 11)), fontsize=10)
    layout_with_settings(fig, {m: evaluation.settings[m] for m in evaluation.methods if m in evaluation.settings})
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _axis_unit(evaluation: Evaluation) -> str:
    return "voxels" if all(spacing is None for spacing in evaluation.spacing.values()) else "mm"
