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

Prior: ``prior: normal`` samples z ~ N(0, I). ``prior: mixture`` keeps training against N(0, I) but,
once training ends, fits a Gaussian mixture with full covariances to the aggregate posterior
q(z) = E_x q(z | x) of the training set (ex-post density estimation, Ghosh et al. 2020; the "prior
hole" of Rosca et al. 2018 is where N(0, I) puts mass that q(z) does not, and decodes to
non-images). The mixture lives in buffers (an unfitted mixture is K copies of N(0, I)), samples
come from it, and ``nll`` bounds the likelihood of that model, decoder and mixture together.
``prior_scale`` > 1 widens every component (a sampling temperature): blurry decoders make samples
drawn exactly from q(z) less varied than the data, and a wider prior restores some of that spread.

Negative ELBO per image (Kingma and Welling 2014, Eq. 10), in nats:
    -log p(x | z) + beta * KL(q(z | x) || p(z)),  z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)
with the closed-form Gaussian KL (their Appendix B):  0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, SampleOption
from genmodels.models.inpainting import LatentInpainting
from genmodels.models.likelihoods import (
    bernoulli_log_prob,
    dequantize,
    discretized_logistic_log_prob,
    gaussian_log_prob,
)
from genmodels.nets import ConvDecoder, ConvEncoder, mlp
from genmodels.nets.linear import Linear

