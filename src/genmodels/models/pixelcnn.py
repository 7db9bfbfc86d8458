"""Autoregressive image models with an exact likelihood: PixelCNN (van den Oord et al. 2016a, "Pixel
Recurrent Neural Networks"), Gated PixelCNN without the blind spot (van den Oord et al. 2016b,
"Conditional Image Generation with PixelCNN Decoders") and its class-conditional form.

The image is factorised in raster order, and within a pixel colour by colour (2016a, Eqs. 1-2):

    p(x) = prod_i p(x_{i,R} | x_<i) p(x_{i,G} | x_<i, x_{i,R}) p(x_{i,B} | x_<i, x_{i,R}, x_{i,G})

so log p(x) is a sum of per-pixel terms computed in one pass, and the test NLL is exact.

Networks (``arch``):
- ``masked``: a 7x7 mask-A convolution, residual blocks around masked 3x3 (mask B) convolutions
  (2016a, Fig. 5). Stacked masked kernels leave a blind spot above-right of each pixel.
- ``gated``: a vertical stack (everything above the current row) and a horizontal stack (the
  current row, left of the pixel) with gated units tanh(W_f * x) . sigmoid(W_g * x) (2016b, Eq. 2)
  and a 1x1 link from the vertical to the horizontal stack: no blind spot (2016b, Fig. 2).
  Class conditioning adds a learned per-class bias inside every gate (2016b, Eq. 4).

Outputs (``output``), per pixel and colour channel:
- ``bernoulli`` on binarised images: ``binarize: dynamic`` resamples x ~ Bern(grey level) every batch
  (the binarised-MNIST protocol; test images are binarised once with the evaluation seed);
  ``static`` thresholds at 0.5 once and for all (a fixed binarisation).
- ``softmax``: a 256-way categorical over the 8-bit levels (2016a, Sec. 5.3).
- ``logistic``: a mixture of ``mixtures`` discretised logistics (Salimans et al. 2017, Eq. 2): far
  fewer output parameters than the softmax and ordinal by construction, so it learns faster.

RGB images use R -> G -> B channel masking in every layer (``nets.masked``).

Sampling is batched (n images at once). ``sampler="naive"`` runs the whole network once per pixel and
channel; ``sampler="fast"`` (the default) computes only what changes: for the gated network it keeps
every layer's vertical-stack rows and horizontal-stack pixels in caches and evaluates one row of the
vertical stack per image row and one pixel of the horizontal stack per pixel (exact: both samplers
draw the same images from the same generator); for the masked network it runs the network only on
the rows inside the receptive field of the pixel being drawn.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, SampleOption
from genmodels.models.likelihoods import bernoulli_log_prob, discretized_logistic_mixture_log_prob
from genmodels.nets.masked import MaskedConv2d, channel_groups, conv_at, down_shift, kernel_rows

ARCHS = ("gated", "masked", "snail")
OUTPUTS = ("logistic", "softmax", "bernoulli")
SAMPLERS = ("fast", "naive")

DrawFn = Callable[[int, torch.Tensor], torch.Tensor]  # (colour, (B, C * P) outputs at a pixel) -> (B,) values

# Multiply-adds of one sampling op below which a second CPU thread costs more than it gains (measured:
# sampling 6 RGB images from a tiny model took 90 CPU-seconds on 2 busy cores, 1 on one thread).
SMALL_OP = 1 << 22


@dataclass
class PixelCNNConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), set from the dataset
    num_classes: int = 10  # set from the dataset; used when conditional
    arch: str = "gated"  # gated (vertical + horizontal stacks, no blind spot) | masked (plain PixelCNN) | snail
    channels: int = 64  # feature channels: gated, per stack; masked, the residual stream (blocks run at half)
    layers: int = 8  # gated layers incl. the first (gated) / residual blocks (masked) / attention blocks (snail)
    kernel: int = 3  # kernel size of the hidden layers (odd)
    first_kernel: int = 7  # kernel size of the first, mask-A layer (odd)
    head_channels: int = 0  # width of the 1x1 output layers; 0 = channels
    output: str = "logistic"  # logistic (mixture) | softmax (256-way, as the papers) | bernoulli (binarised images)
    levels: int = 256  # softmax: values 0..levels-1 of the stored uint8 data (a VQ-VAE prior: its codebook size)
    mixtures: int = 5  # components of the discretised logistic mixture
    binarize: str = "dynamic"  # bernoulli only: dynamic (resample every batch) | static (threshold 0.5)
    conditional: bool = False  # condition on the class label (2016b, Eq. 4)
    res_blocks: int = 2  # snail: causal gated residual blocks before each attention block
    attention_heads: int = 1  # snail: heads of each causal attention
    attention_channels: int = 0  # snail: width of queries / keys / values; 0 = channels // 2
    dropout: float = 0.0  # snail: dropout inside the gated residual blocks (training only)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise unknown("pixelcnn arch", self.arch, ARCHS)
        if self.output not in OUTPUTS:
            raise unknown("pixelcnn output", self.output, OUTPUTS)
        if self.binarize not in ("dynamic", "static"):
            raise unknown("pixelcnn binarize", self.binarize, ["dynamic", "static"])
        for key in ("kernel", "first_kernel"):
            k = getattr(self, key)
            if k < 1 or k % 2 == 0:
                raise ConfigError(f"model.{key} must be an odd number >= 1, got {k}")
        if self.first_kernel < 3:
            raise ConfigError(
                f"model.first_kernel must be >= 3 so the first layer sees its neighbours, got {self.first_kernel}"
            )
        colors = self.image_shape[0]
        if colors not in (1, 3):
            raise ConfigError(f"PixelCNN models 1- or 3-channel images, got {colors}; set data.channels=1 or 3")
        if self.channels < 2 * colors:
            raise ConfigError(
                f"model.channels must be >= {2 * colors} for {colors}-channel images, got {self.channels}"
            )
        if self.head_channels < 0 or 0 < self.head_channels < colors:
            raise ConfigError(f"model.head_channels must be 0 (= channels) or >= {colors}, got {self.head_channels}")
        if self.layers < 1:
            raise ConfigError(f"model.layers must be >= 1, got {self.layers}")
        if self.mixtures < 1:
            raise ConfigError(f"model.mixtures must be >= 1, got {self.mixtures}")
        if not 2 <= self.levels <= 256 or (self.levels != 256 and self.output != "softmax"):
            raise ConfigError(
                f"model.levels must be in 2..256 and differ from 256 only with output=softmax, got {self.levels}"
            )
        if self.res_blocks < 0:
            raise ConfigError(f"model.res_blocks must be >= 0, got {self.res_blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.attention_heads < 1 or self.attention_channels < 0:
            raise ConfigError("model.attention_heads must be >= 1 and model.attention_channels >= 0")
        att = self.attention_channels or max(self.channels // 2, self.attention_heads)
        if att % self.attention_heads:
            raise ConfigError(
                f"the attention width ({att}) must be a multiple of model.attention_heads ({self.attention_heads})"
            )
        if self.conditional and self.num_classes < 2:
            raise ConfigError("model.conditional=true needs a labelled dataset with at least 2 classes")

    @property
    def params_per_channel(self) -> int:
        """Output parameters per pixel and colour: 1 logit, 256 logits, or K (weight, mean, log-scale)."""
        return {"bernoulli": 1, "softmax": self.levels, "logistic": 3 * self.mixtures}[self.output]


def gate(a: torch.Tensor) -> torch.Tensor:
    """The gated unit tanh(a_f) * sigmoid(a_g) of the two channel halves (2016b, Eq. 2): (B, 2h, ...) -> (B, h, ...)."""
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class OutputHead(nn.Module):
    """ELU -> masked 1x1 -> ELU -> masked 1x1 to C * P output parameters, colour groups kept.

    The papers' output stack (2016a, Fig. 5) with ELU (as PixelCNN++) in place of ReLU: a ReLU unit
    that is off at a pixel drops all its inputs' influence there, ELU never cuts a dependence.
    """

    def __init__(self, channels: int, hidden: int, colors: int, per_channel: int) -> None:
        super().__init__()
        self.hidden = MaskedConv2d(channels, hidden, 1, "B", colors)
        self.out = MaskedConv2d(hidden, colors * per_channel, 1, "B", colors)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(F.elu(self.hidden(F.elu(h))))

    def pixel(self, h: torch.Tensor) -> torch.Tensor:
        """The head at one pixel as two matrix products: (B, channels) -> (B, C * P)."""
        w1, w2 = self.hidden.masked_weight()[:, :, 0, 0], self.out.masked_weight()[:, :, 0, 0]
        return torch.addmm(self.out.bias, F.elu(torch.addmm(self.hidden.bias, F.elu(h), w1.t())), w2.t())


# ----------------------------------------------------------------------------- masked PixelCNN


class MaskedResidualBlock(nn.Module):
    """ReLU-1x1(2h -> h)-ReLU-kxk masked B(h -> h)-ReLU-1x1(h -> 2h), added to the input (2016a, Fig. 5)."""

    def __init__(self, channels: int, kernel: int, colors: int, num_classes: int = 0) -> None:
        super().__init__()
        inner = max(channels // 2, colors)
        self.down = MaskedConv2d(channels, inner, 1, "B", colors)
        self.conv = MaskedConv2d(inner, inner, kernel, "B", colors, padding=kernel // 2)
        self.up = MaskedConv2d(inner, channels, 1, "B", colors)
        self.cond = nn.Embedding(num_classes, inner) if num_classes else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        t = self.down(F.relu(x))
        if self.cond is not None:
            t = t + self.cond(y)[:, :, None, None]
        return x + self.up(F.relu(self.conv(F.relu(t))))


class MaskedPixelCNN(nn.Module):
    """The PixelCNN network: (B, C, H, W) in [0, 1] -> (B, C * P, H, W) output parameters."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        c = config
        colors = c.image_shape[0]
        classes = c.num_classes if c.conditional else 0
        self.first = MaskedConv2d(colors, c.channels, c.first_kernel, "A", colors, padding=c.first_kernel // 2)
        self.blocks = nn.ModuleList(MaskedResidualBlock(c.channels, c.kernel, colors, classes) for _ in range(c.layers))
        self.head = OutputHead(c.channels, c.head_channels or c.channels, colors, c.params_per_channel)
        inner = max(c.channels // 2, colors)
        self._op_work = max(c.first_kernel**2 * colors * c.channels, c.kernel**2 * inner * inner)

    def op_work(self, batch: int) -> int:
        """Multiply-adds of the largest op of one sampling step (one layer at one pixel)."""
        return batch * self._op_work

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.first(x * 2.0 - 1.0)
        for block in self.blocks:
            h = block(h, y)
        return self.head(h)

    @torch.no_grad()
    def fill_fast(self, x: torch.Tensor, start: int, y: torch.Tensor | None, draw: DrawFn) -> None:
        """Fill rows start.. of x (B, C, H, W) in place, computing every layer at the new pixel only.

        Every layer's output at a pixel depends on input pixels before it in raster order alone (the
        first layer's mask A; mask B after it), so once pixel p - 1 is drawn each layer's output at p is
        final, and a layer at p needs the layer below only at p and at earlier positions of its kernel
        window, which were computed (and cached) at their own steps. One step is then a matrix product per
        layer on one window per image instead of the network over the receptive rows (Ramachandran et al.
        2017, "Fast generation for convolutional autoregressive models"). The caches start from one full
        pass over x: rows before ``start`` are given, and each later position is written at its own step
        before any position after it reads it (taps after a position are masked to zero).
        """
        b, colors, height, width = x.shape
        k1, k = self.first.kernel_size[0], self.blocks[0].conv.kernel_size[0] if len(self.blocks) else 1
        p1, p = k1 // 2, k // 2
        # Caches are channels-last, (B, H + 2p, W + 2p, C): one kernel row of a window is then k * C
        # contiguous numbers per image, a strided matrix the matrix product reads in place (no gather),
        # and only the rows up to the centre are multiplied (a causal kernel's lower rows are all zero).
        # When nothing is given (start 0) every position is written before it is read, and the caches are
        # their zero padding; otherwise one full pass over x fills them.
        xin = F.pad(x * 2.0 - 1.0, (p1, p1, p1, p1))  # the first layer's input, zero-padded as its conv pads
        hidden = []  # per block: relu(down(relu(h)) + cond), padded as its kxk conv pads
        if start == 0:
            inner = self.blocks[0].conv.in_channels if len(self.blocks) else 0
            hidden = [x.new_zeros(b, height + 2 * p, width + 2 * p, inner) for _ in self.blocks]
        else:
            h = self.first(xin[:, :, p1 : p1 + height, p1 : p1 + width])
            for block in self.blocks:
                t = block.down(F.relu(h))
                if block.cond is not None:
                    t = t + block.cond(y)[:, :, None, None]
                s = F.pad(F.relu(t), (p, p, p, p))
                h = h + block.up(F.relu(block.conv(s[:, :, p : p + height, p : p + width])))
                hidden.append(s.permute(0, 2, 3, 1).contiguous())
        xin = xin.permute(0, 2, 3, 1).contiguous()

        first = kernel_rows(self.first.masked_weight())
        layers = [
            (
                blk.down.masked_weight()[:, :, 0, 0].t(),
                blk.down.bias,
                kernel_rows(blk.conv.masked_weight()),
                blk.conv.bias,
                blk.up.masked_weight()[:, :, 0, 0].t(),
                blk.up.bias,
                blk.cond(y) if blk.cond is not None else None,
            )
            for blk in self.blocks
        ]
        for r in range(start, height):
            for col in range(width):
                for ch in range(colors):
                    h = conv_at(xin, first, self.first.bias, r, col, k1)
                    for s, (wd, bd, wc, bc, wu, bu, cond) in zip(hidden, layers, strict=True):
                        t = torch.addmm(bd, F.relu(h), wd)
                        if cond is not None:
                            t = t + cond
                        s[:, r + p, col + p] = F.relu(t)
                        h = h + torch.addmm(bu, F.relu(conv_at(s, wc, bc, r, col, k)), wu)
                    value = draw(ch, self.head.pixel(h))
                    x[:, ch, r, col] = value
                    xin[:, r + p1, col + p1, ch] = value * 2.0 - 1.0


# ----------------------------------------------------------------------------- Gated PixelCNN


class GatedLayer(nn.Module):
    """One gated layer with vertical and horizontal stacks (2016b, Fig. 2).

    Vertical: a (k//2 + 1) x k conv over rows r - k//2 .. r. Its output is only ever passed on shifted
    down one row, so the horizontal stack at row r sees rows < r, and the vertical stack itself never
    needs a mask. Horizontal: a 1 x (k//2 + 1) conv over columns c - k//2 .. c, its centre tap masked
    (A in the first layer, B after), plus a 1x1 link from the shifted vertical pre-activation, then a
    masked 1x1 and a residual connection (except in the first layer).

    Args:
        in_channels: the image's colours (first layer) or the feature width.
        channels: feature width h of each stack (the gate convs produce 2h).
        kernel: k (odd).
        colors: colour channels of the image.
        first: the first layer (mask A, no residual).
        num_classes: > 0 adds a per-class bias to both stacks' gates (2016b, Eq. 4).
    """

    def __init__(
        self, in_channels: int, channels: int, kernel: int, colors: int, first: bool, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.p = p = kernel // 2
        self.first = first
        groups = channel_groups(channels, colors)
        gate_groups = torch.cat([groups, groups])  # the tanh and sigmoid halves carry the same colours
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (p + 1, kernel))
        self.h_conv = MaskedConv2d(
            in_channels,
            2 * channels,
            (1, p + 1),
            "A" if first else "B",
            colors,
            center=(0, p),
            out_groups=gate_groups,
        )
        # Unmasked: the vertical features come from rows above, which every colour may see.
        self.link = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", colors)
        self.cond = nn.Embedding(num_classes, 4 * channels) if num_classes else None

    def cond_bias(self, y: torch.Tensor | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Per-class biases of the vertical and horizontal gates, (B, 2h, 1, 1) each (0 when unconditional)."""
        if self.cond is None:
            return 0.0, 0.0
        cv, ch = self.cond(y)[:, :, None, None].chunk(2, dim=1)
        return cv, ch

    def forward(self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(v, h) (B, in, H, W) each -> the next (v, h), (B, channels, H, W) each."""
        p = self.p
        cv, ch = self.cond_bias(y)
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0))) + cv
        h_pre = self.h_conv(F.pad(h, (p, 0, 0, 0))) + self.link(down_shift(v_pre)) + ch
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), h_new if self.first else h + h_new

    def v_row(self, rows: torch.Tensor, cv: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """One row of the vertical stack from rows r - k//2 .. r of its input (B, in, k//2 + 1, W).

        Returns:
            (pre-activation (B, 2h, 1, W), output (B, h, 1, W)).
        """
        v_pre = self.v_conv(F.pad(rows, (self.p, self.p, 0, 0))) + cv
        return v_pre, gate(v_pre)

    def pixel_matrices(self) -> tuple[torch.Tensor, ...]:
        """The horizontal stack at one pixel as matrices, for the cached sampler.

        Returns:
            (W_h (taps * in, 2h) over inputs ordered [column, channel], W_link (2h, 2h), b (2h,) the
            two convs' biases, W_out (h, h), b_out (h,)).
        """
        w_h = self.h_conv.masked_weight()[:, :, 0].permute(0, 2, 1).flatten(1)  # (2h, taps * in)
        w_out = self.h_out.masked_weight()[:, :, 0, 0]
        b = self.h_conv.bias + self.link.bias
        return w_h.t(), self.link.weight[:, :, 0, 0].t(), b, w_out.t(), self.h_out.bias

    def h_pixel(
        self,
        cols: torch.Tensor,
        link_in: torch.Tensor | None,
        ch: torch.Tensor | float,
        mats: tuple[torch.Tensor, ...],
    ) -> torch.Tensor:
        """One pixel of the horizontal stack, exactly the full layer's value there.

        Args:
            cols: (B, (k//2 + 1) * in) its input at columns c - k//2 .. c, [column, channel] order.
            link_in: (B, 2h) the vertical pre-activation of the row above (None on row 0, where the
                shifted map is zero).
            ch: the horizontal class bias, (B, 2h) or 0.
            mats: ``pixel_matrices()``.

        Returns:
            (B, h) the layer's horizontal output at the pixel.
        """
        w_h, w_link, b, w_out, b_out = mats
        a = torch.addmm(b, cols, w_h)
        if link_in is not None:
            a = a.addmm_(link_in, w_link)
        h_new = torch.addmm(b_out, gate(a + ch), w_out)
        return h_new if self.first else h_new + cols[:, -w_out.shape[0] :]


class GatedPixelCNN(nn.Module):
    """The Gated PixelCNN network: (B, C, H, W) in [0, 1] -> (B, C * P, H, W) output parameters."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        c = config
        colors = c.image_shape[0]
        classes = c.num_classes if c.conditional else 0
        self.channels = c.channels
        self.gated = nn.ModuleList(
            GatedLayer(
                colors if i == 0 else c.channels,
                c.channels,
                c.first_kernel if i == 0 else c.kernel,
                colors,
                first=i == 0,
                num_classes=classes,
            )
            for i in range(c.layers)
        )
        self.head = OutputHead(c.channels, c.head_channels or c.channels, colors, c.params_per_channel)

    def op_work(self, batch: int) -> int:
        """Multiply-adds of the largest op of one sampling step (the 2h x 2h link at a pixel)."""
        return batch * 4 * self.channels**2

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        v = h = x * 2.0 - 1.0
        for layer in self.gated:
            v, h = layer(v, h, y)
        return self.head(h)

    @torch.no_grad()
    def fill_fast(self, x: torch.Tensor, start: int, y: torch.Tensor | None, draw: DrawFn) -> None:
        """Fill rows start.. of x (B, C, H, W) in place with cached stacks: per image row, one row of
        every vertical layer (a convolution); per pixel and colour, one pixel of every horizontal
        layer (matrix products). Rows above ``start`` are kept (completion)."""
        b, colors, height, width = x.shape
        h_ch, n = self.channels, len(self.gated)
        v_feat = [x * 2.0 - 1.0] + [x.new_zeros(b, h_ch, height, width) for _ in range(n)]  # input of layer i
        v_pre = [x.new_zeros(b, height, width, 2 * h_ch) for _ in range(n)]  # channels last: link look-ups
        biases = [layer.cond_bias(y) for layer in self.gated]
        h_bias = [ch if isinstance(ch, float) else ch[:, :, 0, 0] for _, ch in biases]
        mats = [layer.pixel_matrices() for layer in self.gated]
        pads = [layer.p for layer in self.gated]

        def vertical_row(r: int) -> None:
            for i, layer in enumerate(self.gated):
                p = pads[i]
                rows = F.pad(v_feat[i][:, :, max(0, r - p) : r + 1], (0, 0, max(0, p - r), 0))
                pre, out = layer.v_row(rows, biases[i][0])
                v_pre[i][:, r] = pre[:, :, 0].transpose(1, 2)
                v_feat[i + 1][:, :, r] = out[:, :, 0]

        for r in range(start):
            vertical_row(r)
        for r in range(start, height):
            # Each layer's input row, channels last, with its k//2 zero columns on the left.
            rows = [x.new_zeros(b, width + pads[0], colors)]
            rows += [x.new_zeros(b, width + pads[i], h_ch) for i in range(1, n)]
            for col in range(width):
                for ch in range(colors):
                    for i, layer in enumerate(self.gated):
                        cols = rows[i][:, col : col + pads[i] + 1].flatten(1)
                        link_in = v_pre[i][:, r - 1, col] if r > 0 else None
                        h = layer.h_pixel(cols, link_in, h_bias[i], mats[i])
                        if i + 1 < n:
                            rows[i + 1][:, col + pads[i + 1]] = h
                    value = draw(ch, self.head.pixel(h))
                    x[:, ch, r, col] = value
                    rows[0][:, col + pads[0], ch] = value * 2.0 - 1.0
            v_feat[0][:, :, r] = x[:, :, r] * 2.0 - 1.0
            vertical_row(r)


# ----------------------------------------------------------------------------- the generative model


class PixelCNN(nn.Module):
    """An autoregressive image model around a causal network.

    Args:
        config: the PixelCNNConfig.
        net: (B, C, H, W) in [0, 1] (+ labels) -> (B, C * P, H, W) output parameters, causal, with a
            ``fill_fast(x, start, y, draw)`` sampler (``MaskedPixelCNN`` or ``GatedPixelCNN``).
    """

    def __init__(self, config: PixelCNNConfig, net: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.net = net

    conditional = property(lambda self: self.config.conditional)
    has_likelihood = True
    sample_options: ClassVar[dict[str, SampleOption]] = {
        "temperature": SampleOption(float, "softmax / logistic temperature (1 = the model itself)", minimum=0.0),
        "sampler": SampleOption(
            str, "fast (cached, one row pass per pixel) or naive (a full pass per pixel)", choices=("fast", "naive")
        ),
    }
    inpaint_options: ClassVar[dict[str, SampleOption]] = sample_options

    @property
    def likelihood_data(self) -> str:
        """What the likelihood is a distribution over: binarised or 8-bit images."""
        return "binarized" if self.config.output == "bernoulli" else "8-bit"

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.config.conditional:
            return None
        if y is None:
            raise ConfigError("this class-conditional PixelCNN needs class labels; pass labels=...")
        return y

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The data the likelihood is defined on: binarised images (bernoulli) or 8-bit levels, (B, C, H, W)."""
        if self.config.output != "bernoulli":
            return torch.round(x * 255.0) / 255.0
        if self.config.binarize == "static":
            return (x > 0.5).to(x.dtype)
        return torch.bernoulli(x, generator=generator)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Output parameters of every conditional p(x_i | x_<i): (B, C, P, H, W), float32."""
        b, c, h, w = x.shape
        out = self.net(x, self._labels(y))
        # bf16 (autocast) outputs are scored in float32; float64 stays (the exactness tests use it).
        return out.to(torch.promote_types(out.dtype, torch.float32)).view(b, c, self.config.params_per_channel, h, w)

    def log_prob(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum_i log p(x_i | x_<i) per image, in nats: (B,), from outputs (B, C, P, H, W)."""
        c = self.config
        if c.output == "bernoulli":
            return bernoulli_log_prob(out[:, :, 0], x)
        if c.output == "softmax":
            target = torch.round(x * 255.0).long()
            return -F.cross_entropy(out.transpose(1, 2), target, reduction="none").flatten(1).sum(1)
        k = c.mixtures
        return discretized_logistic_mixture_log_prob(out[:, :, :k], out[:, :, k : 2 * k], out[:, :, 2 * k :], x)

    def loss(self, batch: Batch) -> LossOutput:
        """Mean negative log-likelihood in nats per dimension (so learning rates carry across image sizes)."""
        x = self.observe(batch.x)
        nll = -self.log_prob(self(x, batch.y), x)
        dims = math.prod(x.shape[1:])
        return LossOutput(
            nll.mean() / dims,
            {"nll": nll.detach().mean(), "bpd": nll.detach().mean() / (dims * math.log(2.0))},
        )

    @torch.no_grad()
    def nll(
        self, x: torch.Tensor, y: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The exact negative log-likelihood of each image, in nats.

        Args:
            x: (B, C, H, W) in [0, 1]; binarised models binarise it once with ``generator``.
            y: (B,) labels (conditional models).

        Returns:
            ``{"exact": (B,)}``, nats of the data ``likelihood_data`` names.
        """
        xo = self.observe(x, generator)
        return {"exact": -self.log_prob(self(xo, y), xo)}

    # ------------------------------------------------------------------------- sampling

    def _draw(self, out: torch.Tensor, ch: int, generator: torch.Generator | None, temperature: float) -> torch.Tensor:
        """Draw colour ``ch`` of one pixel from the outputs (B, C * P) there; returns (B,) values in [0, 1].

        The temperature T divides logits (and mixture logits) and multiplies logistic scales.
        """
        c = self.config
        p = out.view(len(out), -1, c.params_per_channel)[:, ch]
        p = p.to(torch.promote_types(p.dtype, torch.float32))
        dev = out.device
        if c.output == "bernoulli":
            u = torch.rand(len(p), generator=generator, device=dev, dtype=p.dtype)
            return (u < torch.sigmoid(p[:, 0] / temperature)).to(p.dtype)
        if c.output == "softmax":
            return (
                torch.multinomial(F.softmax(p / temperature, dim=1), 1, generator=generator)[:, 0].to(p.dtype) / 255.0
            )
        k = c.mixtures
        comp = torch.multinomial(F.softmax(p[:, :k] / temperature, dim=1), 1, generator=generator)
        mean = p[:, k : 2 * k].gather(1, comp)[:, 0]
        scale = torch.exp(p[:, 2 * k :].gather(1, comp)[:, 0].clamp(min=-7.0)) * temperature
        u = torch.rand(len(p), generator=generator, device=dev, dtype=p.dtype).clamp(1e-5, 1.0 - 1e-5)
        x = mean + scale * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
        # Rounding to the nearest of the 256 levels (edges at the midpoints, tails to the end bins)
        # draws exactly from the discretised logistic.
        return torch.round(((x + 1.0) * 0.5).clamp(0.0, 1.0) * 255.0) / 255.0

    def _fill(
        self,
        x: torch.Tensor,
        start: int,
        labels: torch.Tensor | None,
        generator: torch.Generator | None,
        temperature: float | None,
        sampler: str,
    ) -> torch.Tensor:
        if sampler not in SAMPLERS:
            raise unknown("pixelcnn sampler", sampler, SAMPLERS)
        t = 1.0 if temperature is None else float(temperature)
        if not t > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        y = self._labels(labels)

        def draw(ch: int, out: torch.Tensor) -> torch.Tensor:
            return self._draw(out, ch, generator, t)

        small = x.device.type == "cpu" and self.net.op_work(len(x)) < SMALL_OP
        with _intra_op_threads(1 if small else torch.get_num_threads()):
            if sampler == "fast":
                self.net.fill_fast(x, start, y, draw)
                return x
            _, colors, height, width = x.shape
            for r in range(start, height):
                for col in range(width):
                    for ch in range(colors):
                        x[:, ch, r, col] = draw(ch, self.net(x, y)[:, :, r, col])
            return x

    def _sample_labels(
        self, n: int, labels: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        dev = self._device
        if labels is not None:
            return labels.to(dev)
        if self.config.conditional:
            return torch.randint(self.config.num_classes, (n,), generator=generator, device=dev)
        return None

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        temperature: float | None = None,
        sampler: str = "fast",
    ) -> torch.Tensor:
        """Draw n images at once, pixel by pixel and colour by colour.

        Args:
            n: number of images.
            generator: the only source of randomness.
            labels: (n,) classes for a conditional model (drawn uniformly from ``generator`` if None).
            temperature: > 0; 1 (default) samples the model itself, lower is more conservative.
            sampler: "fast" (cached stacks / receptive-field crop) or "naive" (one full pass per pixel
                and colour); both give the same images for the same generator.

        Returns:
            (n, C, H, W) in [0, 1]: multiples of 1/255, or {0, 1} for binarised models.
        """
        c, h, w = self.config.image_shape
        ref = next(self.parameters())
        x = torch.zeros(n, c, h, w, device=ref.device, dtype=ref.dtype)
        return self._fill(x, 0, self._sample_labels(n, labels, generator), generator, temperature, sampler)

    @torch.no_grad()
    def complete(
        self,
        x: torch.Tensor,
        rows: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        temperature: float | None = None,
        sampler: str = "fast",
    ) -> torch.Tensor:
        """Keep the top ``rows`` rows of each image and sample the rest from p(x_rest | x_top).

        Args:
            x: (B, C, H, W) in [0, 1] with the model's image shape; binarised models binarise it first.
            rows: rows to keep, 0..H (0 samples from scratch, H returns the observed images).

        Returns:
            (B, C, H, W) in [0, 1], equal to the observed images on the kept rows.
        """
        c, h, w = self.config.image_shape
        if tuple(x.shape[1:]) != (c, h, w):
            raise ConfigError(
                f"images to complete must be {c}x{h}x{w} like the training data, got {'x'.join(map(str, x.shape[1:]))}"
            )
        if not 0 <= rows <= h:
            raise ConfigError(f"rows to keep must be in 0..{h}, got {rows}")
        ref = next(self.parameters())
        x = self.observe(x.to(ref.device, ref.dtype), generator)
        x[:, :, rows:] = 0.0
        return self._fill(x, rows, self._sample_labels(len(x), labels, generator), generator, temperature, sampler)

    @torch.no_grad()
    def inpaint(
        self,
        x: torch.Tensor,
        keep: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        temperature: float | None = None,
        sampler: str = "fast",
    ) -> torch.Tensor:
        """Fill the unknown pixels when they are the bottom rows (raster order), by ``complete``.

        Raises:
            ConfigError: the known pixels are not the top rows of every image.
        """
        from genmodels.models.inpainting import known_rows

        rows = known_rows(keep.expand(len(x), *keep.shape[1:]))
        if rows is None:
            raise ConfigError(
                "an autoregressive model can fill only pixels that come after all the known ones in raster "
                "order: use --mask bottom (or a mask file hiding whole bottom rows), or a diffusion, vae, "
                "autoencoder or gan run for other masks"
            )
        return self.complete(x, rows, generator=generator, labels=labels, temperature=temperature, sampler=sampler)


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run torch's CPU ops on n intra-op threads (a process-wide setting), restored afterwards.

    Sampling runs thousands of tiny ops one after another; each thread beyond the first only adds a
    synchronisation per op, which on a busy machine costs a scheduler time slice.
    """
    before = torch.get_num_threads()
    if n >= before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build(config: PixelCNNConfig) -> PixelCNN:
    """A PixelCNN model with the network ``config.arch`` names."""
    if config.arch == "snail":
        from genmodels.models.pixelsnail import PixelSNAILNet

        return PixelCNN(config, PixelSNAILNet(config))
    net = GatedPixelCNN(config) if config.arch == "gated" else MaskedPixelCNN(config)
    return PixelCNN(config, net)
