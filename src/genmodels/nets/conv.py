"""Convolutional encoder and decoder stacks for small images (28x28, 32x32, or any size divisible
by 2 ** (len(channels) - 1)).

The encoder maps (B, C, H, W) to a flat feature vector; the decoder maps a flat vector back to
(B, C_out, H, W) unnormalised outputs. Each stage after the first halves (doubles) the resolution
with a 4x4 stride-2 (transposed) convolution, which is exact for even sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from genmodels.errors import ConfigError
from genmodels.nets.linear import Linear
from genmodels.nets.mlp import activation


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv3(act(conv3(act(x))))``, shape-preserving."""

    def __init__(self, channels: int, act: str = "silu") -> None:
        super().__init__()
        self.body = nn.Sequential(
            activation(act),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(act),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def bottom_size(image_shape: Sequence[int], n_down: int) -> tuple[int, int]:
    """Spatial size after ``n_down`` halvings; a ConfigError when the image does not divide."""
    _, h, w = image_shape
    f = 2**n_down
    if h % f or w % f:
        raise ConfigError(
            f"image size {h}x{w} is not divisible by {f} (needed by {n_down} downsampling stages); "
            f"resize the data (--set data.image_size=...) or use fewer conv channels stages"
        )
    return h // f, w // f


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_dim) features.

    Args:
        image_shape: (C, H, W) of the input.
        channels: width of each resolution stage; stage i > 0 starts with a stride-2 conv.
        blocks: residual blocks per stage.
        act: activation name.
    """

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], blocks: int = 0, act: str = "silu") -> None:
        super().__init__()
        h, w = bottom_size(image_shape, len(channels) - 1)
        layers: list[nn.Module] = [nn.Conv2d(image_shape[0], channels[0], 3, padding=1)]
        for i, c in enumerate(channels):
            if i > 0:
                layers += [activation(act), nn.Conv2d(channels[i - 1], c, 4, stride=2, padding=1)]
            layers += [ResBlock(c, act) for _ in range(blocks)]
        layers += [activation(act), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_dim = channels[-1] * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, in_dim) -> (B, out_channels, H, W) unnormalised outputs; the mirror of ConvEncoder.

    Args:
        in_dim: size of the input vector (latent, plus any conditioning).
        image_shape: (C, H, W) of the image being produced.
        channels: the encoder's stage widths, in the encoder's order (the decoder runs them reversed).
        out_channels: output channels (e.g. C for a mean, 2 * C for mean and log-scale).
        blocks: residual blocks per stage.
        act: activation name.
    """

    def __init__(
        self,
        in_dim: int,
        image_shape: Sequence[int],
        channels: Sequence[int],
        out_channels: int,
        blocks: int = 0,
        act: str = "silu",
    ) -> None:
        super().__init__()
        self.h, self.w = bottom_size(image_shape, len(channels) - 1)
        rev = list(reversed(channels))
        self.c0 = rev[0]
        self.fc = Linear(in_dim, rev[0] * self.h * self.w)
        layers: list[nn.Module] = []
        for i, c in enumerate(rev):
            if i > 0:
                layers += [activation(act), nn.ConvTranspose2d(rev[i - 1], c, 4, stride=2, padding=1)]
            layers += [ResBlock(c, act) for _ in range(blocks)]
        layers += [activation(act), nn.Conv2d(rev[-1], out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.c0, self.h, self.w))
