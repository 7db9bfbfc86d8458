"""Inpainting shared by the families that have no sampler of their own for it.

* Latent models (VAE, autoencoder): find the code whose decoding matches the known pixels, as a MAP fit
  under the model's own prior on codes (Yeh et al. 2017's "semantic inpainting" with the prior as its
  regulariser): minimise over z, for each image,
      sum over known pixels (decode(z) - x)^2 / (2 pixel_std^2)  -  log p(z)
  with Adam from the encoder's code of the image (unknown pixels grey), plus ``init_noise`` N(0, I) so that
  the completions of one image differ. p(z) is the VAE's prior (N(0, I) or its fitted mixture) or the
  autoencoder's Gaussian fitted to its codes (``gaussian_log_prior``), handed in by the model.
* Generators without an encoder (GANs): the same fit with z ~ N(0, I) as the prior, started from the
  best of a few codes drawn from the prior (``invert_generator``): generator inversion (Zhu et al. 2016)
  for latent arithmetic, and with a mask Yeh et al. 2017's semantic inpainting itself.
* Autoregressive models: the known pixels must come first in raster order (``known_rows``), and the rest
  is sampled by their ``complete``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch

from genmodels.models.base import SampleOption

LATENT_OPTIONS: dict[str, SampleOption] = {
    "steps": SampleOption(int, "latent fit: Adam steps (default 200; 0 = the encoder's code)", minimum=0),
    "lr": SampleOption(float, "latent fit: Adam learning rate (default 0.05)", minimum=0.0),
    "pixel_std": SampleOption(float, "latent fit: assumed pixel noise, smaller trusts the pixels more (0.1)"),
    "init_noise": SampleOption(float, "latent fit: N(0, I) scale added to the starting code (default 0.5)"),
}


def gaussian_log_prior(z: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, cov) up to a constant, (B,): an autoencoder's Gaussian fitted to its codes."""
    eye = torch.eye(len(cov), dtype=torch.float64, device=cov.device)
    tril = torch.linalg.cholesky(cov.double() + 1e-6 * eye)
    sol = torch.linalg.solve_triangular(tril, (z - mean).double().T, upper=False)
    return (-0.5 * sol.square().sum(0)).to(z.dtype)


def fit_latent(
    model: Any,
    z0: torch.Tensor,
    x: torch.Tensor,
    keep: torch.Tensor,
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor | None,
    *,
    steps: int,
    lr: float,
    pixel_std: float,
) -> torch.Tensor:
    """The MAP code of each image under the model's prior given its known pixels (module docstring):
    ``steps`` Adam steps on ``sum_known (decode(z) - x)^2 / (2 pixel_std^2) - log p(z)`` from ``z0``.
    Callers put the model in eval mode; x, keep (expanded to x's shape), z0 and y on its device."""
    if pixel_std <= 0:
        from genmodels.errors import ConfigError

        raise ConfigError(f"pixel_std must be > 0, got {pixel_std}")
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            err = (model.decode(z, y).float() - x).square() * keep
            loss = (err.flatten(1).sum(1) / (2.0 * pixel_std**2) - log_prior(z)).sum()
            (grad,) = torch.autograd.grad(loss, [z])
        z.grad = grad
        opt.step()
    return z.detach()


def latent_inpaint(
    model: Any,
    x: torch.Tensor,
    keep: torch.Tensor,
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    steps: int = 200,
    lr: float = 0.05,
    pixel_std: float = 0.1,
    init_noise: float = 0.5,
) -> torch.Tensor:
    """Inpaint by fitting each image's code to its known pixels (module docstring).

    Args:
        model: an Encodable and Decodable model (``encode(x, y)``, ``decode(z, y)`` in [0, 1]).
        log_prior: z (B, D) -> log p(z) (B,) up to a constant: the model's prior on codes.
        x: (B, C, H, W) in [0, 1]; keep: (B or 1, 1 or C, H, W), 1 = known.
        labels: (B,) classes of a conditional model, else None.

    Returns:
        (B, C, H, W) in [0, 1]: the decoding of the fitted codes (callers paste the known pixels back).
    """
    dev = next(model.parameters()).device
    x = x.to(dev).float()
    keep = keep.to(dev).float().expand_as(x)
    y = labels.to(dev) if labels is not None else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z0 = model.encode(keep * x + (1.0 - keep) * 0.5, y).float()
            noise = torch.randn(z0.shape, generator=generator, device=dev) if init_noise else 0.0
        z = fit_latent(model, z0 + init_noise * noise, x, keep, log_prior, y, steps=steps, lr=lr, pixel_std=pixel_std)
        with torch.no_grad():
            return model.decode(z, y).float()
    finally:
        model.train(was_training)


