"""The networks of image-to-image translation: the pix2pix U-Net generator, the CycleGAN ResNet generator and
the PatchGAN discriminator (Isola et al. 2017, Sec. 3.2 and App. 6.1.1-6.1.2; Zhu et al. 2017, App. 7.2).

Sized for CPU budgets: a base width of 32 instead of 64, and as many 2x down-samplings as the image size
allows (to 2x2 at most; 28 px: two, to 7x7) rather than the paper's eight to 1x1 at 256 px.
"""

from __future__ import annotations

import torch
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """instance (affine; CycleGAN, and pix2pix at batch size 1) | batch | none."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def halvings(size: int, limit: int) -> int:
    """How many times a size-px image can be halved exactly while staying at least 2 px, at most ``limit``."""
    k = 0
    while k < limit and size % 2 == 0 and size // 2 >= 2:
        size //= 2
        k += 1
    return k


class UNetGenerator(nn.Module):
    """pix2pix's U-Net: 4x4 stride-2 convs down (LeakyReLU 0.2, norm but on the first and innermost), 4x4
    stride-2 transposed convs up (ReLU, norm, dropout 0.5 on the three innermost), each level's encoder
    features concatenated to its decoder input, tanh out. (B, C_in, H, W) -> (B, C_out, H, W) in [-1, 1]."""

    def __init__(self, c_in: int, c_out: int, size: int, width: int, max_depth: int, norm: str, dropout: float) -> None:
        super().__init__()
        depth = halvings(size, max_depth)
        if depth < 1:
            raise ValueError(f"a U-Net needs an even image size of at least 4 px, got {size}")
        widths = [min(width * 2**i, width * 8) for i in range(depth)]
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in if i == 0 else widths[i - 1], w, 4, 2, 1, bias=i == 0 or i == depth - 1))
            if 0 < i < depth - 1:
                layers.append(norm_layer(norm, w))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            c_from = widths[i] if i == depth - 1 else 2 * widths[i]
            if i == 0:
                layers = [nn.ReLU(), nn.ConvTranspose2d(c_from, c_out, 4, 2, 1), nn.Tanh()]
            else:
                layers = [nn.ReLU(), nn.ConvTranspose2d(c_from, widths[i - 1], 4, 2, 1, bias=False)]
                layers.append(norm_layer(norm, widths[i - 1]))
                if dropout > 0 and i >= depth - 3:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.up[0](skips.pop())
        for block in self.up[1:]:
            x = block(torch.cat([x, skips.pop()], dim=1))
        return x


class ResBlock(nn.Module):
    def __init__(self, c: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3, bias=False),
            norm_layer(norm, c),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3, bias=False),
            norm_layer(norm, c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetGenerator(nn.Module):
    """CycleGAN's generator (Johnson et al. 2016's layout): c7s1-w, d2w, d4w, ``blocks`` residual blocks,
    u2w, uw, c7s1-C_out with tanh. Needs H and W divisible by 4."""

    def __init__(self, c_in: int, c_out: int, width: int, blocks: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(c_in, width, 7, bias=False)]
        layers += [norm_layer(norm, width), nn.ReLU()]
        for w in (width, 2 * width):
            layers += [nn.Conv2d(w, 2 * w, 3, 2, 1, bias=False), norm_layer(norm, 2 * w), nn.ReLU()]
        layers += [ResBlock(4 * width, norm) for _ in range(blocks)]
        for w in (4 * width, 2 * width):
            layers += [nn.ConvTranspose2d(w, w // 2, 3, 2, 1, output_padding=1, bias=False)]
            layers += [norm_layer(norm, w // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, c_out, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017, Sec. 3.2.2): ``layers`` 4x4 stride-2 convs (widths w, 2w, ... up to 8w;
    no norm on the first), one 4x4 stride-1 conv, and a 4x4 stride-1 conv to one logit per patch.
    Receptive field: 16 px for one layer, 34 for two, 70 for three (the paper's 70x70 PatchGAN).
    (B, C_in, H, W) -> (B, 1, H', W') raw scores."""

    def __init__(self, c_in: int, width: int, layers: int, norm: str) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(c_in, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = width
        for i in range(1, layers + 1):
            w = min(width * 2**i, width * 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(c, w, 4, stride, 1, bias=norm == "none"), norm_layer(norm, w), nn.LeakyReLU(0.2)]
            c = w
        mods.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
