"""Generative adversarial networks (Goodfellow et al. 2014): the classic Keras-tutorial MLP GAN reproduced
exactly, DCGAN (Radford et al. 2016), WGAN-GP (Gulrajani et al. 2017), the hinge loss with spectral
normalisation (Miyato et al. 2018), and class-conditional GANs with a projection discriminator
(Miyato and Koyama 2018).

G maps z ~ N(0, I) (and a one-hot label) to an image in [-1, 1] (tanh); D maps an image (and a label)
to one raw output d. The losses, each averaged over the batch:

- ``bce``: the original GAN value function (Goodfellow et al. 2014, Eq. 1) with D a sigmoid classifier
  on logits d, and the non-saturating generator loss of their Sec. 3:
  L_D = -log sigmoid(d_real) - log(1 - sigmoid(d_fake)) = softplus(-d_real) + softplus(d_fake),
  L_G = -log sigmoid(d_fake) = softplus(-d_fake). (Keras' BCE on a sigmoid output uses these logits too.)
- ``wgan-gp`` (Gulrajani et al. 2017, Algorithm 1, line 7):
  L_D = d_fake - d_real + lambda * (||grad_xhat D(xhat)||_2 - 1)^2,  xhat = eps x + (1 - eps) x_fake,
  eps ~ U[0, 1] per image;  L_G = -d_fake.
- ``hinge`` (Lim and Ye 2017; Miyato et al. 2018, Eq. 16-17):
  L_D = max(0, 1 - d_real) + max(0, 1 + d_fake),  L_G = -d_fake.

The Trainer alternates ``n_critic`` D updates (each on a fresh batch) with one G update through a frozen
D. With ``keras_compat`` one D update is two optimiser steps, as the tutorial's two ``train_on_batch``
calls are: on the real batch labelled 1, then on fakes labelled 0 drawn from G in inference mode
(Keras' ``predict``, so BatchNorm uses its moving statistics); see ``GAN.critic_methods``. Given the same
weights, G and D give Keras' outputs to 1e-6 and move BatchNorm's statistics identically
(``benchmarks/bench_gan_keras.py`` checks this against the tutorial's code). What still differs from a
Keras run: the random streams; real batches drawn per epoch without replacement (the Trainer's
order) rather than with replacement; and Adam's epsilon (Keras adds 1e-7 to sqrt(v) before bias
correction, PyTorch 1e-8 after it), which matters only for gradients near 1e-7.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, SampleOption, from_model_range, to_model_range
from genmodels.models.inpainting import GeneratorInversion
from genmodels.nets.linear import Linear

ARCHS = ("mlp", "dcgan")
LOSSES = ("bce", "wgan-gp", "hinge")
INITS = ("dcgan", "keras", "torch")
G_NORMS = ("batch", "none")
D_NORMS = ("none", "batch", "layer")


@dataclass
class GANConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), set from the dataset
    num_classes: int = 10  # set from the dataset; used when conditional
    arch: str = "dcgan"  # mlp | dcgan
    latent_dim: int = 100  # z ~ N(0, I)
    g_hidden: tuple[int, ...] = (256, 512, 1024)  # mlp G widths after z
    d_hidden: tuple[int, ...] = (512, 256)  # mlp D widths after the flattened image
    g_channels: tuple[int, ...] = (256, 128, 64)  # dcgan G widths at H / 2^(k-1), ..., H (each stage doubles H, W)
    d_channels: tuple[int, ...] = (64, 128, 256)  # dcgan D widths; every stage but the last halves H, W
    g_norm: str = "batch"  # batch | none
    d_norm: str = "none"  # none | batch (DCGAN) | layer (for WGAN-GP: the penalty is per image, Gulrajani Sec. 4)
    spectral_norm: bool = False  # spectrally normalise every D layer (Miyato et al. 2018)
    loss: str = "bce"  # bce (non-saturating) | wgan-gp | hinge
    gp_lambda: float = 10.0  # wgan-gp penalty weight
    n_critic: int = 1  # D updates per G update, each on a fresh batch
    leak: float = 0.2  # LeakyReLU slope (D; and G in the mlp arch)
    act: str = "leaky"  # mlp hidden layers of G and D: leaky (LeakyReLU(leak)) | relu
    output: str = "tanh"  # G's output: tanh (images in [-1, 1] for D) | sigmoid (images in [0, 1], as D sees data)
    bn_momentum: float = 0.1  # PyTorch convention, running = (1 - m) * running + m * batch: Keras momentum 0.8 is 0.2
    bn_eps: float = 1e-5  # Keras' default is 1e-3
    init: str = "dcgan"  # dcgan: N(0, 0.02) | keras: glorot-uniform weights, zero biases | torch: PyTorch's defaults
    keras_compat: bool = False  # the Keras tutorial's semantics where PyTorch's differ (module docstring)
    conditional: bool = False  # class-conditional: one-hot labels into G, a projection D

    def __post_init__(self) -> None:
        for key, value, valid in (
            ("arch", self.arch, ARCHS),
            ("loss", self.loss, LOSSES),
            ("init", self.init, INITS),
            ("g_norm", self.g_norm, G_NORMS),
            ("d_norm", self.d_norm, D_NORMS),
            ("act", self.act, ("leaky", "relu")),
            ("output", self.output, ("tanh", "sigmoid")),
        ):
            if value not in valid:
                raise unknown(f"gan {key}", value, valid)
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if self.n_critic < 1:
            raise ConfigError(f"model.n_critic must be >= 1, got {self.n_critic}")
        if self.gp_lambda < 0:
            raise ConfigError(f"model.gp_lambda must be >= 0, got {self.gp_lambda}")
        if not (0.0 < self.bn_momentum <= 1.0 and self.bn_eps > 0):
            raise ConfigError(
                f"model.bn_momentum must be in (0, 1] and bn_eps > 0, got {self.bn_momentum}, {self.bn_eps}"
            )
        if self.loss == "wgan-gp" and self.d_norm == "batch":
            raise ConfigError(
                "model.loss=wgan-gp penalises per-image gradients, which batch norm couples; "
                "use model.d_norm=layer or none"
            )
        if self.arch != "mlp" and (self.output != "tanh" or self.act != "leaky"):
            raise ConfigError("model.output and model.act choose the mlp arch's layers; the dcgan arch has its own")
        if self.keras_compat and (self.arch != "mlp" or self.loss != "bce"):
            raise ConfigError("model.keras_compat reproduces the Keras MLP tutorial; it needs arch=mlp and loss=bce")
        if self.conditional and self.num_classes < 2:
            raise ConfigError("model.conditional=true needs a labelled dataset with at least 2 classes")
        widths = self.g_hidden + self.d_hidden + self.g_channels + self.d_channels
        if not (self.g_hidden and self.d_hidden and self.g_channels and self.d_channels) or min(widths) < 1:
            raise ConfigError(
                "model.g_hidden, d_hidden, g_channels and d_channels must be non-empty lists of widths >= 1"
            )
        if self.arch == "dcgan":
            _, h, w = self.image_shape
            k = 2 ** (max(len(self.g_channels), len(self.d_channels)) - 1)
            if h != w or h % k:
                raise ConfigError(
                    f"dcgan needs square images with a side divisible by {k}, got {h}x{w}; "
                    f"resize with data.image_size or use fewer model.g_channels / d_channels stages"
                )


class KerasBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose moving variance follows Keras: updated with the biased batch variance.

    Both normalise a training batch by its biased variance; PyTorch's running_var then takes the
    unbiased one (a factor B / (B - 1), 3% at B = 32), Keras' moving_variance the biased one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        # PyTorch moves a copy (autograd keeps it) with the unbiased variance: copy = kept + m * var * B / (B - 1).
        # Undoing Bessel's correction from it is cheaper than a second pass over x for the biased variance.
        moved = self.running_var.clone()
        out = F.batch_norm(x, self.running_mean, moved, self.weight, self.bias, True, self.momentum, self.eps)
        with torch.no_grad():  # Keras: (1 - m) rv + m var_biased = rv (1 - m) / B + moved (B - 1) / B
            b = x.shape[0]
            self.running_var.mul_((1.0 - self.momentum) / b).add_(moved, alpha=(b - 1) / b)
            self.num_batches_tracked.add_(1)
        return out


def _norm(kind: str, width: int, config: GANConfig, dims: int) -> list[nn.Module]:
    if kind == "none":
        return []
    if kind == "layer":  # over (C, H, W) of each image
        return [nn.GroupNorm(1, width)]
    if dims == 1:
        cls = KerasBatchNorm1d if config.keras_compat else nn.BatchNorm1d
        return [cls(width, eps=config.bn_eps, momentum=config.bn_momentum)]
    return [nn.BatchNorm2d(width, eps=config.bn_eps, momentum=config.bn_momentum)]


def mlp_generator(config: GANConfig, z_in: int) -> nn.Sequential:
    """The tutorial's G: z_in -> g_hidden (Dense, LeakyReLU or ReLU, BatchNorm: Keras' order) -> C*H*W, tanh
    (or sigmoid)."""
    c, h, w = config.image_shape
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise((z_in, *config.g_hidden)):
        layers += [Linear(d_in, d_out), _act(config), *_norm(config.g_norm, d_out, config, 1)]
    out = nn.Sigmoid() if config.output == "sigmoid" else nn.Tanh()
    layers += [Linear(config.g_hidden[-1], c * h * w), out, nn.Unflatten(1, (c, h, w))]
    return nn.Sequential(*layers)


def _act(config: GANConfig) -> nn.Module:
    return nn.ReLU() if config.act == "relu" else nn.LeakyReLU(config.leak)


def mlp_discriminator_body(config: GANConfig) -> tuple[nn.Sequential, int]:
    """The tutorial's D without its last Dense: C*H*W -> d_hidden with LeakyReLU (or ReLU); returns (body, width)."""
    c, h, w = config.image_shape
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in itertools.pairwise((c * h * w, *config.d_hidden)):
        layers += [Linear(d_in, d_out), _act(config)]
    return nn.Sequential(*layers), config.d_hidden[-1]


