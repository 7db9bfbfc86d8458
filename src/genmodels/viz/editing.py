"""Image editing as ``genmodels edit`` and the web app draw it.

* Diffusion models: SDEdit (``DDPM.edit``): noise each image to a level set by ``strength`` and run the
  reverse process back; a small strength stays faithful to the input, a large one is free to make it
  realistic. A class-conditional model edits towards a target class (class-guided editing: the reverse
  process is guided by the target label).
* Models with an encoder (VAE, autoencoder) or a generator to invert (GAN): latent arithmetic. The
  direction from class A to class B is the mean code of B's training images minus the mean code of A's;
  an image's edit decodes its code plus
  ``scale`` times that direction (White 2016, "Sampling generative networks", attribute vectors). A
  class-conditional VAE instead decodes the image's code (encoded with its own class) with the target
  class: the code keeps the style, the label sets the class (Kingma et al. 2014's analogies).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from genmodels.errors import ConfigError
from genmodels.models.base import Decodable, Editable, Encodable, Invertible, check_labels, is_conditional
from genmodels.viz.completion import check_images

METHODS = (
    "diffusion models (SDEdit, towards a class with a conditional one) and vae / autoencoder / gan runs "
    "(latent arithmetic between classes, with --to-class)"
)
DIRECTION_IMAGES = 500  # training images per class whose mean code makes a class direction
DIRECTION_INVERSIONS = 100  # the same for a model whose codes are fits (a GAN's inversion)


class Edits(NamedTuple):
    """What the edit functions return, on the CPU, float32 in [0, 1]: images (N, C, H, W) and edits
    (N, samples, C, H, W)."""

    images: torch.Tensor
    edits: torch.Tensor


def is_diffusion(model: Any) -> bool:
    return isinstance(model, Editable)


def has_codes(model: Any) -> bool:
    """Whether images map to ``model``'s codes: through an encoder, or by inverting its generator."""
    return isinstance(model, Decodable) and isinstance(model, (Encodable, Invertible))


def can_edit(model: Any) -> bool:
    """Whether ``model`` has an editing method (SDEdit, or latent arithmetic through an encoder or inversion)."""
    return is_diffusion(model) or has_codes(model)


