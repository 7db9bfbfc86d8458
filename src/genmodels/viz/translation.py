"""Translation sheets: inputs, their translations and (where known) the targets, one row each."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

MAX_TRANSLATE = 100_000  # images per translate call: more is a typo


def split_pairs(pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) halves of stacked pairs (N, 2C, H, W)."""
    c = pairs.shape[1] // 2
    return pairs[:, :c], pairs[:, c:]


@torch.no_grad()
def translate_images(model: Any, x: torch.Tensor, direction: str = "forward", batch: int = 256) -> torch.Tensor:
    """``model.translate`` over x (N, C, H, W) in [0, 1] in batches, in eval mode; (N, C, H, W) on the CPU."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = [model.translate(x[i : i + batch].to(device), direction).float().cpu() for i in range(0, len(x), batch)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else x[:0].clone()


def translation_sheet(
    model: Any, pairs: torch.Tensor, path: str | os.PathLike, directions: tuple[str, ...] = ("forward",)
) -> np.ndarray:
    """A sheet of k examples (pairs (k, 2C, H, W) in [0, 1]), one column each: per direction three rows,
    the input, its translation and the other side's image (the target, for paired data)."""
    from genmodels.viz.grid import save_grid

    a, b = split_pairs(pairs.float())
    rows = []
    for d in directions:
        src, other = (a, b) if d == "forward" else (b, a)
        rows += [src, translate_images(model, src, d), other]
    return save_grid(torch.cat(rows), path, nrow=len(pairs))
