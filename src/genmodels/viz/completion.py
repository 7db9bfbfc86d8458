"""Image completion as ``genmodels complete`` and the web app draw it: one implementation for both.

An autoregressive model (a ``Completable``) keeps the top ``rows`` rows of each image and samples the
rest. Each image is first turned into the data the model sees (``observe``: a binarised model
binarises it) once, so that all its completions keep the very same rows; the sheet then shows, per
image, the kept rows (the rest grey), the completions, and the observed image.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from genmodels.errors import ConfigError
from genmodels.models.base import Completable, check_labels, check_sample_options, is_conditional

GREY = 0.5  # the rows the model fills in, as the sheet shows them in the kept image


class Completions(NamedTuple):
    """What ``complete_images`` returns, on the CPU, float32 in [0, 1].

    Attributes:
        observed: (N, C, H, W) the images as the model sees them (after ``observe``).
        completions: (N, samples, C, H, W) each image's completions; rows ``:rows`` equal ``observed``.
    """

    observed: torch.Tensor
    completions: torch.Tensor


def check_images(model: Any, x: torch.Tensor, verb: str) -> tuple[int, ...]:
    """The model's image shape (C, H, W), after checking that x is (N, C, H, W) of it."""
    shape = tuple(int(s) for s in model.config.image_shape)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        got = "x".join(map(str, x.shape[1:]))
        raise ConfigError(f"images to {verb} must be {'x'.join(map(str, shape))} like the training data, got {got}")
    return shape


def image_labels(model: Any, name: str, labels: torch.Tensor | None, n: int, verb: str) -> torch.Tensor | None:
    """The labels of n images for a conditional model (one valid class each: needed), None otherwise."""
    if not is_conditional(model):
        return None
    if labels is None:
        raise ConfigError(f"{name} is class-conditional; pass the class of each image to {verb}")
    if labels.shape != (n,):
        raise ConfigError(f"labels must be one class per image ({n}), got shape {tuple(labels.shape)}")
    check_labels(model, labels)
    return labels


@torch.no_grad()
def complete_images(
    model: Any,
    x: torch.Tensor,
    rows: int,
    *,
    samples: int,
    generator: torch.Generator | None,
    labels: torch.Tensor | None = None,
    **options: Any,
) -> Completions:
    """Complete each of ``x``'s images from its top ``rows`` rows, ``samples`` times.

    Args:
        model: a ``Completable`` model (an autoregressive one).
        x: (N, C, H, W) in [0, 1] with the model's image shape, on any device.
        rows: rows to keep, 0..H (0 samples from scratch, H gives back the observed images).
        samples: completions per image, >= 1.
        generator: the only source of randomness, on the model's device.
        labels: (N,) classes of a conditional model's images (needed), None for an unconditional one.
        options: the model's sampling options (``model.sample_options``: a PixelCNN's ``temperature``
            and ``sampler``), as values or strings; None values are dropped.

    Returns:
        ``Completions(observed, completions)``; draw them with ``completion_sheet``.

    Raises:
        ConfigError: the model cannot complete, or rows, samples, labels, shape or an option is invalid.
    """
    name = type(model).__name__
    if not isinstance(model, Completable):
        raise ConfigError(
            f"{name} cannot complete images; completion needs an autoregressive model "
            "(train one with genmodels train pixelcnn)"
        )
    shape = check_images(model, x, "complete")
    height = shape[1]
    if not 0 <= rows <= height:
        raise ConfigError(f"rows must be in 0..{height} (the image height), got {rows}")
    if samples < 1:
        raise ConfigError(f"the number of completions per image must be >= 1, got {samples}")
    labels = image_labels(model, name, labels, len(x), "complete")
    options = check_sample_options(model, name, options)
    device = next(model.parameters()).device
    observed = model.observe(x.to(device).float(), generator).float()
    ys = labels.to(device).repeat_interleave(samples, 0) if labels is not None else None
    done = model.complete(observed.repeat_interleave(samples, 0), rows, generator=generator, labels=ys, **options)
    completions = done.float().cpu().view(len(x), samples, *shape)
    return Completions(observed.cpu(), completions)


def completion_sheet(result: Completions, rows: int) -> torch.Tensor:
    """The images of a completion sheet, one row per image: the kept rows (the rest grey), its
    completions, then the observed image. (N * (samples + 2), C, H, W); tile with ``nrow=samples + 2``."""
    kept = result.observed.clone()
    kept[:, :, rows:] = GREY
    return torch.cat([kept[:, None], result.completions, result.observed[:, None]], 1).flatten(0, 1)
