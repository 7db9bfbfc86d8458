"""LeanAdam: torch's fused Adam, bit for bit, with its short path taken.

These tests pin the short path itself (``GENMODELS_FASTPATHS=on``); whether a machine takes it, and the
fallback when the kernel is missing, wrong or slower, are tests/test_fastpaths.py's.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch import nn

from genmodels.device import fast_path, fast_paths, forget_fast_paths
from genmodels.training.optim import LeanAdam


@pytest.fixture(autouse=True)
def _short_path_wherever_it_exists(monkeypatch):
    monkeypatch.setenv("GENMODELS_FASTPATHS", "on")
    forget_fast_paths()
    # Decided here, not at a test's first step: the check steps optimizers of its own, which would count.
    assert fast_path("lean_adam"), fast_paths()["lean_adam"]["why"]
    yield
    forget_fast_paths()


def twins(weight_decay: float = 0.0, groups: bool = False) -> tuple[nn.Module, nn.Module, LeanAdam, torch.optim.Adam]:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.Linear(32, 3))
    b = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.Linear(32, 3))
    b.load_state_dict(a.state_dict())

    def params(m: nn.Module) -> list:
        if groups:  # two groups with their own learning rates
            return [{"params": m[0].parameters(), "lr": 3e-3}, {"params": [*m[1].parameters(), *m[2].parameters()]}]
        return list(m.parameters())

    kw = {"lr": 1e-2, "betas": (0.5, 0.999), "weight_decay": weight_decay, "fused": True}
    return a, b, LeanAdam(params(a), **kw), torch.optim.Adam(params(b), **kw)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, lr_decay: bool = False) -> None:
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        x, y = torch.randn(16, 10, generator=g), torch.randn(16, 3, generator=g)
        opt.zero_grad(set_to_none=True)
        if i == 3:  # a step where one layer gets no gradient at all
            model[2].weight.requires_grad_(False)
        nn.functional.mse_loss(model(x), y).backward()
        model[2].weight.requires_grad_(True)
        opt.step()
        if lr_decay:
            for group in opt.param_groups:
                group["lr"] *= 0.9


def test_updates_are_bit_identical_to_torch_fused_adam():
    for wd, groups in ((0.0, False), (1e-2, True)):
        a, b, lean, ref = twins(wd, groups)
        train(a, lean, 12, lr_decay=True)
        train(b, ref, 12, lr_decay=True)
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name
        sa, sb = lean.state_dict(), ref.state_dict()
        for k in sa["state"]:
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(sa["state"][k][key], sb["state"][k][key])


def test_the_short_path_is_taken_after_the_first_step_and_not_with_hooks(monkeypatch):
    a, _, lean, _ = twins()
    calls = []
    original = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: calls.append(1) or original(self, closure))
    train(a, lean, 4)
    assert len(calls) == 1  # only the first step (no state yet) went through torch's own step
    lean.register_step_post_hook(lambda *args: None)
    train(a, lean, 2)
    assert len(calls) == 3  # with a hook registered, torch's path runs so the hook is honoured


def same_state(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> None:
    """Bit-for-bit equal per-parameter state (step, exp_avg, exp_avg_sq) and parameters."""
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[k][key], sb[k][key]), (k, key)
    for p, q in zip(a.param_groups[0]["params"], b.param_groups[0]["params"], strict=True):
        assert torch.equal(p, q)


def test_state_dict_round_trips_through_plain_adam(monkeypatch):
    """A LeanAdam's state saved to bytes and loaded into a LeanAdam and into torch's Adam: the same values,
    and training on from them gives the same updates, bit for bit, as a run that was never saved."""
    a, b, lean, ref = twins()
    train(a, lean, 5)
    train(b, ref, 5)
    same_state(lean, ref)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": lean.state_dict()}, buf)
    resumed = []
    for cls in (LeanAdam, torch.optim.Adam):
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        model = twins()[0]
        model.load_state_dict(saved["model"])
        opt = cls(model.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)
        opt.load_state_dict(saved["opt"])
        same_state(opt, lean)
        resumed.append((model, opt))
    torch_steps = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda s, c=None: torch_steps.append(type(s)) or real_step(s, c))
    train(b, ref, 7)  # the run that was never saved
    for model, opt in resumed:
        train(model, opt, 7)
        same_state(opt, ref)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), b.parameters(), strict=True))
    assert LeanAdam not in torch_steps  # the resumed LeanAdam took its short path from the first step on


def test_hooks_run_in_a_process_that_never_made_a_plain_adam():
    code = (
        "import torch\n"
        "from genmodels.training.optim import LeanAdam\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "opt = LeanAdam([p], lr=0.1, fused=True)\n"
        "seen = []\n"
        "opt.register_step_post_hook(lambda *a: seen.append(1))\n"
        "for _ in range(3):\n"
        "    p.grad = torch.ones(3)\n"
        "    opt.step()\n"
        "assert len(seen) == 3 and p.detach().lt(1).all(), seen\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
