"""A small U-Net denoiser for 28x28 and 32x32 images (Ho et al. 2020, Appendix B, scaled down).

Levels of ``channels[i]`` features at resolution H / 2^i, each with ``blocks`` residual blocks on the
way down and ``blocks + 1`` on the way up (one more to take the downsampling conv's skip), joined
by skip connections; a middle of residual block, self-attention, residual block at the lowest
resolution (7x7 for 28x28 inputs, 8x8 for 32x32). Residual blocks use GroupNorm and SiLU and take
the timestep through a sinusoidal embedding (Vaswani et al. 2017) and an MLP, as a per-channel
scale and shift of the second normalisation (Nichol and Dhariwal 2021's AdaGN). A class-conditional
U-Net adds a learned class embedding to the time embedding; class index ``num_classes`` is the null
class of classifier-free guidance (Ho and Salimans 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError
from genmodels.nets.linear import Linear


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps: [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim/2)).

    Returns:
        (B, dim) float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``groups`` groups, or fewer when ``channels`` does not split into that many."""
    g = math.gcd(channels, groups)
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    """GN-SiLU-conv, then GN scaled and shifted by the embedding, SiLU-dropout-conv, plus a skip.

    Args:
        c_in, c_out: channels in and out.
        emb_dim: the time (+ class) embedding width.
        groups: GroupNorm groups.
        dropout: dropout before the second conv.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out, groups)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (B, c_in, H, W), emb (B, emb_dim) -> (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H x W positions, with a residual connection."""

    def __init__(self, channels: int, groups: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ConfigError(f"model.heads={heads} must divide the lowest-level channels {channels}")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each (B, heads, HW, C / heads)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """The denoiser eps_theta(x_t, t, y) (or v_theta): (B, C, H, W) -> (B, C, H, W).

    Args:
        image_shape: (C, H, W); H and W must divide by 2^(len(channels) - 1).
        channels: feature widths per level, e.g. (32, 64, 128); level i works at H / 2^i.
        blocks: residual blocks per level on the way down (one more on the way up).
        attention: self-attention in the middle, at the lowest resolution.
        heads: attention heads.
        groups: GroupNorm groups.
        dropout: dropout in the residual blocks.
        num_classes: > 0 adds a class embedding with num_classes + 1 rows (the last is the null class).
        patch: > 1 folds patch x patch pixels into channels first (pixel unshuffle) and unfolds them at
            the end, so the U-Net runs at H / patch: about patch^2 times fewer FLOPs at the top level.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (32, 64, 128),
        blocks: int = 1,
        attention: bool = True,
        heads: int = 1,
        groups: int = 8,
        dropout: float = 0.0,
        num_classes: int = 0,
        patch: int = 1,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        f = patch * 2 ** (len(channels) - 1)
        if h % f or w % f:
            raise ConfigError(
                f"a U-Net with {len(channels)} levels and patch {patch} needs image sides divisible by {f}, "
                f"got {h}x{w}; use fewer model.channels, a smaller model.patch or set data.image_size"
            )
        self.patch = patch
        c = c * patch * patch
        ch0 = channels[0]
        self.emb_dim = emb_dim = 4 * ch0
        self.time_mlp = nn.Sequential(Linear(ch0, emb_dim), nn.SiLU(), Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.conv_in = nn.Conv2d(c, ch0, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch0]
        cur = ch0
        for i, ch in enumerate(channels):
            for _ in range(blocks):
                self.down.append(ResBlock(cur, ch, emb_dim, groups, dropout))
                cur = ch
                skips.append(cur)
            if i < len(channels) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, emb_dim, groups, dropout)
        self.mid_attn = Attention(cur, groups, heads) if attention else None
        self.mid2 = ResBlock(cur, cur, emb_dim, groups, dropout)
        self.up = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch, emb_dim, groups, dropout))
                cur = ch
            if i > 0:
                self.up.append(Upsample(cur))
        self.norm_out = group_norm(cur, groups)
        self.conv_out = nn.Conv2d(cur, c, 3, padding=1)
        # A zero output layer: the first prediction is 0 (the mean of eps and of v). Only this layer is
        # zeroed, so every other parameter still gets a gradient from the second step on.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise (or v) of x_t.

        Args:
            x: (B, C, H, W) noisy images x_t, about unit scale.
            t: (B,) integer timesteps in 0..T-1.
            y: (B,) class labels, num_classes for the null class; None = null class for all.
        """
        emb = self.time_mlp(timestep_embedding(t, self.conv_in.out_channels).to(x.dtype))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((len(x),), self.num_classes, device=x.device, dtype=torch.long)
            emb = emb + self.class_emb(y)
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid1(h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv (avoids transposed-conv checkerboards)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