LIKELIHOODS = ("bernoulli", "logistic", "gaussian")
PRIORS = ("normal", "mixture")


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
    prior: str = "normal"  # normal | mixture: a Gaussian mixture fitted to the aggregate posterior after training
    prior_components: int = 32  # mixture components (prior: mixture)
    prior_fit_images: int = 20000  # training images encoded to fit the mixture
    prior_scale: float = 1.0  # the fitted components' spread is multiplied by this (> 1: more diverse samples)
    objective: str = "elbo"  # elbo | broken: the much-copied wrong objective (README "A broken VAE"), for the lesson

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
        if self.objective not in ("elbo", "broken"):
            raise unknown("vae objective", self.objective, ["elbo", "broken"])
        if self.prior not in PRIORS:
            raise unknown("vae prior", self.prior, PRIORS)
        if self.prior_components < 1 or self.prior_fit_images < 2 * self.prior_components:
            raise ConfigError(
                f"model.prior_components must be >= 1 and model.prior_fit_images >= 2 * components, got "
                f"{self.prior_components} and {self.prior_fit_images}"
            )
        if not self.prior_scale > 0:
            raise ConfigError(f"model.prior_scale must be > 0, got {self.prior_scale}")
        if self.conditional and self.num_classes < 2:
            raise ConfigError("model.conditional=true needs a labelled dataset with at least 2 classes")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, summed over the last dim: (B, D) -> (B,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dim."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi)).sum(-1)


def mixture_log_prob(z: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k N(z; m_k, L_k L_k^T) for z (N, D); logits (K,), means (K, D), tril (K, D, D) -> (N,)."""
    diff = (z[:, None, :] - means[None]).transpose(0, 1)  # (K, N, D)
    # Solve L_k u = (z - m_k): the Mahalanobis term is |u|^2 and log det = 2 sum log diag(L_k).
    u = torch.linalg.solve_triangular(tril, diff.transpose(1, 2), upper=False)  # (K, D, N)
    logdet = 2.0 * tril.diagonal(dim1=1, dim2=2).log().sum(-1)  # (K,)
    d = z.shape[1]
    log_n = -0.5 * (u.square().sum(1) + logdet[:, None] + d * math.log(2 * math.pi))  # (K, N)
    return torch.logsumexp(torch.log_softmax(logits, 0)[:, None] + log_n, 0)


def fit_mixture(
    z: torch.Tensor, k: int, *, iters: int = 100, generator: torch.Generator | None = None, reg: float = 1e-4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximum-likelihood Gaussian mixture with full covariances by EM (Dempster et al. 1977), in float64.

    Initialised by k-means++ seeding (Arthur and Vassilvitskii 2007) from ``generator``; ``reg`` times
    the mean code variance is added to every covariance so no component collapses onto a point.

    Args:
        z: (N, D) points; k: components (capped at N // 2).

    Returns:
        (logits (K,), means (K, D), Cholesky factors (K, D, D)), float32.
    """
    x = z.detach().double().cpu()
    n, d = x.shape
    k = max(1, min(k, n // 2))
    # k-means++ seeding: each next centre drawn with probability proportional to squared distance.
    centres = [x[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    d2 = (x - centres[0]).square().sum(1)
    for _ in range(1, k):
        centres.append(x[torch.multinomial(d2 / d2.sum(), 1, generator=generator)].squeeze(0))
        d2 = torch.minimum(d2, (x - centres[-1]).square().sum(1))
    means = torch.stack(centres)
    eye = torch.eye(d, dtype=x.dtype)
    floor = reg * float(x.var(0).mean()) * eye
    covs = (torch.cov(x.T) + floor).expand(k, d, d).clone()
    logits = torch.zeros(k, dtype=x.dtype)
    prev = -math.inf
    # Everything per iteration is a GEMM against the fixed outer products x x^T (N, D*D): no (K, N, D)
    # temporaries (100 iterations on 20,000 codes of 16 dims: ~2 s instead of ~13 s).
    outer = (x[:, :, None] * x[:, None, :]).reshape(n, d * d)
    for _ in range(iters):
        tril = torch.linalg.cholesky(covs)
        prec = torch.cholesky_inverse(tril)  # (K, D, D)
        # E step: log N(x | m_k, S_k) = -(x'Px - 2 m'Px + m'Pm) / 2 - log|L_k| (+ a constant), for all n, k.
        pm = (prec @ means[:, :, None]).squeeze(-1)  # (K, D)
        maha = outer @ prec.reshape(k, d * d).T - 2.0 * (x @ pm.T) + (pm * means).sum(1)  # (N, K)
        log_n = -0.5 * maha.T - tril.diagonal(dim1=1, dim2=2).log().sum(-1)[:, None]
        joint = torch.log_softmax(logits, 0)[:, None] + log_n  # (K, N), up to a constant
        ll = torch.logsumexp(joint, 0)
        r = torch.exp(joint - ll)  # (K, N)
        # M step: weights, means and covariances (second moments less the mean's outer product).
        nk = r.sum(1) + 1e-10
        logits = nk.log()
        means = (r @ x) / nk[:, None]
        second = (r @ outer).reshape(k, d, d) / nk[:, None, None]
        covs = second - means[:, :, None] * means[:, None, :]
        covs = 0.5 * (covs + covs.transpose(1, 2)) + floor
        mean_ll = float(ll.mean())
        if mean_ll - prev < 1e-7 * abs(mean_ll):
            break
        prev = mean_ll
    return logits.float(), means.float(), torch.linalg.cholesky(covs).float()


class VAE(LatentInpainting, nn.Module):
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
        self.head = Linear(feature_dim + cond, 2 * config.latent_dim)  # -> [mu, logvar]
        self.decoder = decoder
        if config.likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.full((), math.log(0.1)))
        if config.prior == "mixture":
            k, d = config.prior_components, config.latent_dim
            # Unfitted, the mixture is K copies of N(0, I): exactly the standard prior.
            self.register_buffer("prior_logits", torch.zeros(k))
            self.register_buffer("prior_means", torch.zeros(k, d))
            self.register_buffer("prior_tril", torch.eye(d).expand(k, d, d).clone())

    conditional = property(lambda self: self.config.conditional)
    sample_options: ClassVar[dict[str, SampleOption]] = {}
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
        if self.config.objective == "broken":  # one head used as both the mean and the log-variance
            logvar = mu
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

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) of the prior samples come from, for z (..., D) -> (...)."""
        if self.config.prior == "normal":
            return log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        flat = z.reshape(-1, z.shape[-1]).float()
        return mixture_log_prob(flat, self.prior_logits, self.prior_means, self.prior_tril).view(z.shape[:-1])

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from the prior, (n, latent_dim)."""
        dev = self.head.weight.device
        eps = torch.randn(n, self.config.latent_dim, generator=generator, device=dev)
        if self.config.prior == "normal":
            return eps
        comp = torch.multinomial(torch.softmax(self.prior_logits, 0), n, replacement=True, generator=generator)
        return self.prior_means[comp] + (self.prior_tril[comp] @ eps[:, :, None]).squeeze(-1)

    @torch.no_grad()
    def fit_to_data(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """After training: fit the mixture prior to the aggregate posterior of the training images.

        One draw z ~ q(z | x) for each of up to ``prior_fit_images`` training images (chosen with
        ``generator``), then EM. A no-op for ``prior: normal``.

        Args:
            images: the training set, (N, C, H, W) uint8 or float in [0, 1].
            labels: (N,) class labels (conditional models).

        Returns:
            what was done, for the run's log: ``{"prior_components", "prior_fit_images", "prior_fit_ll"}``.
        """
        if self.config.prior != "mixture":
            return {}
        dev = self.head.weight.device
        n = min(len(images), self.config.prior_fit_images)
        idx = torch.randperm(len(images), generator=generator)[:n] if n < len(images) else torch.arange(n)
        zs = []
        for i in range(0, n, 500):
            sel = idx[i : i + 500]
            x = images[sel.to(images.device)].to(dev)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            y = labels[sel.to(labels.device)].to(dev) if labels is not None and self.config.conditional else None
            mu, logvar = self.posterior(self.observe(x, generator if dev.type == "cpu" else None), y)
            eps = torch.randn(mu.shape, generator=generator).to(dev) if generator is not None else torch.randn_like(mu)
            zs.append((mu + torch.exp(0.5 * logvar) * eps).float().cpu())
        z = torch.cat(zs)
        logits, means, tril = fit_mixture(z, self.config.prior_components, generator=generator)
        k = len(logits)
        self.prior_logits.copy_(torch.cat([logits, torch.full((self.config.prior_components - k,), -1e4)]))
        self.prior_means.zero_()[:k] = means.to(dev)
        # The prior is the fitted mixture with every component's spread scaled (a temperature):
        # samples come from it and nll bounds the likelihood under it, so the two stay consistent.
        self.prior_tril[:k] = tril.to(dev) * self.config.prior_scale
        ll = float(mixture_log_prob(z.to(dev), self.prior_logits, self.prior_means, self.prior_tril).mean())
        return {"prior_components": float(k), "prior_fit_images": float(n), "prior_fit_ll": ll}

    def loss(self, batch: Batch) -> LossOutput:
        x = self.observe(batch.x)
        mu, logvar = self.posterior(x, batch.y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = -self.log_px_given_z(self._decoder_out(z, batch.y), x)
        kl = gaussian_kl(mu, logvar)
        elbo = -(rec + kl).detach().mean() + self.log_prob_offset
        metrics = {"recon": rec.detach().mean(), "kl": kl.detach().mean(), "elbo": elbo}
        if self.config.objective == "broken":
            # The copied mistake: the mean of the code stands in for the KL, so nothing pulls q(z | x)
            # towards N(0, I) (the code is pushed towards large negative values instead).
            fake_kl = z.mean(1)
            metrics["fake_kl"] = fake_kl.detach().mean()
            return LossOutput((rec + self.config.beta * fake_kl).mean(), metrics)
        return LossOutput((rec + self.config.beta * kl).mean(), metrics)

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
        """Decode n draws from the prior (N(0, I) or the fitted mixture); returns mean images (n, C, H, W) in [0, 1].

        Conditional models draw labels uniformly from ``generator`` when none are given.
        """
        dev = self.head.weight.device
        z = self.sample_prior(n, generator)
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

        log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x),  z_i ~ q(z | x), i = 1..k
        with p(z) the prior samples come from (the fitted mixture for ``prior: mixture``).
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
            lpz = self.log_prior(z)
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
