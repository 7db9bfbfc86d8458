"""A drop-in ``nn.Linear`` whose fp32 CPU matrix products run on oneDNN instead of the BLAS, where that wins.

PyTorch's CPU wheel sends ``aten::addmm`` / ``aten::mm`` in fp32 to MKL, which on AMD processors (the
EPYC of these machines) takes its generic code path. oneDNN, which PyTorch already uses for every
convolution, ran the same products at full fp32 precision about twice as fast there (2 threads:
32x1024 @ 1024x784 in 180 us against 330 us; 1024^3 at ~470 against ~205 GFLOP/s). On an Intel CPU MKL
is at home and the gain may be nothing. :class:`Linear` computes forward, input gradient and weight
gradient with ``torch.ops.mkldnn._linear_pointwise`` (the kernel TorchInductor itself emits for linear
layers on CPU), each as one oneDNN matmul over the tensors' own strides, without copies.

That op is private, so it is a fast path of :mod:`genmodels.device` ("onednn_linear"): used only where it
exists, matches ``F.linear`` on a small case, and beats ``F.linear`` on this machine by the margin when
the classic MLP GAN's layers run forward and backward at batch :data:`PROBE_BATCH`; decided at first
use, never at import. A call the op refuses falls back to the BLAS. Even where chosen it is taken only
where it is the same function: fp32 tensors on the CPU, outside autocast (under bf16 autocast
``F.linear`` already reaches oneDNN's bf16 kernels), products of at least ``MIN_MACS`` multiply-adds
(below that oneDNN's fixed cost per call loses). Everything else, float64 included, is plain
``F.linear``. The backward is written with the same op, so it is itself differentiable: double backward
(WGAN-GP's gradient penalty) works. ``GENMODELS_FASTPATHS=off`` (every fast path),
``GENMODELS_ONEDNN_LINEAR=0`` or :func:`onednn_linear` ``(False)`` turns it off, e.g. for torch's FLOP
counter, which cannot see inside this op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.device import fast_path, race, register_fast_path

NAME = "onednn_linear"
_forced: bool | None = None  # set by onednn_linear(); None: the machine's decision
# oneDNN's call costs ~10 us more than the BLAS's: below ~2M multiply-adds (e.g. 32 x 100 @ 100 x 256) the
# BLAS is faster, above it oneDNN (32 x 256 @ 256 x 512: 57 against 62 us; 256^3: 100 against 172 us).
MIN_MACS = 1 << 21
# The decision's workload: the classic MLP GAN's layers (G 256-512-1024-784, D 784-512-256) forward and
# backward. Batch 64 keeps each timed product under ~1 ms, short enough to dodge a busy machine's
# preemptions, and all but the first product above MIN_MACS.
PROBE_BATCH = 64
PROBE_LAYERS = ((256, 512), (512, 1024), (1024, 784), (784, 512), (512, 256))


def _op() -> Any:
    """The private oneDNN linear op, or None where this torch build has none."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def _check() -> str | None:
    if os.environ.get("GENMODELS_ONEDNN_LINEAR", "1") == "0":
        return "turned off by GENMODELS_ONEDNN_LINEAR=0"
    op = _op()
    if op is None:
        return "torch.ops.mkldnn._linear_pointwise is missing from this torch build"
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=g) for s in ((5, 16), (7, 16), (7,)))
    y = op(x, w, b, "none", [], "")
    gw = op(x.t(), torch.eye(5), None, "none", [], "")  # a transposed operand, as the backward passes it
    if not (torch.allclose(y, F.linear(x, w, b), rtol=1e-4, atol=1e-5) and torch.allclose(gw, x.t(), atol=1e-6)):
        return "torch.ops.mkldnn._linear_pointwise gives other results than F.linear"
    return None


def _measure() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    units = []
    for k, n in PROBE_LAYERS:
        x, w, b, dy = (torch.randn(s, generator=g) for s in ((PROBE_BATCH, k), (n, k), (n,), (PROBE_BATCH, n)))
        # forward, input gradient dy @ w, weight gradient dy^T @ x: what F.linear's autograd runs, and ours
        units += [
            (lambda x=x, w=w, b=b: _matmul(x, w, b), lambda x=x, w=w, b=b: F.linear(x, w, b)),
            (lambda dy=dy, w=w: _matmul(dy, w.t(), None), lambda dy=dy, w=w: dy @ w),
            (lambda dy=dy, x=x: _matmul(dy.t(), x.t(), None), lambda dy=dy, x=x: dy.t() @ x),
        ]
    layers = ", ".join(f"{k}x{n}" for k, n in PROBE_LAYERS)
    return {**race(units), "workload": f"fp32 linear layers {layers} at batch {PROBE_BATCH}, forward and backward"}


register_fast_path(NAME, check=_check, measure=_measure)


def _available() -> bool:
    return fast_path(NAME) if _forced is None else _forced


@contextlib.contextmanager
def onednn_linear(enabled: bool) -> Iterator[None]:
    """Within the block, :class:`Linear` uses oneDNN (``True``: wherever the op exists) or ``F.linear``."""
    global _forced
    before = _forced
    _forced = enabled and _op() is not None
    try:
        yield
    finally:
        _forced = before


def _matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``a @ b.T + bias`` on oneDNN, for 2-D ``a`` (m, k) and ``b`` (n, k), each dense in one of its two orders."""
    if a.stride(-1) != 1 and a.stride(0) != 1:
        a = a.contiguous()
    if b.stride(-1) != 1 and b.stride(0) != 1:
        b = b.contiguous()
    try:
        return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")
    except (RuntimeError, AttributeError):  # a layout or build the op refuses: the BLAS computes the same
        return F.linear(a, b, bias)


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
        and not torch.compiler.is_compiling()  # inductor lowers F.linear to its own oneDNN kernels; ours fails
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
