"""genmodels' Linear: nn.Linear's function, on oneDNN for fp32 CPU tensors, with exact-enough gradients.

These tests pin the oneDNN path itself (``GENMODELS_FASTPATHS=on``); whether a machine takes it, and the
fallback when the op is missing, wrong or slower, are tests/test_fastpaths.py's.
"""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from genmodels.device import fast_path, forget_fast_paths
from genmodels.nets.linear import MIN_MACS, Linear, linear, onednn_linear

X86 = platform.machine() in {"x86_64", "AMD64"}


@pytest.fixture(autouse=True)
def _onednn_wherever_it_exists(monkeypatch):
    monkeypatch.setenv("GENMODELS_FASTPATHS", "on")
    forget_fast_paths()
    fast_path("onednn_linear")  # decided here, not inside a test's profiler (the check runs F.linear)
    yield
    forget_fast_paths()


def ops_run(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Output and gradients in float64 of sum(linear(x) * probe) for a fixed probe."""
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_() if b is not None else None
    y = F.linear(x64, w64, b64)
    probe = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
    (y * probe).sum().backward()
    return y, x64.grad, w64.grad, (b64.grad if b64 is not None else None)


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """Within fp32 rounding of a float64 reference (nn.Linear's own fp32 error here is ~1e-6 of the scale)."""
    a, b = a.detach().double(), b.detach()
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


@pytest.mark.skipif(not X86, reason="oneDNN's fp32 matmul is the x86 path these machines have")
def test_fp32_on_the_cpu_runs_on_onednn_not_the_blas():
    layer = Linear(512, 256)
    x = torch.randn(32, 512, requires_grad=True)
    ran = ops_run(lambda: layer(x).sum().backward())
    assert "mkldnn::_linear_pointwise" in ran
    assert not {"aten::addmm", "aten::mm"} & ran
    with torch.no_grad():
        assert "mkldnn::_linear_pointwise" in ops_run(lambda: layer(x))
    small = Linear(64, 32)  # below MIN_MACS the BLAS's lower fixed cost wins
    assert "aten::addmm" in ops_run(lambda: small(torch.randn(16, 64)))
    with onednn_linear(False):
        assert "aten::addmm" in ops_run(lambda: layer(x))


@pytest.mark.parametrize(
    "shape, make_x, bias",
    [
        ((32, 784, 512), lambda m, k: torch.randn(m, k), True),
        ((1, 2048, 1024), lambda m, k: torch.randn(m, k), True),
        ((64, 256, 128), lambda m, k: torch.randn(m, k), False),
        ((64, 256, 128), lambda m, k: torch.randn(k, m).t(), True),  # a transposed view
        ((64, 256, 128), lambda m, k: torch.randn(m, 2 * k)[:, ::2], True),  # strided in both dimensions
        ((64, 256, 128), lambda m, k: torch.randn(2, m // 2, k), True),  # leading batch dimensions
        ((7, 33, 5), lambda m, k: torch.randn(m, k), True),  # small: the BLAS path
    ],
)
def test_output_and_gradients_match_float64(shape, make_x, bias):
    m, k, n = shape
    torch.manual_seed(0)
    layer = Linear(k, n, bias=bias)
    x = make_x(m, k).requires_grad_()
    assert ("mkldnn::_linear_pointwise" in ops_run(lambda: layer(x))) == (X86 and m * k * n >= MIN_MACS)
    y = layer(x)
    ref_y, ref_gx, ref_gw, ref_gb = reference(x, layer.weight, layer.bias)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    assert y.shape == ref_y.shape and y.dtype == torch.float32
    assert close(y, ref_y)
    assert close(x.grad, ref_gx) and close(layer.weight.grad, ref_gw)
    if bias:
        assert close(layer.bias.grad, ref_gb)


def test_double_backward_gives_the_gradient_penalty_of_nn_linear():
    """WGAN-GP differentiates a gradient: the backward must itself be differentiable."""
    torch.manual_seed(1)
    critic = nn.Sequential(Linear(256, 512), nn.LeakyReLU(0.2), Linear(512, 1))  # 16 x 256 @ 256 x 512: oneDNN
    twin = nn.Sequential(nn.Linear(256, 512), nn.LeakyReLU(0.2), nn.Linear(512, 1)).double()
    twin.load_state_dict({k: v.double() for k, v in critic.state_dict().items()})
    x = torch.randn(16, 256)

    def penalty_grads(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        ((g.norm(dim=1) - 1) ** 2).mean().backward()
        return [p.grad for p in net.parameters()]

    pairs = list(zip(penalty_grads(critic, x), penalty_grads(twin, x.double()), strict=True))
    assert pairs[0][0] is not None and pairs[0][0].abs().sum() > 0  # the first layer's weights get a penalty gradient
    for got, want in pairs:
        if want is None:  # the last bias does not enter the gradient with respect to x
            assert got is None or not got.any()
        else:
            assert got is not None and close(got, want)


def test_other_dtypes_and_autocast_are_plain_f_linear():
    torch.manual_seed(2)
    layer = Linear(10, 4).double()
    x = torch.randn(3, 10, dtype=torch.float64)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    layer = Linear(10, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(3, 10)).dtype == torch.bfloat16
    assert linear(torch.randn(0, 10), layer.weight, layer.bias).shape == (0, 4)


def test_state_dict_and_init_are_nn_linear_s():
    torch.manual_seed(3)
    ours = Linear(8, 3)
    torch.manual_seed(3)
    theirs = nn.Linear(8, 3)
    assert isinstance(ours, nn.Linear)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True))


def test_a_compiled_network_leaves_the_matrix_products_to_the_compiler():
    """Under torch.compile the layer is plain F.linear, which inductor lowers with its own oneDNN kernels:
    traced, the oneDNN op itself failed to lower (inductor packs only constant weights), so a compiled
    sampler or training step of any model with a Linear layer crashed, with and without gradients."""
    torch.manual_seed(4)
    layer = Linear(128, 6272)
    x = torch.randn(64, 128)
    compiled = torch.compile(layer, dynamic=False)
    with torch.no_grad():
        y = compiled(x)
    assert close(y, reference(x, layer.weight, layer.bias)[0])
    y = compiled(x.requires_grad_())
    y.sum().backward()
    assert x.grad is not None and close(x.grad, layer.weight.sum(0).expand_as(x))
