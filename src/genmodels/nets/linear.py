"""A drop-in ``nn.Linear`` whose fp32 CPU matrix products run on oneDNN instead of the BLAS.

PyTorch's CPU wheel sends ``aten::addmm`` / ``aten::mm`` in fp32 to MKL, which on AMD processors (the
EPYC of these machines) takes its generic code path. oneDNN, which PyTorch already uses for every
convolution, runs the same products at full fp32 precision about twice as fast there (measured here,
2 threads: 32x1024 @ 1024x784 in 180 us against 330 us; 1024^3 at ~470 against ~205 GFLOP/s).
:class:`Linear` computes forward, input gradient and weight gradient with
``torch.ops.mkldnn._linear_pointwise`` (the kernel TorchInductor itself emits for linear layers on CPU),
each as one oneDNN matmul over the tensors' own strides, without copies.

The fast path is taken only where it is the same function and faster: fp32 tensors on the CPU, outside
autocast (under bf16 autocast ``F.linear`` already reaches oneDNN's bf16 kernels), products of at least
``MIN_MACS`` multiply-adds (below that oneDNN's fixed cost per call loses). Everything else, float64
included, is plain ``F.linear``. The backward is written with the same op, so it is itself
differentiable: double backward (WGAN-GP's gradient penalty) works. ``GENMODELS_ONEDNN_LINEAR=0``
or :func:`onednn_linear` ``(False)`` turns it off, e.g. for torch's FLOP counter, which cannot see
inside this op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_enabled: bool | None = None  # decided on first use: available, and not turned off by the environment
# oneDNN's call costs ~10 us more than the BLAS's: below ~2M multiply-adds (e.g. 32 x 100 @ 100 x 256) the
# BLAS is faster, above it oneDNN (32 x 256 @ 256 x 512: 57 against 62 us; 256^3: 100 against 172 us).
MIN_MACS = 1 << 21


def _available() -> bool:
    global _enabled
    if _enabled is None:
        _enabled = (
            os.environ.get("GENMODELS_ONEDNN_LINEAR", "1") != "0"
            and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )
    return _enabled


@contextlib.contextmanager
def onednn_linear(enabled: bool) -> Iterator[None]:
    """Within the block, :class:`Linear` uses oneDNN (``True``, where available) or ``F.linear``."""
    global _enabled
    before = _available()
    _enabled = before if enabled else False
    try:
        yield
    finally:
        _enabled = before


def _matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``a @ b.T + bias`` on oneDNN, for 2-D ``a`` (m, k) and ``b`` (n, k), each dense in one of its two orders."""
    if a.stride(-1) != 1 and a.stride(0) != 1:
        a = a.contiguous()
    if b.stride(-1) != 1 and b.stride(0) != 1:
        b = b.contiguous()
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


def _product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` inside a backward: differentiable only when a double backward asked for a graph."""
    return _OneDNNLinear.apply(a, b, None) if torch.is_grad_enabled() else _matmul(a, b, None)


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _matmul(x, w, b)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _product(g, w.t())  # g @ w
        if ctx.needs_input_grad[1]:
            gw = _product(g.t(), x.t())  # g^T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def _fast(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> bool:
    return (
        x.numel() * w.shape[0] >= MIN_MACS
        and x.dtype == torch.float32
        and w.dtype == torch.float32
        and (b is None or b.dtype == torch.float32)
        and x.device.type == "cpu"
        and w.device.type == "cpu"
        and x.dim() >= 1
        and not torch.is_autocast_enabled("cpu")
        and _available()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN for fp32 on the CPU (module docstring)."""
    if not _fast(x, weight, bias):
        return F.linear(x, weight, bias)
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        y = _OneDNNLinear.apply(flat, weight, bias)
    else:
        y = _matmul(flat, weight, bias)
    return y.reshape(*lead, weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and initialisation) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