def dcgan_generator(config: GANConfig, z_in: int) -> nn.Sequential:
    """DCGAN G (Radford et al. 2016, Fig. 1): project z to (g_channels[0], s0, s0), then stride-2
    transposed 4x4 convs doubling H, W with BatchNorm and ReLU, a 3x3 conv to C channels and tanh."""
    c, h, _ = config.image_shape
    ch = config.g_channels
    s0 = h // 2 ** (len(ch) - 1)
    bias = config.g_norm == "none"  # a bias before BatchNorm is cancelled by its mean
    layers: list[nn.Module] = [
        Linear(z_in, ch[0] * s0 * s0, bias=bias),
        nn.Unflatten(1, (ch[0], s0, s0)),
        *_norm(config.g_norm, ch[0], config, 2),
        nn.ReLU(),
    ]
    for a, b in itertools.pairwise(ch):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=bias), *_norm(config.g_norm, b, config, 2), nn.ReLU()]
    layers += [nn.Conv2d(ch[-1], c, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def dcgan_discriminator_body(config: GANConfig) -> tuple[nn.Sequential, int]:
    """DCGAN D: stride-2 4x4 convs halving H, W (a 3x3 conv for the last stage), LeakyReLU, no norm on
    the first layer (Radford et al. 2016, Sec. 3); returns (body ending in Flatten, feature width)."""
    c, h, _ = config.image_shape
    layers: list[nn.Module] = []
    d_in = c
    k = len(config.d_channels)
    for i, width in enumerate(config.d_channels):
        conv = nn.Conv2d(d_in, width, 3, 1, 1) if i == k - 1 else nn.Conv2d(d_in, width, 4, 2, 1)
        norm = _norm(config.d_norm, width, config, 2) if i > 0 else []
        layers += [conv, *norm, nn.LeakyReLU(config.leak)]
        d_in = width
    side = h // 2 ** (k - 1)
    return nn.Sequential(*layers, nn.Flatten()), d_in * side * side


class Discriminator(nn.Module):
    """D(x, y) = w . phi(x) + b [+ embed(y) . phi(x)]: a linear head on features phi, plus the
    projection term of a conditional D (Miyato and Koyama 2018, Eq. 3).

    Args:
        body: (B, C, H, W) in [-1, 1] -> (B, F) features phi(x).
        feature_dim: F.
        num_classes: K for a projection D, 0 for an unconditional one.
        bias: a constant in the head (a prior log-odds for bce). A critic's constant cancels in the
            wgan-gp loss and shifts every hinge margin alike (no gradient while all are active), so
            those losses go without one.
    """

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.body = body
        self.head = Linear(feature_dim, 1, bias=bias)
        self.embed = nn.Embedding(num_classes, feature_dim) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Raw outputs (B,): logits for ``bce``, critic values otherwise."""
        phi = self.body(x)
        out = self.head(phi).squeeze(1)
        if self.embed is not None:
            out = out + (self.embed(y) * phi).sum(1)
        return out


def init_weights(module: nn.Module, scheme: str) -> None:
    """Initialise conv / linear / embedding / norm weights: ``dcgan`` N(0, 0.02) with norm scales
    N(1, 0.02) (Radford et al. 2016, Sec. 4); ``keras`` glorot-uniform (Glorot and Bengio 2010) with zero
    biases, Keras' Dense and Conv2D default; ``torch`` leaves PyTorch's defaults."""
    if scheme == "torch":
        return
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            if scheme == "keras":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.xavier_uniform_(m.weight)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and scheme == "dcgan":
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def apply_spectral_norm(module: nn.Module) -> None:
    """Divide every conv / linear / embedding weight of ``module`` by its largest singular value,
    estimated by one power iteration per training forward (Miyato et al. 2018, Algorithm 1)."""
    targets = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.Embedding)]
    for m in targets:
        nn.utils.parametrizations.spectral_norm(m)


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None
) -> torch.Tensor:
    """The WGAN-GP penalty without lambda (Gulrajani et al. 2017, Algorithm 1, lines 6-7).

    Args:
        critic: (B, C, H, W), labels -> (B,).
        real, fake: (B, C, H, W) images in the critic's range.
        eps: (B, 1, 1, 1) interpolation weights in [0, 1].

    Returns:
        mean over the batch of (||grad_xhat critic(xhat)||_2 - 1)^2, xhat = eps * real + (1 - eps) * fake;
        differentiable in the critic's weights when gradients are on.
    """
    differentiable = torch.is_grad_enabled()
    with torch.enable_grad():  # the input gradient is needed even when only the value is wanted
        xhat = (eps * real.detach().float() + (1 - eps) * fake.detach().float()).requires_grad_(True)
        out = critic(xhat, y).float()
        (grad,) = torch.autograd.grad(out.sum(), xhat, create_graph=differentiable)
    norm = (grad.float().flatten(1).square().sum(1) + 1e-12).sqrt()  # the 1e-12 keeps sqrt's gradient finite at 0
    return (norm - 1.0).square().mean()


def truncated_normal(
    shape: tuple[int, ...], truncation: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """N(0, 1) draws conditioned on |z| <= truncation (the truncation trick, Brock et al. 2019).

    Inverse-CDF sampling of the truncated normal: the same distribution as resampling every |z| >
    truncation until none is left, but one uniform draw per entry and no loop (float64 keeps the
    tails exact).
    """
    if not (truncation > 0 and math.isfinite(truncation)):
        raise ConfigError(f"truncation must be a positive number of standard deviations, got {truncation}")
    lo = 0.5 * math.erfc(truncation / math.sqrt(2.0))  # Phi(-truncation)
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    z = torch.special.ndtri(lo + (1.0 - 2.0 * lo) * u)
    return z.clamp(-truncation, truncation).float()


class GAN(GeneratorInversion, nn.Module):
    """A GAN around separate generator and discriminator networks. It has no encoder: ``invert`` finds an
    image's code by fitting it (generator inversion), which ``genmodels edit``'s latent arithmetic and
    ``inpaint`` use (``models.inpainting``).

    Args:
        config: the GANConfig.
        generator: (B, latent_dim [+ num_classes]) -> (B, C, H, W) in [-1, 1].
        discriminator: a ``Discriminator``: (B, C, H, W) in [-1, 1], labels -> (B,).
    """

    def __init__(self, config: GANConfig, generator: nn.Module, discriminator: Discriminator) -> None:
        super().__init__()
        self.config = config
        self.generator = generator
        self.discriminator = discriminator
        # (batch, fakes with G's graph) from the last D loss, for the G loss on the same batch: see
        # ``reuses_fakes``. Never saved; dropped as soon as it is used.
        self._cached: tuple[Batch, torch.Tensor] | None = None

    n_critic = property(lambda self: self.config.n_critic)
    latent_dim = property(lambda self: self.config.latent_dim)
    conditional = property(lambda self: self.config.conditional)
    sample_options: ClassVar[dict[str, SampleOption]] = {
        "truncation": SampleOption(float, "draw z from N(0, I) truncated to this many standard deviations", minimum=0.0)
    }

    @property
    def critic_methods(self) -> tuple[str, ...]:
        """The loss methods of one D update, each followed by its own optimiser step (Trainer)."""
        if self.config.keras_compat:  # the tutorial's two train_on_batch calls: real, then fakes
            return ("discriminator_loss_real", "discriminator_loss_fake")
        return ("discriminator_loss",)

    @property
    def reuses_fakes(self) -> bool:
        """Whether the G update reuses the fakes of the D update before it, as the PyTorch DCGAN example
        does: one G forward per iteration instead of two (G has not changed in between, so the G loss
        is the same function; D is re-run with its new weights). Only with one D update per G update,
        and not for the Keras loop, whose G step draws fresh noise."""
        return self.config.n_critic == 1 and not self.config.keras_compat

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return self.generator.parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return self.discriminator.parameters()

    # ----------------------------------------------------------------- wiring

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.config.conditional:
            return None
        if y is None:
            raise ConfigError("this conditional GAN needs class labels; pass labels=... or train on a labelled dataset")
        return y

    def _to_range(self, x: torch.Tensor) -> torch.Tensor:
        """Data in [0, 1] as D sees it: [-1, 1] for a tanh G, unchanged for a sigmoid G."""
        return x if self.config.output == "sigmoid" else to_model_range(x)

    def generate(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """G(z, y): latents (B, latent_dim) -> images (B, C, H, W) in [-1, 1] ([0, 1] for a sigmoid G)."""
        y = self._labels(y)
        if y is not None:
            z = torch.cat([z, F.one_hot(y, self.config.num_classes).to(z.dtype)], 1)
        return self.generator(z)

    def _fakes_for_d(self, n: int, y: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """n fakes without gradients; with keras_compat drawn as Keras' ``predict`` does (G in inference mode)."""
        z = torch.randn(n, self.config.latent_dim, device=device)
        inference = self.config.keras_compat and self.generator.training
        # keras_compat's G is Linear / LeakyReLU / BatchNorm / Tanh: only its BatchNorm layers have a mode, so
        # only they are switched (cheaper than eval() and train() walking every module, twice per iteration).
        norms = [m for m in self.generator.modules() if isinstance(m, nn.BatchNorm1d)] if inference else []
        with torch.no_grad():
            for m in norms:
                m.training = False
            try:
                return self.generate(z, y)
            finally:
                for m in norms:
                    m.training = True

    def _real_term(self, d: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "bce":
            return F.softplus(-d).mean()  # -log sigmoid(d): BCE against label 1
        if self.config.loss == "hinge":
            return F.relu(1.0 - d).mean()
        return -d.mean()

    def _fake_term(self, d: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "bce":
            return F.softplus(d).mean()  # -log(1 - sigmoid(d)): BCE against label 0
        if self.config.loss == "hinge":
            return F.relu(1.0 + d).mean()
        return d.mean()

    def _d_mean(self, d: torch.Tensor) -> torch.Tensor:
        """What D(x) means to report: the probability of 'real' for bce, the raw value otherwise."""
        return (torch.sigmoid(d) if self.config.loss == "bce" else d).mean().detach()

    # ----------------------------------------------------------------- losses

    def discriminator_loss(self, batch: Batch) -> LossOutput:
        """One D loss on a real batch and as many fakes (module docstring for the formulas).

        Metrics: ``d_real`` / ``d_fake`` are the mean D(real) and D(fake) (probabilities for bce);
        wgan-gp adds ``gp`` and ``w_dist`` (the critic's estimate of the Wasserstein-1 distance).
        """
        real = self._to_range(batch.x)
        y = self._labels(batch.y)
        self._cached = None
        if self.reuses_fakes and self.training and torch.is_grad_enabled():
            fake = self.generate(torch.randn(len(real), self.config.latent_dim, device=real.device), y)
            self._cached = (batch, fake)
            fake = fake.detach()
        else:
            fake = self._fakes_for_d(len(real), y, real.device)
        if self.config.d_norm == "batch":  # separate passes: each batch normalised by its own statistics
            d_real, d_fake = self.discriminator(real, y).float(), self.discriminator(fake, y).float()
        else:  # one pass over both halves is the same function and faster
            yy = torch.cat([y, y]) if y is not None else None
            d_real, d_fake = self.discriminator(torch.cat([real, fake.to(real.dtype)]), yy).float().chunk(2)
        loss = self._real_term(d_real) + self._fake_term(d_fake)
        metrics = {"d_real": self._d_mean(d_real), "d_fake": self._d_mean(d_fake)}
        if self.config.loss == "wgan-gp":
            eps = torch.rand(len(real), 1, 1, 1, device=real.device)
            gp = gradient_penalty(self.discriminator, real, fake, eps, y)
            loss = loss + self.config.gp_lambda * gp
            metrics.update(gp=gp.detach(), w_dist=(d_real.mean() - d_fake.mean()).detach())
        return LossOutput(loss, metrics)

    def discriminator_loss_real(self, batch: Batch) -> LossOutput:
        """The real half of the D loss alone (keras_compat: its own optimiser step)."""
        d_real = self.discriminator(self._to_range(batch.x), self._labels(batch.y)).float()
        return LossOutput(self._real_term(d_real), {"d_real": self._d_mean(d_real)})

    def discriminator_loss_fake(self, batch: Batch) -> LossOutput:
        """The fake half of the D loss alone, on len(batch) fresh fakes (keras_compat: its own step)."""
        y = self._labels(batch.y)
        d_fake = self.discriminator(self._fakes_for_d(len(batch.x), y, batch.x.device), y).float()
        return LossOutput(self._fake_term(d_fake), {"d_fake": self._d_mean(d_fake)})

    def generator_loss(self, batch: Batch) -> LossOutput:
        """The G loss on len(batch) fakes (labels from the batch when conditional): those of the D loss
        on this same batch when ``reuses_fakes``, else fresh ones; D is frozen by the Trainer.
        Non-saturating for bce (Goodfellow et al. 2014, Sec. 3), -D(G(z)) otherwise."""
        y = self._labels(batch.y)
        cached, self._cached = self._cached, None
        if cached is not None and cached[0] is batch:
            fake = cached[1]
        else:
            fake = self.generate(torch.randn(len(batch.x), self.config.latent_dim, device=batch.x.device), y)
        d = self.discriminator(fake, y).float()
        loss = F.softplus(-d).mean() if self.config.loss == "bce" else -d.mean()
        return LossOutput(loss, {})

    # ----------------------------------------------------------------- sampling

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> images (B, C, H, W) in [0, 1] (the generator, as it is in its mode)."""
        out = self.generate(z, y).float()
        return out if self.config.output == "sigmoid" else from_model_range(out)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        truncation: float | None = None,
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] from z ~ N(0, I), G in inference mode (BatchNorm running stats).

        Args:
            labels: (n,) classes for a conditional GAN; drawn uniformly from ``generator`` when None.
            truncation: draw z from N(0, I) truncated to [-truncation, truncation] per coordinate
                (Brock et al. 2019): less variety, higher fidelity.
        """
        dev = next(self.generator.parameters()).device
        shape = (n, self.config.latent_dim)
        if truncation is None:
            z = torch.randn(shape, generator=generator, device=dev)
        else:
            z = truncated_normal(shape, float(truncation), generator, dev)
        if self.config.conditional and labels is None:
            labels = torch.randint(self.config.num_classes, (n,), generator=generator, device=dev)
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.decode(z, labels.to(dev) if labels is not None else None)
        finally:
            self.generator.train(was_training)


def build(config: GANConfig) -> GAN:
    """The GAN of ``config.arch`` with its generator and discriminator, initialised per ``config.init``."""
    cond = config.num_classes if config.conditional else 0
    z_in = config.latent_dim + cond
    if config.arch == "mlp":
        generator = mlp_generator(config, z_in)
        body, feat = mlp_discriminator_body(config)
    else:
        generator = dcgan_generator(config, z_in)
        body, feat = dcgan_discriminator_body(config)
    discriminator = Discriminator(body, feat, cond, bias=config.loss == "bce")
    init_weights(generator, config.init)
    init_weights(discriminator, config.init)
    if config.spectral_norm:
        apply_spectral_norm(discriminator)
    return GAN(config, generator, discriminator)
