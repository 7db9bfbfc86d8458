"""Model figures: reconstructions, interpolations and 2-D latent maps.

These use a model only through its public methods (``encode``, ``decode``, ``reconstruct``,
``sample``) and write PNG files; they never train.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from genmodels.errors import GenmodelsError
from genmodels.models.base import Decodable, Encodable, default_labels, is_conditional
from genmodels.viz.grid import save_grid
from genmodels.viz.plots import plot_latent_scatter


def _batches(x: torch.Tensor, size: int = 500) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _needs(model: Any, capability: type, what: str) -> None:
    if not isinstance(model, capability):
        needs = {"Encodable": "an encoder", "Decodable": "a latent space to decode"}.get(capability.__name__)
        raise GenmodelsError(f"{what} needs a model with {needs}; this model has none (try genmodels sample)")


def _labels(model: Any, y: torch.Tensor | None) -> torch.Tensor | None:
    """The labels a conditional model's encode/decode take; None for an unconditional model."""
    return y if is_conditional(model) else None


@torch.no_grad()
def reconstruction_sheet(model: Any, x: torch.Tensor, y: torch.Tensor | None, path: str | os.PathLike) -> torch.Tensor:
    """Rows of originals over their reconstructions; x (N, C, H, W) in [0, 1]. Returns the reconstructions."""
    _needs(model, Encodable, "reconstruct")
    dev = next(model.parameters()).device
    x = x.to(dev)
    rec = model.reconstruct(x, _labels(model, y.to(dev) if y is not None else None)).float()
    per_row = min(len(x), 10)
    rows = []
    for i in range(0, len(x), per_row):
        rows += [x[i : i + per_row], rec[i : i + per_row]]
    save_grid(torch.cat(rows).cpu(), path, nrow=per_row)
    return rec.cpu()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of a and b (B, D) at fractions t (T,) -> (B, T, D).

    For Gaussian latents it keeps the norm typical of the prior all along the path (White 2016),
    where a straight line passes through the unlikely low-norm middle.
    """
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((an * bn).sum(1).clamp(-1 + 1e-7, 1 - 1e-7))[:, None]  # (B, 1)
    so = torch.sin(omega)
    t = t[None, :]
    wa = torch.sin((1 - t) * omega) / so
    wb = torch.sin(t * omega) / so
    return wa[..., None] * a[:, None] + wb[..., None] * b[:, None]


@torch.no_grad()
def interpolation_sheet(
    model: Any,
    x: torch.Tensor | None,
    path: str | os.PathLike,
    *,
    steps: int = 10,
    pairs: int = 6,
    generator: torch.Generator | None = None,
    y: torch.Tensor | None = None,
) -> None:
    """One row per pair: decodes along the path between two codes.

    With data ``x`` (2 * pairs images) and an encoder, the endpoints are those images' codes and the
    path is straight (the encoder's codes are not prior draws); otherwise two prior draws are joined
    by slerp.
    """
    _needs(model, Decodable, "interpolate")
    dev = next(model.parameters()).device
    t = torch.linspace(0, 1, steps, device=dev)
    y_path = None
    if x is not None and isinstance(model, Encodable):
        x = x[: 2 * pairs].to(dev)
        yy = y[: 2 * pairs].to(dev) if y is not None else None
        z = model.encode(x, _labels(model, yy))
        a, b = z[0::2], z[1::2]
        path_z = a[:, None] + t[None, :, None] * (b - a)[:, None]
        if is_conditional(model) and yy is not None:
            y_path = yy[0::2].repeat_interleave(steps)  # each row keeps its first image's class
    else:
        d = int(model.latent_dim)
        a = torch.randn(pairs, d, generator=generator, device=dev)
        b = torch.randn(pairs, d, generator=generator, device=dev)
        path_z = slerp(a, b, t)
        labels = default_labels(model, len(a), dev)
        y_path = labels.repeat_interleave(steps) if labels is not None else None
    imgs = model.decode(path_z.reshape(-1, path_z.shape[-1]), y_path).float()
    save_grid(imgs.cpu(), path, nrow=steps)


@torch.no_grad()
def latent_scatter(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    classes: list[str],
    path: str | os.PathLike,
    title: str = "",
) -> np.ndarray:
    """Encode a test set with a 2-D latent and scatter it coloured by class; returns the codes."""
    _needs(model, Encodable, "a latent scatter")
    if int(model.latent_dim) != 2:
        raise GenmodelsError("a latent scatter needs latent_dim=2; train with --set model.latent_dim=2")
    dev = next(model.parameters()).device
    codes = []
    for i, xb in enumerate(_batches(x)):
        yb = y[i * 500 : (i + 1) * 500].to(dev) if y is not None else None
        codes.append(model.encode(xb.to(dev), _labels(model, yb)).float().cpu())
    z = torch.cat(codes).numpy()
    plot_latent_scatter(z, y.numpy() if y is not None else None, classes, path, title)
    return z


@torch.no_grad()
def manifold_sheet(
    model: Any,
    path: str | os.PathLike,
    n: int = 20,
    label: int | None = None,
    codes: np.ndarray | None = None,
) -> None:
    """Decode an n x n grid over a 2-D latent (the classic VAE manifold figure).

    The grid spans Gaussian quantiles 0.05..0.95 for a model with a N(0, I) prior, or the 1st..99th
    percentiles of ``codes`` (the test set's codes) for an autoencoder without one.
    """
    from scipy.stats import norm

    _needs(model, Decodable, "a manifold sheet")
    if int(model.latent_dim) != 2:
        raise GenmodelsError("a manifold sheet needs latent_dim=2; train with --set model.latent_dim=2")
    dev = next(model.parameters()).device
    if codes is not None:
        lo, hi = np.percentile(codes, 1, axis=0), np.percentile(codes, 99, axis=0)
        g0, g1 = np.linspace(lo[0], hi[0], n), np.linspace(hi[1], lo[1], n)
    else:
        g0 = norm.ppf(np.linspace(0.05, 0.95, n))
        g1 = norm.ppf(np.linspace(0.95, 0.05, n))
    zz = torch.tensor([[a, b] for b in g1 for a in g0], dtype=torch.float32, device=dev)
    y = None
    if is_conditional(model):
        y = torch.full((len(zz),), 0 if label is None else label, dtype=torch.long, device=dev)
    save_grid(model.decode(zz, y).float().cpu(), path, nrow=n, scale=1)
