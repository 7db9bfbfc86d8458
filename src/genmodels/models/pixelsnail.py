"""PixelSNAIL (Chen et al. 2018, "PixelSNAIL: An Improved Autoregressive Generative Model"): causal
convolutions interleaved with causally masked self-attention, so every pixel sees every earlier pixel
(a stack of causal convolutions alone reaches only a cone of them).

The network, ``PixelSNAILNet``, plugs into ``genmodels.models.pixelcnn.PixelCNN`` (likelihoods, exact NLL,
sampling, completion are shared with the PixelCNNs; ``model.arch: snail``):

- The *body* maps the image to features at every pixel that depend only on strictly earlier pixels
  (raster order): a first masked convolution with its centre closed (mask A on one colour group) plus a
  1x1 convolution of the image shifted one pixel in raster order (so the features at pixel i hold pixel
  i - 1 even across a row break, which no causal kernel reaches: with it, attention over j <= i sees
  every earlier pixel exactly; tested), then
  ``layers`` blocks, each ``res_blocks`` gated residual blocks of causal convolutions (ELU, masked kxk
  conv with the centre open: a feature at a pixel already excludes that pixel, mask B on one group;
  ELU, masked conv to 2x channels, GLU, residual; paper Fig. 4) and one attention block: keys and values
  from the block's input, its output and the 2 background (position) channels, queries from its output
  and the background, each through a 1x1 gated residual block; dot-product attention where pixel i
  attends to pixels j <= i (the features at j exclude pixel j itself, so j = i is still the past);
  the result enters a gated residual block as an auxiliary input (paper Fig. 5).
- The *head* turns the features at a pixel into the output parameters colour by colour: ELU, a 1x1
  convolution of the features plus a colour-masked 1x1 convolution of the pixel's own earlier colours
  (R for G; R, G for B), ELU, a colour-masked 1x1 to C * P parameters. So the body runs once per
  pixel when sampling, and only the head once per colour.

Class conditioning (``conditional``) adds a learned per-class bias inside every gate, as the
conditional Gated PixelCNN does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.models.pixelcnn import DrawFn, PixelCNNConfig
from genmodels.nets.masked import MaskedConv2d, conv_at, kernel_rows


def raster_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the same shape where pixel i holds pixel i - 1 in raster order (zeros at pixel 0)."""
    b, c, h, w = x.shape
    return F.pad(x.flatten(2), (1, 0))[:, :, : h * w].view(b, c, h, w)


