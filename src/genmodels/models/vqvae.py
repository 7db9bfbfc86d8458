"""VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

An encoder maps the image to a grid of vectors (H / 2^downsample on each side: 7x7 for 28x28 images), each
replaced by its nearest entry of a codebook of ``codebook_size`` vectors; a decoder maps the quantised grid
back to the image. Gradients pass the quantisation straight through (z_e + sg(z_q - z_e)); the encoder is
pulled towards its codes by the commitment loss beta ||z_e - sg(z_q)||^2 (their Eq. 3). The codebook is not
trained by gradients but as exponential moving averages of the encoder outputs assigned to each code (their
Appendix A.1, with Laplace smoothing of the counts), and a code that falls out of use (its moving count
below ``restart_below``) is restarted at a random encoder output of the current batch, so the codebook
stays in use. Training logs the batch's codebook perplexity exp(H(code histogram)), the share of codes
used, and the restarts.

Networks (their Sec. 4.1, scaled down): ``downsample`` strided 4x4 convolutions (ReLU), a 3x3 convolution,
``res_blocks`` residual blocks (ReLU, 3x3 to ``res_channels``, ReLU, 1x1 back), ReLU and a 1x1 projection
to ``code_dim``; the decoder mirrors it with transposed convolutions.

Without a prior, ``sample`` draws each code independently from the codebook's usage frequencies (a unigram
prior) and decodes: the baseline a learned autoregressive prior over the code grid has to beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, SampleOption

MAX_CODES = 256  # codes are stored as uint8 grids for a prior's training data


@dataclass
class VQVAEConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), set from the dataset
    num_classes: int = 10  # set from the dataset (unused)
    channels: tuple[int, ...] = (64, 128)  # widths of the strided stages (one per halving)
    res_blocks: int = 2
    res_channels: int = 32
    code_dim: int = 32
    codebook_size: int = 128
    commitment: float = 0.25  # beta of their Eq. 3
    ema_decay: float = 0.99  # codebook moving averages
    restart_below: float = 1.0  # restart a code whose moving count (assignments per batch) falls below this
    recon_loss: str = "bce"  # bce (sigmoid outputs) | mse

    def __post_init__(self) -> None:
        if self.recon_loss not in ("bce", "mse"):
            raise unknown("vq-vae recon_loss", self.recon_loss, ["bce", "mse"])
        if not self.channels:
            raise ConfigError("model.channels must name at least one strided stage")
        factor = 2 ** len(self.channels)
        _, h, w = self.image_shape
        if h % factor or w % factor:
            raise ConfigError(
                f"{h}x{w} images do not halve {len(self.channels)} times; use as many model.channels as "
                f"halvings that divide the image size (28x28: 2, giving a 7x7 code grid)"
            )
        if not 2 <= self.codebook_size <= MAX_CODES:
            raise ConfigError(f"model.codebook_size must be in 2..{MAX_CODES}, got {self.codebook_size}")
        if self.code_dim < 1 or self.res_channels < 1 or self.res_blocks < 0:
            raise ConfigError("model.code_dim and model.res_channels must be >= 1, model.res_blocks >= 0")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.commitment < 0 or self.restart_below < 0:
            raise ConfigError("model.commitment and model.restart_below must be >= 0")

    @property
    def grid(self) -> tuple[int, int]:
        """The code grid (h, w)."""
        f = 2 ** len(self.channels)
        return self.image_shape[1] // f, self.image_shape[2] // f


class Residual(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def _encoder(c: VQVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = c.image_shape[0]
    for width in c.channels:
        layers += [nn.Conv2d(prev, width, 4, stride=2, padding=1), nn.ReLU()]
        prev = width
    layers.append(nn.Conv2d(prev, prev, 3, padding=1))
    layers += [Residual(prev, c.res_channels) for _ in range(c.res_blocks)]
    layers += [nn.ReLU(), nn.Conv2d(prev, c.code_dim, 1)]
    return nn.Sequential(*layers)


def _decoder(c: VQVAEConfig) -> nn.Sequential:
    top = c.channels[-1]
    layers: list[nn.Module] = [nn.Conv2d(c.code_dim, top, 3, padding=1)]
    layers += [Residual(top, c.res_channels) for _ in range(c.res_blocks)]
    widths = [*reversed(c.channels[:-1]), c.image_shape[0]]
    prev = top
    for width in widths:
        layers += [nn.ReLU(), nn.ConvTranspose2d(prev, width, 4, 2, 1)]
        prev = width
    return nn.Sequential(*layers)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Codebook(nn.Module):
    """The EMA codebook: nearest-code quantisation, moving-average updates and dead-code restarts."""

    def __init__(self, size: int, dim: int, decay: float, restart_below: float) -> None:
        super().__init__()
        self.decay, self.restart_below = decay, restart_below
        embed = torch.randn(size, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("ema_count", torch.ones(size))
        self.register_buffer("ema_sum", embed.clone())

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of flat (N, dim), by squared Euclidean distance."""
        e = self.embed
        d = flat.square().sum(1, keepdim=True) - 2.0 * flat @ e.t() + e.square().sum(1)[None]
        return d.argmin(1)

    @torch.no_grad()
    def update(self, flat: torch.Tensor, idx: torch.Tensor) -> int:
        """One moving-average step from this batch's assignments; returns the number of codes restarted."""
        size = len(self.embed)
        onehot = F.one_hot(idx, size).to(flat.dtype)
        count, total = onehot.sum(0), onehot.t() @ flat
        if _distributed():
            torch.distributed.all_reduce(count)
            torch.distributed.all_reduce(total)
        self.ema_count.mul_(self.decay).add_(count, alpha=1.0 - self.decay)
        self.ema_sum.mul_(self.decay).add_(total, alpha=1.0 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + 1e-5) / (n + size * 1e-5) * n  # Laplace smoothing: no code divides by 0
        self.embed.copy_(self.ema_sum / smoothed[:, None])
        dead = (self.ema_count < self.restart_below).nonzero()[:, 0]
        if len(dead):
            picks = flat[torch.randint(len(flat), (len(dead),), device=flat.device)]
            if _distributed():
                torch.distributed.broadcast(picks, 0)  # every rank restarts with the same vectors
            self.embed[dead] = picks
            self.ema_sum[dead] = picks
            self.ema_count[dead] = 1.0
        return len(dead)


