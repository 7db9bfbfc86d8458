"""Image grids as PNG files."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def to_uint8(images: Any) -> np.ndarray:
    """Images in [0, 1] (torch or numpy, N x C x H x W), or uint8 already -> uint8 numpy N x C x H x W."""
    if hasattr(images, "detach"):
        # A uint8 tensor is already quantised: converting it to float first read 10 as 10.0 and gave 255.
        images = images.detach().cpu()
        images = images.numpy() if str(images.dtype) == "torch.uint8" else images.float().numpy()
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return arr
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def make_grid(images: Any, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile N x C x H x W images in [0, 1] into one H' x W' x C uint8 array, ``nrow`` images a row."""
    arr = to_uint8(images)
    n, c, h, w = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = arr[i].transpose(1, 2, 0)
    return grid


def save_grid(images: Any, path: str | os.PathLike, nrow: int | None = None, scale: int = 0) -> np.ndarray:
    """Save images as a PNG grid (written to a temporary name, then renamed); returns the grid.

    Args:
        scale: integer upscaling of the sheet (0 picks one so small images are visible).
    """
    from PIL import Image

    grid = make_grid(images, nrow)
    if scale == 0:
        h = to_uint8(images).shape[2]
        scale = max(1, 64 // max(h, 1)) if h < 32 else 1
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return grid