class GatedResBlock(nn.Module):
    """x + GLU(conv2(ELU(conv1(ELU(x)) + aux(ELU(a)))) + class bias): the paper's residual block.

    Args:
        channels: width of x and of the output.
        kernel: kxk causal convolutions (mask B on one group, centre open), or 1 for 1x1 (position-wise).
        aux_channels: > 0 adds a 1x1 projection of an auxiliary input (the attention output).
        num_classes: > 0 adds a per-class bias to the gate's input.
        dropout: on the hidden activation (training only).
    """

    def __init__(
        self, channels: int, kernel: int, aux_channels: int = 0, num_classes: int = 0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if kernel == 1:
            self.conv1: nn.Module = nn.Conv2d(channels, channels, 1)
            self.conv2: nn.Module = nn.Conv2d(channels, 2 * channels, 1)
        else:
            self.conv1 = MaskedConv2d(channels, channels, kernel, "B", 1, padding=kernel // 2)
            self.conv2 = MaskedConv2d(channels, 2 * channels, kernel, "B", 1, padding=kernel // 2)
        self.aux = nn.Conv2d(aux_channels, channels, 1) if aux_channels else None
        self.cond = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        t = self.conv1(F.elu(x))
        if self.aux is not None and aux is not None:
            t = t + self.aux(F.elu(aux))
        t = F.elu(t)
        if self.dropout is not None:
            t = self.dropout(t)
        return x + F.glu(self.conv2(t) + _class_bias(self, y), dim=1)


def _class_bias(block: GatedResBlock, y: torch.Tensor | None) -> torch.Tensor | float:
    """A gated block's per-class bias as (B, 2h, 1, 1), or 0 when unconditional."""
    return block.cond(y)[:, :, None, None] if block.cond is not None else 0.0


def _gate_bias(block: GatedResBlock, y: torch.Tensor | None) -> torch.Tensor | float:
    """A gated block's per-class bias as (B, 2h), or 0 when unconditional: the samplers' per-pixel form."""
    return block.cond(y) if block.cond is not None else 0.0


class _Pointwise:
    """A 1x1 convolution (masked or not) as a matrix product on one pixel's features: (B, in) -> (B, out)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        weight = conv.masked_weight() if isinstance(conv, MaskedConv2d) else conv.weight
        self.weight, self.bias = weight[:, :, 0, 0], conv.bias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class _GatedPointwise:
    """A position-wise ``GatedResBlock`` (kernel 1) at one pixel, in inference: (B, C) [, aux] -> (B, C)."""

    def __init__(self, block: GatedResBlock, y: torch.Tensor | None) -> None:
        self.conv1, self.conv2 = _Pointwise(block.conv1), _Pointwise(block.conv2)
        self.aux = _Pointwise(block.aux) if block.aux is not None else None
        self.bias = _gate_bias(block, y)

    def __call__(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        t = self.conv1(F.elu(x))
        if self.aux is not None and aux is not None:
            t = t + self.aux(F.elu(aux))
        return x + F.glu(self.conv2(F.elu(t)) + self.bias, dim=1)


class CausalAttention(nn.Module):
    """Multi-head dot-product attention over pixels in raster order, pixel i attending to pixels j <= i.

    Args:
        query_channels, key_channels: input widths of the query and key/value maps.
        channels: width of queries, keys and values (split over ``heads``).
    """

    def __init__(self, query_channels: int, key_channels: int, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(query_channels, channels)
        self.key = nn.Linear(key_channels, channels)
        self.value = nn.Linear(key_channels, channels)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """(B, N, channels) -> (B, heads, N, channels / heads)."""
        b, n, c = t.shape
        return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """query (B, Cq, H, W), key (B, Ck, H, W) -> (B, channels, H, W)."""
        b, _, h, w = query.shape
        q = self.split(self.query(query.flatten(2).transpose(1, 2)))
        kv = key.flatten(2).transpose(1, 2)
        k, v = self.split(self.key(kv)), self.split(self.value(kv))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # j <= i, in raster order
        return out.transpose(1, 2).reshape(b, h * w, -1).transpose(1, 2).reshape(b, -1, h, w)


class SnailBlock(nn.Module):
    """``res_blocks`` causal gated residual blocks, then the attention block (paper Figs. 4-5)."""

    def __init__(self, c: PixelCNNConfig, num_classes: int) -> None:
        super().__init__()
        ch = c.channels
        self.res = nn.ModuleList(
            GatedResBlock(ch, c.kernel, num_classes=num_classes, dropout=c.dropout) for _ in range(c.res_blocks)
        )
        att = c.attention_channels or max(ch // 2, c.attention_heads)
        self.key = nn.Conv2d(2 * ch + 2, ch, 1)
        self.key_res = GatedResBlock(ch, 1, dropout=c.dropout)
        self.query = nn.Conv2d(ch + 2, ch, 1)
        self.query_res = GatedResBlock(ch, 1, dropout=c.dropout)
        self.attention = CausalAttention(ch, ch, att, c.attention_heads)
        self.out = GatedResBlock(ch, 1, aux_channels=att, num_classes=num_classes, dropout=c.dropout)

    def forward(self, x: torch.Tensor, background: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = x
        for block in self.res:
            h = block(h, y=y)
        key = self.key_res(self.key(torch.cat([x, h, background], 1)))
        query = self.query_res(self.query(torch.cat([h, background], 1)))
        return self.out(h, self.attention(query, key), y)


class SnailHead(nn.Module):
    """Features at a pixel (which exclude it) and its earlier colours -> C * P output parameters."""

    def __init__(self, channels: int, hidden: int, colors: int, per_channel: int) -> None:
        super().__init__()
        self.colors = colors
        self.features = nn.Conv2d(channels, hidden, 1)
        # Hidden group g sees colours < g of the pixel itself (mask A); nothing to see in a 1-colour image.
        self.own = MaskedConv2d(colors, hidden, 1, "A", colors, in_groups=torch.arange(colors)) if colors > 1 else None
        self.out = MaskedConv2d(hidden, colors * per_channel, 1, "B", colors)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = self.features(F.elu(h))
        if self.own is not None:
            t = t + self.own(x)
        return self.out(F.elu(t))


class PixelSNAILNet(nn.Module):
    """(B, C, H, W) in [0, 1] (+ labels) -> (B, C * P, H, W) output parameters, causal in raster order
    and R -> G -> B within a pixel."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        c = config
        colors, height, width = c.image_shape
        classes = c.num_classes if c.conditional else 0
        self.first = MaskedConv2d(
            colors, c.channels, c.first_kernel, "A", 1, in_groups=torch.zeros(colors, dtype=torch.long),
            padding=c.first_kernel // 2,
        )  # fmt: skip
        self.previous = nn.Conv2d(colors, c.channels, 1)
        self.blocks = nn.ModuleList(SnailBlock(c, classes) for _ in range(c.layers))
        self.head = SnailHead(c.channels, c.head_channels or c.channels, colors, c.params_per_channel)
        rows = (torch.arange(height, dtype=torch.float32) - height / 2) / height
        cols = (torch.arange(width, dtype=torch.float32) - width / 2) / width
        bg = torch.stack([rows[:, None].expand(height, width), cols[None, :].expand(height, width)])
        self.register_buffer("background", bg[None], persistent=False)
        self._op_work = c.channels * 2 * c.channels * c.kernel**2

    def op_work(self, batch: int) -> int:
        """Multiply-adds of the largest op of one sampling step (a kxk window of a causal conv at one pixel)."""
        return batch * self._op_work

    def body(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Features (B, channels, h, W) of the first h rows of x, each depending only on earlier pixels."""
        xs = x * 2.0 - 1.0
        h = self.first(xs) + self.previous(raster_shift(xs))
        bg = self.background[:, :, : x.shape[2]].expand(len(x), -1, -1, -1).to(h.dtype)
        for block in self.blocks:
            h = block(h, bg, y)
        return h

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.body(x, y), x * 2.0 - 1.0)

    @torch.no_grad()
    def fill_fast(self, x: torch.Tensor, start: int, y: torch.Tensor | None, draw: DrawFn) -> None:
        """Fill rows start.. of x (B, C, H, W) in place, computing every layer at one pixel at a time.

        Every layer's value at pixel i depends only on values at pixels <= i of the layer below, so
        the sampler keeps, per layer, what later pixels read: the padded inputs of each causal kxk
        convolution and the attention keys and values, and computes each layer at pixel i alone (a
        kxk window, a 1x1 map, one attention query over the i + 1 cached keys). The body then runs
        once per pixel, the head once per colour. Rows above ``start`` (completion) are passed
        through the same steps without drawing.
        """
        b, colors, height, width = x.shape
        # Input caches are channels-last (B, H + 2p, W + 2p, C) and each kxk convolution at one pixel is a
        # matrix product per kernel row read in place (``conv_at``), as in the masked PixelCNN's sampler;
        # every 1x1 map runs as a matrix product on (B, C) features (``_Pointwise``), not a convolution.
        k0 = self.first.kernel_size[0]
        first_w = kernel_rows(self.first.masked_weight())
        p0 = k0 // 2
        xs = F.pad(x * 2.0 - 1.0, (p0, p0, p0, p0)).permute(0, 2, 3, 1).contiguous()
        previous = _Pointwise(self.previous)
        new = x.new_zeros
        caches = []
        for block in self.blocks:
            res = []
            for rb in block.res:
                k = rb.conv1.kernel_size[0]
                p = k // 2
                shape = (b, height + 2 * p, width + 2 * p, rb.conv1.in_channels)
                w1, w2 = kernel_rows(rb.conv1.masked_weight()), kernel_rows(rb.conv2.masked_weight())
                res.append((p, k, new(shape), new(shape), w1, rb.conv1.bias, w2, rb.conv2.bias, _gate_bias(rb, y)))
            att = block.attention
            dim = att.query.out_features // att.heads
            kv = (new(b, att.heads, height * width, dim), new(b, att.heads, height * width, dim))
            maps = (
                _Pointwise(block.key),
                _GatedPointwise(block.key_res, None),
                _Pointwise(block.query),
                _GatedPointwise(block.query_res, None),
                _GatedPointwise(block.out, y),
            )
            caches.append((res, kv, maps))
        head = self.head
        features, out = _Pointwise(head.features), _Pointwise(head.out)
        own = _Pointwise(head.own) if head.own is not None else None
        last = new(b, colors)  # the previous pixel in raster order (zeros before the first)
        for r in range(height):
            for c in range(width):
                i = r * width + c
                h = conv_at(xs, first_w, self.first.bias, r, c, k0) + previous(last)
                bg = self.background[0, :, r, c].to(h.dtype).expand(b, -1)
                for block, (res, (keys, values), (key_in, key_res, query_in, query_res, gated_out)) in zip(
                    self.blocks, caches, strict=True
                ):
                    block_in = h
                    for p, k, elu_in, hidden, w1, b1, w2, b2, cb in res:
                        elu_in[:, r + p, c + p] = F.elu(h)
                        hidden[:, r + p, c + p] = F.elu(conv_at(elu_in, w1, b1, r, c, k))
                        h = h + F.glu(conv_at(hidden, w2, b2, r, c, k) + cb, dim=1)
                    key = key_res(key_in(torch.cat([block_in, h, bg], 1)))
                    query = query_res(query_in(torch.cat([h, bg], 1)))
                    att = block.attention
                    keys[:, :, i] = att.key(key).view(b, att.heads, -1)
                    values[:, :, i] = att.value(key).view(b, att.heads, -1)
                    q = att.query(query).view(b, att.heads, 1, -1)
                    a = F.scaled_dot_product_attention(q, keys[:, :, : i + 1], values[:, :, : i + 1])
                    h = gated_out(h, a.reshape(b, -1))
                for ch in range(colors):
                    if r >= start:
                        t = features(F.elu(h))
                        if own is not None:
                            t = t + own(xs[:, r + p0, c + p0])
                        value = draw(ch, out(F.elu(t)))
                        x[:, ch, r, c] = value
                        xs[:, r + p0, c + p0, ch] = value * 2.0 - 1.0
                last = xs[:, r + p0, c + p0]