def codes_of(
    model: Any, x: torch.Tensor, y: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The codes (B, latent_dim) of images x (B, C, H, W) in [0, 1] on the model's device: the encoder's,
    or the generator's inversion (a fit: ``generator`` draws its starting codes)."""
    if isinstance(model, Encodable):
        with torch.no_grad():
            return model.encode(x, y)
    return model.invert(x, y, generator=generator)


@torch.no_grad()
def sdedit_images(
    model: Any,
    x: torch.Tensor,
    strength: float,
    *,
    samples: int,
    generator: torch.Generator | None,
    labels: torch.Tensor | None = None,
    **options: Any,
) -> Edits:
    """``samples`` SDEdits of each image of ``x`` (N, C, H, W) in [0, 1] at ``strength``.

    ``labels``: (N,) target classes of a conditional model (None for an unconditional one; a
    conditional model without them keeps each image's own class, which the caller passes).
    ``options``: the model's sampling options (sampler, steps, guidance).
    """
    name = type(model).__name__
    if not is_diffusion(model):
        raise ConfigError(f"{name} cannot SDEdit; editing works with {METHODS}")
    check_images(model, x, "edit")
    if samples < 1:
        raise ConfigError(f"the number of edits per image must be >= 1, got {samples}")
    if labels is not None:
        if not is_conditional(model):
            raise ConfigError(
                f"{name} is not class-conditional: editing towards a class needs a conditional diffusion model "
                "(train cddpm) or a vae / autoencoder (latent arithmetic)"
            )
        check_labels(model, labels)
    elif is_conditional(model):
        raise ConfigError(f"{name} is class-conditional; pass the class to edit towards (--to-class K)")
    options = {k: v for k, v in options.items() if v is not None}
    device = next(model.parameters()).device
    xs = x.float().repeat_interleave(samples, 0).to(device)
    ys = labels.to(device).repeat_interleave(samples, 0) if labels is not None else None
    out = model.edit(xs, strength, generator=generator, labels=ys, **options).float().cpu()
    return Edits(x.float().cpu(), out.view(len(x), samples, *x.shape[1:]))


def class_codes(
    model: Any,
    images: np.ndarray,
    labels: np.ndarray,
    k: int,
    batch: int = 500,
    *,
    classes: Any = None,
    generator: torch.Generator | None = None,
    codes: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean code of each class's first ``DIRECTION_IMAGES`` training images (``DIRECTION_INVERSIONS``
    for an inverted generator), (K, latent_dim).

    ``classes``: only these classes (the rest of the rows NaN); ``codes``: rows already made, kept (a
    NaN row is made). ``generator``: the inversion's starting codes."""
    device = next(model.parameters()).device
    per = DIRECTION_IMAGES if isinstance(model, Encodable) else DIRECTION_INVERSIONS
    # out-of-range classes are left to latent_edit_images to name
    wanted = range(k) if classes is None else sorted({int(c) for c in classes if 0 <= int(c) < k})
    means = codes.clone() if codes is not None else torch.full((k, model.latent_dim), float("nan"))
    for c in wanted:
        if not bool(torch.isnan(means[c]).any()):
            continue
        idx = np.flatnonzero(labels == c)[:per]
        if len(idx) == 0:
            raise ConfigError(f"the training split has no image of class {c}; latent arithmetic needs every class")
        zs = [
            codes_of(model, torch.from_numpy(images[idx[i : i + batch]]).float().div(255.0).to(device), None, generator)
            .float()
            .cpu()
            for i in range(0, len(idx), batch)
        ]
        means[c] = torch.cat(zs).mean(0)
    return means


@torch.no_grad()
def latent_edit_images(
    model: Any,
    x: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    codes: torch.Tensor | None,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> Edits:
    """Decode each image's code plus ``scale`` (codes[target] - codes[source]); one edit per image.
    A conditional model decodes the code of (x, source) with the target class instead (``codes`` unused).

    Args:
        x: (N, C, H, W) in [0, 1]; source, target: (N,) classes; codes: ``class_codes``' (K, D).
        generator: a GAN's inversion's starting codes.
    """
    name = type(model).__name__
    if not has_codes(model):
        raise ConfigError(f"{name} has no encoder and no generator to invert; editing works with {METHODS}")
    check_images(model, x, "edit")
    k = int(model.config.num_classes) if is_conditional(model) else len(codes) if codes is not None else 0
    for what, ys in (("source", source), ("target", target)):
        if len(ys) and (int(ys.min()) < 0 or int(ys.max()) >= k):
            bad = int(ys.min()) if int(ys.min()) < 0 else int(ys.max())
            raise ConfigError(f"the {what} class must be in 0..{k - 1}, got {bad}")
    device = next(model.parameters()).device
    xd, src, tgt = x.float().to(device), source.to(device), target.to(device)
    if is_conditional(model):
        z = codes_of(model, xd, src, generator)
        with torch.no_grad():
            out = model.decode(z, tgt).float().cpu()
    else:
        assert codes is not None
        shift = codes[target] - codes[source]
        if bool(torch.isnan(shift).any()):
            raise ConfigError("the source or target class has no class code yet; pass it in class_codes(classes=...)")
        z = codes_of(model, xd, None, generator).float().cpu() + scale * shift
        with torch.no_grad():
            out = model.decode(z.to(device)).float().cpu()
    return Edits(x.float().cpu(), out[:, None])


def edit_sheet(result: Edits) -> torch.Tensor:
    """One row per image: the input, then its edits. (N * (samples + 1), C, H, W); ``nrow=samples + 1``."""
    return torch.cat([result.images[:, None], result.edits], 1).flatten(0, 1)
