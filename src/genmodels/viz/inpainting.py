"""Inpainting as ``genmodels inpaint`` and the web app draw it: masks, one call, one sheet.

A mask marks the pixels to fill. Named masks hide a region of every image (``center``: the middle square
of half the side; ``left``, ``right``, ``top``, ``bottom``: that half; ``random``: each pixel with
probability 1/2, drawn from the seed); a mask file is a black-and-white image of the model's size,
white where pixels are to be filled (the convention of diffusers' and RePaint's masks). The known pixels
of every result are the given image's, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from genmodels.errors import ConfigError
from genmodels.models.base import Inpaints, check_sample_options
from genmodels.viz.completion import GREY, check_images, image_labels

MASK_BYTES = 16 << 20  # a mask file larger than this is refused (a 4096x4096 PNG is far smaller)
MASKS = ("center", "left", "right", "top", "bottom", "random")
METHODS = (
    "diffusion models (RePaint), vae, autoencoder and gan runs (a latent fit), and pixelcnn / pixelsnail "
    "runs (masks hiding the bottom rows)"
)


class Inpaintings(NamedTuple):
    """What ``inpaint_images`` returns, on the CPU, float32 in [0, 1].

    Attributes:
        images: (N, C, H, W) the given images.
        keep: (N, 1, H, W) 1 where a pixel was known.
        fills: (N, samples, C, H, W) the inpainted images; equal to ``images`` where ``keep`` is 1.
    """

    images: torch.Tensor
    keep: torch.Tensor
    fills: torch.Tensor


def named_mask(name: str, n: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The keep-mask (n, 1, H, W) of a named mask: 0 on the pixels to fill, 1 elsewhere."""
    keep = torch.ones(n, 1, height, width)
    h2, w2 = height // 2, width // 2
    if name == "center":
        keep[:, :, height // 4 : height // 4 + h2, width // 4 : width // 4 + w2] = 0
    elif name == "left":
        keep[:, :, :, :w2] = 0
    elif name == "right":
        keep[:, :, :, w2:] = 0
    elif name == "top":
        keep[:, :, :h2] = 0
    elif name == "bottom":
        keep[:, :, h2:] = 0
    elif name == "random":
        keep = (torch.rand(n, 1, height, width, generator=generator) >= 0.5).float()
    else:
        raise ConfigError(f"unknown mask '{name}'; use one of {', '.join(MASKS)} or a black-and-white PNG file")
    return keep


def read_mask(path: str | Path, height: int, width: int) -> torch.Tensor:
    """The keep-mask (1, 1, H, W) of a mask image: white (255) = fill, black (0) = keep.

    Raises:
        ConfigError: not a readable image, not H x W, or grey levels other than black and white.
    """
    from PIL import Image, UnidentifiedImageError

    from genmodels.data.folder import pixel_limit
    from genmodels.safeio import check_regular

    p = Path(path)
    try:
        check_regular(p, None, limit=MASK_BYTES, what="mask")
    except FileNotFoundError:
        raise ConfigError(f"the mask {p} does not exist; pass one of {', '.join(MASKS)} or a PNG file") from None
    try:
        with pixel_limit():
            img = Image.open(p)
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ConfigError(f"cannot read the mask {p} as an image ({e}); pass a black-and-white PNG") from None
    if img.size != (width, height):
        raise ConfigError(
            f"the mask {p} is {img.size[0]}x{img.size[1]}, the model's images are {width}x{height}; "
            f"draw a {width}x{height} black-and-white PNG (white = fill)"
        )
    arr = np.asarray(img.convert("L"))
    levels = np.unique(arr)
    if not set(levels.tolist()) <= {0, 255}:
        raise ConfigError(
            f"the mask {p} has grey levels other than black and white ({len(levels)} levels); "
            "save it with only black (keep) and white (fill) pixels"
        )
    return torch.from_numpy(arr == 0).float()[None, None]


@torch.no_grad()
def inpaint_images(
    model: Any,
    x: torch.Tensor,
    keep: torch.Tensor,
    *,
    samples: int,
    generator: torch.Generator | None,
    labels: torch.Tensor | None = None,
    **options: Any,
) -> Inpaintings:
    """Fill the unknown pixels of each of ``x``'s images ``samples`` times with the model's method.

    Args:
        model: an ``Inpaints`` model.
        x: (N, C, H, W) in [0, 1] with the model's image shape.
        keep: (N or 1, 1, H, W), 1 = known, 0 = to fill.
        samples: inpaintings per image, >= 1.
        generator: the only source of randomness, on the model's device.
        labels: (N,) classes of a conditional model (needed), None for an unconditional one.
        options: the model's ``inpaint_options`` (strings or values); None values are dropped.

    Raises:
        ConfigError: a model without the method, a mask, shape, label or option that does not fit.
    """
    name = type(model).__name__
    if not isinstance(model, Inpaints):
        raise ConfigError(f"{name} cannot inpaint; inpainting works with {METHODS}")
    shape = check_images(model, x, "inpaint")
    if keep.dim() != 4 or keep.shape[1] != 1 or tuple(keep.shape[2:]) != shape[1:] or len(keep) not in (1, len(x)):
        raise ConfigError(f"the mask must be {shape[1]}x{shape[2]} like the images, got {tuple(keep.shape)}")
    if not bool(((keep == 0) | (keep == 1)).all()):
        raise ConfigError("the mask must be black and white (0 = fill, 1 = keep)")
    if samples < 1:
        raise ConfigError(f"the number of inpaintings per image must be >= 1, got {samples}")
    labels = image_labels(model, name, labels, len(x), "inpaint")
    options = check_sample_options(model, name, options, model.inpaint_options, "inpainting")
    device = next(model.parameters()).device
    x = x.float().cpu()
    keep = keep.float().cpu().expand(len(x), -1, -1, -1)
    xs = x.repeat_interleave(samples, 0)
    ks = keep.repeat_interleave(samples, 0)
    ys = labels.to(device).repeat_interleave(samples, 0) if labels is not None else None
    out = model.inpaint(xs.to(device), ks.to(device), generator=generator, labels=ys, **options).float().cpu()
    out = torch.where(ks.bool(), xs, out.clamp(0.0, 1.0))  # the known pixels exactly as given
    return Inpaintings(x, keep.clone(), out.view(len(x), samples, *shape))


def inpaint_sheet(result: Inpaintings) -> torch.Tensor:
    """The images of an inpainting sheet, one row per image: the known pixels (the rest grey), the
    inpaintings, then the given image. (N * (samples + 2), C, H, W); tile with ``nrow=samples + 2``."""
    shown = torch.where(result.keep.bool(), result.images, torch.full_like(result.images, GREY))
    return torch.cat([shown[:, None], result.fills, result.images[:, None]], 1).flatten(0, 1)
