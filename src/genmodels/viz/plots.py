"""Matplotlib figures: loss curves and latent-space scatter plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_losses(records: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> list[str]:
    """Plot every logged loss-like metric against step into a PNG; returns the keys plotted."""
    skip = {"step", "time", "lr", "images_per_s", "lr_d", "epoch"}
    keys = sorted({k for r in records for k, v in r.items() if k not in skip and isinstance(v, int | float)})
    plt = _pyplot()
    n = max(1, len(keys))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        if pts:
            s, v = zip(*pts, strict=True)
            ax.plot(s, v, lw=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return keys


def plot_latent_scatter(
    z: np.ndarray, labels: np.ndarray | None, classes: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """Scatter 2-D codes of a test set, coloured by class (the classic autoencoder latent map)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=3, alpha=0.6)
    else:
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for k in range(max(len(classes), int(labels.max()) + 1)):
            sel = labels == k
            name = classes[k] if k < len(classes) else str(k)
            ax.scatter(z[sel, 0], z[sel, 1], s=3, alpha=0.6, color=cmap(k % cmap.N), label=name)
        ax.legend(markerscale=4, fontsize=7, loc="best")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(title or "test set in latent space")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
