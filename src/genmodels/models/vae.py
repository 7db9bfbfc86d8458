"""Variational autoencoders (Kingma and Welling 2014): MLP and conv VAEs, beta-VAE (Higgins et al.
2017) and the class-conditional VAE (Sohn et al. 2015), with the importance-weighted bound on the
log-likelihood (Burda et al. 2016).

Encoder q(z | x, y) = N(mu, diag(exp(logvar))) from two heads on shared features; prior
p(z) = N(0, I); decoder p(x | z, y) per pixel, one of:
- ``bernoulli``: with ``binarize: dynamic`` images are resampled x ~ Bern(pixel) every batch (the
  binarised-MNIST protocol), and the ELBO is a bound on a real likelihood. With ``binarize: none``
  it is the per-pixel cross-entropy on grey levels that tutorials use: fine for training, but not a
  likelihood, so no NLL in nats is claimed for it.
- ``logistic``: a logistic discretised into 256 levels per pixel, an exact probability of 8-bit data.
- ``gaussian``: a Gaussian density with one learned scale on uniformly dequantised data; the
  dequantisation bound turns it into a bound on the 8-bit likelihood.

Negative ELBO per image (Kingma and Welling 2014, Eq. 10), in nats:
    -log p(x | z) + beta * KL(q(z | x) || p(z)),  z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)
with the closed-form Gaussian KL (their Appendix B):  0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput
from genmodels.models.likelihoods import (
    bernoulli_log_prob,
    dequantize,
    discretized_logistic_log_prob,
    gaussian_log_prob,
)
from genmodels.nets import ConvDecoder, ConvEncoder, mlp

LIKELIHOODS = ("bernoulli", "logistic", "gaussian")


@dataclass
class VAEConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), set from the dataset
    num_classes: int = 10  # set from the dataset; used when conditional
    arch: str = "mlp"  # mlp | conv
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)  # mlp widths between the image and the code
    channels: tuple[int, ...] = (32, 64, 128)  # conv stage widths; each stage after the first halves H, W
    blocks: int = 0  # conv residual blocks per stage
    act: str = "silu"
    likelihood: str = "bernoulli"  # bernoulli | logistic | gaussian
    binarize: str = "none"  # none | dynamic (bernoulli only): resample binary images every batch
    beta: float = 1.0  # weight of the KL term (beta-VAE); the reported ELBO always uses 1
    conditional: bool = False  # condition encoder and decoder on the class label (CVAE)

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "conv"):
            raise unknown("vae arch", self.arch, ["mlp", "conv"])
        if self.likelihood not in LIKELIHOODS:
            raise unknown("vae likelihood", self.likelihood, LIKELIHOODS)
        if self.binarize not in ("none", "dynamic"):
            raise unknown("vae binarize", self.binarize, ["none", "dynamic"])
        if self.binarize == "dynamic" and self.likelihood != "bernoulli":
            raise ConfigError("model.binarize=dynamic needs model.likelihood=bernoulli")
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if self.beta < 0:
            raise ConfigError(f"model.beta must be >= 0, got {self.beta}")
        if self.conditional and self.num_classes < 2:
            raise ConfigError("model.conditional=true needs a labelled dataset with at least 2 classes")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over the last dim: (B, D) -> (B,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


class VAE(nn.Module):
    """A VAE around separate encoder and decoder networks.

    Args:
        config: the VAEConfig.
        encoder: (B, C, H, W) in [0, 1] -> (B, F) features.
        feature_dim: F.
        decoder: (B, latent_dim [+ num_classes]) -> (B, out_channels, H, W): C logits (bernoulli),
            2C (logistic: mean, log-scale) or C means (gaussian).
    """

    def __init__(self, config: VAEConfig, encoder: nn.Module, feature_dim: int, decoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        cond = config.num_classes if config.conditional else 0
        self.head = nn.Linear(feature_dim + cond, 2 * config.latent_dim)  # -> [mu, logvar]
        self.decoder = decoder
        if config.likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.full((), math.log(0.1)))

    conditional = property(lambda self: self.config.conditional)
    latent_dim = property(lambda self: self.config.latent_dim)

    def _cond(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.config.conditional:
            return h
        if y is None:
            raise ConfigError("this conditional VAE needs class labels; pass labels=...")
        return torch.cat([h, F.one_hot(y, self.config.num_classes).to(h.dtype)], 1)

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, y): (mu, logvar), each (B, latent_dim)."""
        mu, logvar = self.head(self._cond(self.encoder(x), y)).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def _decoder_out(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(self._cond(z, y)).float()

    def log_px_given_z(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per image from decoder outputs (B, *, H, W); x as the likelihood expects."""
        lik = self.config.likelihood
        if lik == "bernoulli":
            return bernoulli_log_prob(out, x)
        if lik == "logistic":
            mean, log_scale = out.chunk(2, dim=1)
            return discretized_logistic_log_prob(torch.tanh(mean), log_scale, x)
        return gaussian_log_prob(out, self.log_sigma, x)

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The data the likelihood is defined on: binarised or dequantised images, or x itself."""
        if self.config.binarize == "dynamic":
            return torch.bernoulli(x, generator=generator)
        if self.config.likelihood == "gaussian":
            return dequantize(x, generator=generator)
        return x

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder outputs -> the mean image in [0, 1]."""
        lik = self.config.likelihood
        if lik == "bernoulli":
            return torch.sigmoid(out)
        if lik == "logistic":
            return (torch.tanh(out.chunk(2, dim=1)[0]) + 1.0) * 0.5
        return out.clamp(0.0, 1.0)

    @property
    def has_likelihood(self) -> bool:
        """False for the Bernoulli cross-entropy on grey levels, which is not a probability of the data."""
        return not (self.config.likelihood == "bernoulli" and self.config.binarize == "none")

    @property
    def likelihood_data(self) -> str:
        """What the likelihood is a distribution over: binarised or 8-bit images."""
        return "binarized" if self.config.binarize == "dynamic" else "8-bit"

    @property
    def log_prob_offset(self) -> float:
        """Constant turning log p of the observed data into a bound on log P of 8-bit images (nats)."""
        c, h, w = self.config.image_shape
        return -c * h * w * math.log(256.0) if self.config.likelihood == "gaussian" else 0.0

    def loss(self, batch: Batch) -> LossOutput:
        x = self.observe(batch.x)
        mu, logvar = self.posterior(x, batch.y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = -self.log_px_given_z(self._decoder_out(z, batch.y), x)
        kl = gaussian_kl(mu, logvar)
        loss = (rec + self.config.beta * kl).mean()
        elbo = -(rec + kl).detach().mean() + self.log_prob_offset
        return LossOutput(loss, {"recon": rec.detach().mean(), "kl": kl.detach().mean(), "elbo": elbo})

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean of z for images (B, C, H, W) in [0, 1]."""
        return self.posterior(x, y)[0]

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> mean images (B, C, H, W) in [0, 1]."""
        return self.mean_image(self._decoder_out(z, y))

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode n draws z ~ N(0, I); returns mean images (n, C, H, W) in [0, 1].

        Conditional models draw labels uniformly from ``generator`` when none are given.
        """
        dev = self.head.weight.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=dev)
        if self.config.conditional and labels is None:
            labels = torch.randint(self.config.num_classes, (n,), generator=generator, device=dev)
        return self.decode(z, labels.to(dev) if labels is not None else None)

    @torch.no_grad()
    def nll(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        k: int = 1000,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Importance-weighted bound and ELBO for each image (Burda et al. 2016, Eq. 8), in nats.

        log w_i = log p(x | z_i) + log p(z) - log q(z_i | x),  z_i ~ q(z | x), i = 1..k
        IWAE_k = logsumexp_i(log w_i) - log k  <=  log p(x), tightening as k grows.

        Returns:
            ``{"iwae": (B,), "elbo": (B,)}``: the negated IWAE_k bound and the negated k-sample
            Monte-Carlo ELBO (mean of log w), both upper bounds on -log p(x) in nats of the data
            ``likelihood_data`` names.
        """
        xo = self.observe(x, generator)
        mu, logvar = self.posterior(xo, y)
        # About 1,000 decodes per pass: large enough for fast kernels, small enough that the
        # activations stay in cache-friendly, already-mapped memory.
        chunk = chunk or max(1, 1024 // len(x))
        logw = []
        done = 0
        while done < k:
            m = min(chunk, k - done)
            eps = torch.randn(m, *mu.shape, generator=generator, device=mu.device)
            z = mu + torch.exp(0.5 * logvar) * eps  # (m, B, D)
            flat = z.reshape(-1, mu.shape[1])
            yy = y.repeat(m) if y is not None else None
            out = self._decoder_out(flat, yy)
            lpx = self.log_px_given_z(out, xo.repeat(m, 1, 1, 1)).view(m, -1)
            lpz = log_normal(z, torch.zeros_like(mu), torch.zeros_like(logvar))
            lqz = log_normal(z, mu, logvar)
            logw.append(lpx + lpz - lqz)
            done += m
        lw = torch.cat(logw, 0)  # (k, B)
        iwae = torch.logsumexp(lw, 0) - math.log(k)
        off = self.log_prob_offset
        return {"iwae": -(iwae + off), "elbo": -(lw.mean(0) + off)}


def build(config: VAEConfig) -> VAE:
    """The VAE of ``config.arch`` with its encoder and decoder networks."""
    c, h, w = config.image_shape
    out_c = 2 * c if config.likelihood == "logistic" else c
    z_in = config.latent_dim + (config.num_classes if config.conditional else 0)
    if config.arch == "mlp":
        encoder: nn.Module = nn.Sequential(
            nn.Flatten(), mlp([c * h * w, *config.hidden], config.act, final_act=config.act)
        )
        feat = config.hidden[-1]
        decoder: nn.Module = nn.Sequential(
            mlp([z_in, *config.hidden[::-1], out_c * h * w], config.act), nn.Unflatten(1, (out_c, h, w))
        )
    else:
        conv = ConvEncoder(config.image_shape, config.channels, config.blocks, config.act)
        encoder, feat = conv, conv.out_dim
        decoder = ConvDecoder(z_in, config.image_shape, config.channels, out_c, config.blocks, config.act)
    return VAE(config, encoder, feat, decoder)