INVERSION_OPTIONS: dict[str, SampleOption] = {
    "steps": SampleOption(int, "inversion: Adam steps on the code (default 300)", minimum=0),
    "lr": SampleOption(float, "inversion: Adam learning rate (default 0.05)", minimum=0.0),
    "pixel_std": SampleOption(float, "inversion: assumed pixel noise, smaller trusts the pixels more (0.1)"),
    "restarts": SampleOption(int, "inversion: prior draws per image, the best one fitted (default 16)", minimum=1),
}


def standard_normal_log_prior(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) up to a constant, (B,)."""
    return -0.5 * z.float().square().sum(1)


def invert_generator(
    model: Any,
    x: torch.Tensor,
    keep: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    steps: int = 300,
    lr: float = 0.05,
    pixel_std: float = 0.1,
    restarts: int = 16,
) -> torch.Tensor:
    """Generator inversion (Zhu et al. 2016, Yeh et al. 2017): the code z ~ N(0, I) whose image matches
    x's known pixels, for a model with ``decode`` and no encoder (a GAN). ``restarts`` codes per image are
    drawn from the prior and the one nearest the known pixels starts ``fit_latent``'s MAP fit.

    Args:
        x: (B, C, H, W) in [0, 1]; keep: (B or 1, 1 or C, H, W), 1 = known (None: every pixel).
        labels: (B,) classes of a conditional model, else None.

    Returns:
        (B, latent_dim) codes on the model's device.
    """
    if restarts < 1:
        from genmodels.errors import ConfigError

        raise ConfigError(f"restarts must be >= 1, got {restarts}")
    dev = next(model.parameters()).device
    x = x.to(dev).float()
    keep = torch.ones_like(x) if keep is None else keep.to(dev).float().expand_as(x)
    y = labels.to(dev) if labels is not None else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            tries = torch.randn((restarts, len(x), model.latent_dim), generator=generator, device=dev)
            errs = torch.stack(
                [((model.decode(z, y).float() - x).square() * keep).flatten(1).sum(1) for z in tries]
            )  # (restarts, B)
            z0 = tries[errs.argmin(0), torch.arange(len(x), device=dev)]
        return fit_latent(model, z0, x, keep, standard_normal_log_prior, y, steps=steps, lr=lr, pixel_std=pixel_std)
    finally:
        model.train(was_training)


def known_rows(keep: torch.Tensor) -> int | None:
    """K when every image's known pixels are exactly its top K rows (all channels), else None."""
    k = keep.bool().all(1)  # (B, H, W): a pixel is known when all its channels are
    top = int(k.all(2).int().cumprod(1).sum(1).min())  # leading whole known rows, the fewest of any image
    expected = torch.zeros_like(k)
    expected[:, :top] = True
    return top if bool((k == expected).all()) else None


class LatentInpainting:
    """``inpaint`` for a model with ``encode``, ``decode`` and ``log_prior`` (a VAE, an autoencoder): the
    latent fit of ``latent_inpaint`` under the model's own prior."""

    inpaint_options: ClassVar[dict[str, SampleOption]] = LATENT_OPTIONS
    log_prior: Callable[[torch.Tensor], torch.Tensor]  # the model's: log p(z) up to a constant

    def inpaint(
        self,
        x: torch.Tensor,
        keep: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Fill the pixels where ``keep`` is 0 by fitting the code to the known ones (``latent_inpaint``)."""
        return latent_inpaint(self, x, keep, self.log_prior, generator=generator, labels=labels, **options)


class GeneratorInversion:
    """``invert`` and ``inpaint`` for a generator with ``decode`` and a N(0, I) prior but no encoder (a
    GAN): ``invert_generator``'s fit to every pixel (an image's code, for latent arithmetic) or to the
    known ones (inpainting)."""

    inpaint_options: ClassVar[dict[str, SampleOption]] = INVERSION_OPTIONS
    latent_dim: int

    def invert(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """The codes (B, latent_dim) whose images match x (B, C, H, W) in [0, 1] (``invert_generator``)."""
        return invert_generator(self, x, None, y, generator=generator, **options)

    def inpaint(
        self,
        x: torch.Tensor,
        keep: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Fill the pixels where ``keep`` is 0 with the image of the code fitted to the known ones."""
        z = invert_generator(self, x, keep, labels, generator=generator, **options)
        with torch.no_grad():
            was_training = self.training  # type: ignore[attr-defined]
            self.eval()  # type: ignore[attr-defined]
            try:
                return self.decode(z, labels.to(z.device) if labels is not None else None).float()  # type: ignore[attr-defined]
            finally:
                self.train(was_training)  # type: ignore[attr-defined]