class VQVAE(nn.Module):
    """Encoder, EMA codebook, decoder (module docstring)."""

    conditional = False
    sample_options: ClassVar[dict[str, SampleOption]] = {}

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        self.codebook = Codebook(config.codebook_size, config.code_dim, config.ema_decay, config.restart_below)

    def _quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_e (B, D, h, w), codes (B, h, w), z_q (B, D, h, w)) of images x in [0, 1]."""
        z_e = self.encoder(x * 2.0 - 1.0).float()
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        idx = self.codebook.nearest(flat)
        z_q = self.codebook.embed[idx].view(b, h, w, d).permute(0, 3, 1, 2)
        return z_e, idx.view(b, h, w), z_q

    def _decode_logits(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def _output(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.sigmoid(logits) if self.config.recon_loss == "bce" else (logits + 1.0) * 0.5

    def loss(self, batch: Batch) -> LossOutput:
        """Reconstruction (per pixel) + beta x commitment (per code element); updates the codebook in training."""
        x = batch.x
        z_e, codes, z_q = self._quantise(x)
        logits = self._decode_logits(z_e + (z_q - z_e).detach()).float()  # straight through
        if self.config.recon_loss == "bce":
            recon = F.binary_cross_entropy_with_logits(logits, x)
        else:
            recon = F.mse_loss(logits, x * 2.0 - 1.0)
        commit = F.mse_loss(z_e, z_q.detach())
        restarts = 0
        if self.training:
            flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])
            restarts = self.codebook.update(flat, codes.flatten())
        hist = torch.bincount(codes.flatten(), minlength=self.config.codebook_size).float()
        p = hist / hist.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
        with torch.no_grad():
            mse = F.mse_loss(self._output(logits), x)
        return LossOutput(
            recon + self.config.commitment * commit,
            {
                "recon": recon.detach(),
                "mse": mse,
                "commit": commit.detach(),
                "perplexity": perplexity,
                "codes_used": (hist > 0).float().mean(),
                "restarts": torch.tensor(float(restarts)),
            },
        )

    @torch.no_grad()
    def encode_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> code indices (B, h, w), int64."""
        return self._quantise(x)[1]

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices (B, h, w) -> images (B, C, H, W) in [0, 1]."""
        if codes.min() < 0 or codes.max() >= self.config.codebook_size:
            raise ConfigError(f"codes must be in 0..{self.config.codebook_size - 1}")
        z_q = self.codebook.embed[codes].permute(0, 3, 1, 2)
        return self._output(self._decode_logits(z_q)).clamp(0.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Encode, quantise and decode: (B, C, H, W) in [0, 1] -> the same shape."""
        return self.decode_codes(self.encode_codes(x))

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n images from independent codes drawn by the codebook's usage frequencies (no learned prior)."""
        h, w = self.config.grid
        p = self.codebook.ema_count.float().clamp(min=0) + 1e-12
        codes = torch.multinomial(p / p.sum(), n * h * w, replacement=True, generator=generator)
        return self.decode_codes(codes.view(n, h, w).to(self.codebook.embed.device))


def build(config: VQVAEConfig) -> VQVAE:
    return VQVAE(config)
