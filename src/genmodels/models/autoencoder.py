"""Deterministic autoencoders: the classic MLP autoencoder (784-128-64-32-16-8-4-2 and its mirror)
and a conv autoencoder.

An autoencoder has no prior, so to ``sample`` it keeps running estimates of the mean and covariance
of its training codes (updated inside ``loss``, like BatchNorm's running statistics) and decodes
draws from that Gaussian: the ex-post density estimate of Ghosh et al. 2020 ("From variational to
deterministic autoencoders", Sec. 4), in its simplest form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, SampleOption
from genmodels.models.inpainting import LatentInpainting, gaussian_log_prior
from genmodels.nets import ConvDecoder, ConvEncoder, mlp
from genmodels.nets.linear import Linear


@dataclass
class AEConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), set from the dataset
    num_classes: int = 10  # set from the dataset (unused by the AE itself)
    arch: str = "mlp"  # mlp | conv
    latent_dim: int = 2
    hidden: tuple[int, ...] = (128, 64, 32, 16, 8, 4)  # mlp widths between the image and the code
    channels: tuple[int, ...] = (32, 64, 128)  # conv stage widths; each stage after the first halves H, W
    blocks: int = 0  # conv residual blocks per stage
    act: str = "relu"
    recon_loss: str = "bce"  # bce (sigmoid outputs, per-pixel cross-entropy) | mse
    code_momentum: float = 0.01  # running code statistics: new = (1 - m) * old + m * batch

    def __post_init__(self) -> None:
        if self.arch not in ("mlp", "conv"):
            raise unknown("autoencoder arch", self.arch, ["mlp", "conv"])
        if self.recon_loss not in ("bce", "mse"):
            raise unknown("autoencoder recon_loss", self.recon_loss, ["bce", "mse"])
        if self.latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {self.latent_dim}")
        if not 0 < self.code_momentum <= 1:
            raise ConfigError(f"model.code_momentum must be in (0, 1], got {self.code_momentum}")


class Autoencoder(LatentInpainting, nn.Module):
    """``x -> z = encoder(x) -> x_hat = sigmoid(decoder(z))``, trained on reconstruction alone.

    Args:
        config: the AEConfig.
        encoder: (B, C, H, W) in [0, 1] -> (B, latent_dim).
        decoder: (B, latent_dim) -> (B, C, H, W) logits.
    """

    conditional = False
    sample_options: ClassVar[dict[str, SampleOption]] = {}

    def __init__(self, config: AEConfig, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.decoder = decoder
        d = config.latent_dim
        self.register_buffer("code_mean", torch.zeros(d))
        self.register_buffer("code_cov", torch.eye(d))

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> codes (B, latent_dim); ``y`` is ignored (not conditional)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Codes (B, latent_dim) -> images (B, C, H, W) in [0, 1]; ``y`` is ignored."""
        return torch.sigmoid(self.decoder(z))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) up to a constant under the Gaussian fitted to the training codes (what ``sample`` draws)."""
        return gaussian_log_prior(z, self.code_mean, self.code_cov)

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x))

    def loss(self, batch: Batch) -> LossOutput:
        x = batch.x
        z = self.encoder(x)
        logits = self.decoder(z)
        if self.config.recon_loss == "bce":
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        else:
            rec = (torch.sigmoid(logits) - x).square().flatten(1).sum(1)
        if self.training:
            self._update_code_stats(z.detach().float())
        loss = rec.mean()
        return LossOutput(loss, {"recon": loss.detach()})

    @torch.no_grad()
    def _update_code_stats(self, z: torch.Tensor) -> None:
        m = self.config.code_momentum
        mean = z.mean(0)
        zc = z - mean
        with torch.autocast(z.device.type, enabled=False):  # float32 statistics even under bf16 autocast
            cov = zc.T @ zc / max(len(z) - 1, 1)
        self.code_mean.lerp_(mean, m)
        self.code_cov.lerp_(cov, m)

    @torch.no_grad()
    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode ``n`` draws from the Gaussian fitted to the training codes; (n, C, H, W) in [0, 1]."""
        d = self.config.latent_dim
        dev = self.code_mean.device
        eps = torch.randn(n, d, generator=generator, device=dev)
        # Cholesky of the running covariance, with jitter so a degenerate code never fails.
        chol = torch.linalg.cholesky(self.code_cov + 1e-5 * torch.eye(d, device=dev))
        return self.decode(self.code_mean + eps @ chol.T)


def build(config: AEConfig) -> Autoencoder:
    """The autoencoder of ``config.arch`` with its encoder and decoder networks."""
    c, h, w = config.image_shape
    if config.arch == "mlp":
        dims = [c * h * w, *config.hidden, config.latent_dim]
        encoder: nn.Module = nn.Sequential(nn.Flatten(), mlp(dims, config.act))
        decoder: nn.Module = nn.Sequential(mlp(dims[::-1], config.act), nn.Unflatten(1, (c, h, w)))
    else:
        conv = ConvEncoder(config.image_shape, config.channels, config.blocks, config.act)
        encoder = nn.Sequential(conv, Linear(conv.out_dim, config.latent_dim))
        decoder = ConvDecoder(config.latent_dim, config.image_shape, config.channels, c, config.blocks, config.act)
    return Autoencoder(config, encoder, decoder)
