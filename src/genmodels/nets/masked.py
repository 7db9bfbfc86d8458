"""Causally masked convolutions for autoregressive image models (van den Oord et al. 2016a, Sec. 3.4).

Pixels are generated in raster order (row by row, left to right) and, within a pixel, colour channel
by colour channel (R, then G, then B). A masked kernel sees every tap before its centre in raster
order and none after; at the centre it sees only the colour groups a feature may depend on:

- mask ``A`` (the first layer): output group g sees input groups < g, so a prediction never sees the
  value it predicts (for 1-channel images the centre is closed altogether);
- mask ``B`` (every later layer): output group g sees input groups <= g.

Feature channels are split into as many colour groups as the image has channels, in contiguous
blocks (``channel_groups``), so the R -> G -> B order holds through every layer (their Fig. 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError


def channel_groups(n: int, groups: int) -> torch.Tensor:
    """The colour group of each of ``n`` channels: contiguous, near-equal blocks ``i * groups // n``.

    Args:
        n: number of channels (>= groups).
        groups: number of colour channels of the image (1 or 3).

    Returns:
        int64 (n,) with values in 0..groups-1, non-decreasing.
    """
    if n < groups:
        raise ConfigError(f"{n} feature channels cannot carry {groups} colour groups; use at least {groups} channels")
    return torch.arange(n) * groups // n


def causal_mask(
    out_groups: torch.Tensor,
    in_groups: torch.Tensor,
    kernel: tuple[int, int],
    center: tuple[int, int],
    mask_type: str,
) -> torch.Tensor:
    """The 0/1 mask of a causal kernel, shaped like a conv weight (out, in, kh, kw).

    Args:
        out_groups: (out,) colour group of each output channel.
        in_groups: (in,) colour group of each input channel.
        kernel: (kh, kw).
        center: (row, col) of the tap that lies on the output pixel.
        mask_type: "A" (centre: earlier groups only) or "B" (centre: earlier or same group).
    """
    if mask_type not in ("A", "B"):
        raise ConfigError(f"mask type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel
    cy, cx = center
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    mask[:, :, :cy, :] = 1.0  # rows above the centre
    mask[:, :, cy, :cx] = 1.0  # the centre row, left of the centre
    g_out, g_in = out_groups[:, None], in_groups[None, :]
    mask[:, :, cy, cx] = (g_in < g_out if mask_type == "A" else g_in <= g_out).float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution with a causal mask on its kernel (weights outside the mask are multiplied by 0).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: int or (kh, kw).
        mask_type: "A" or "B" (module docstring).
        colors: colour channels of the image (1 or 3); features are grouped with ``channel_groups``.
        center: the centre tap (default: the middle of the kernel).
        out_groups: explicit (out,) groups, for a layer whose outputs are two gated halves.
        in_groups: explicit (in,) groups (the image itself: ``arange(colors)``).
        padding: passed to ``nn.Conv2d``.

    A mask that is all ones (a 1x1 type-B conv on a 1-channel image) is dropped, so the layer costs
    the same as a plain convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        mask_type: str,
        colors: int = 1,
        *,
        center: tuple[int, int] | None = None,
        out_groups: torch.Tensor | None = None,
        in_groups: torch.Tensor | None = None,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding)
        kh, kw = self.kernel_size
        center = center if center is not None else (kh // 2, kw // 2)
        og = out_groups if out_groups is not None else channel_groups(out_channels, colors)
        ig = in_groups if in_groups is not None else channel_groups(in_channels, colors)
        mask = causal_mask(og, ig, (kh, kw), center, mask_type)
        self.mask_type = mask_type
        # Not persistent: the mask is a function of the config, so checkpoints hold weights only.
        self.register_buffer("mask", None if bool(mask.all()) else mask, persistent=False)

    def masked_weight(self) -> torch.Tensor:
        """The kernel as applied: weight * mask, (out, in, kh, kw)."""
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Shift a (B, C, H, W) map down one row, zeros entering at the top: row r then holds row r - 1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2]]


def kernel_rows(weight: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """A kxk convolution's weight (out, in, kh, kw) as one matrix per kernel row that is not all zero
    (a causal mask zeroes the rows below the centre): (row, (kw * in, out)), ordered as a channels-last
    window row is laid out (column, then channel)."""
    kh, kw = weight.shape[2:]
    used = [i for i in range(kh) if bool(weight[:, :, i].any())] or [kh // 2]  # all zero: one row of zeros
    return [(i, weight[:, :, i].permute(2, 1, 0).reshape(kw * weight.shape[1], -1)) for i in used]


def conv_at(
    cache: torch.Tensor, rows: list[tuple[int, torch.Tensor]], bias: torch.Tensor | None, r: int, col: int, kw: int
) -> torch.Tensor:
    """A convolution's output at one position, (B, out), from a channels-last padded input cache
    (B, H + 2p, W + 2p, in) and ``kernel_rows``: the window's top-left corner is (r, col). Each kernel
    row of the window is k * in contiguous numbers per image, which the matrix product reads in place."""
    b = cache.shape[0]
    (i, m), rest = rows[0], rows[1:]
    window = cache[:, r + i, col : col + kw].reshape(b, -1)
    out = torch.addmm(bias, window, m) if bias is not None else window @ m
    for i, m in rest:
        out.addmm_(cache[:, r + i, col : col + kw].reshape(b, -1), m)
    return out
