"""LeanAdam: torch's fused Adam, bit for bit, with its short path taken."""

from __future__ import annotations

import subprocess
import sys

import torch
from torch import nn

from genmodels.training.optim import LeanAdam


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


def test_state_dict_round_trips_through_plain_adam():
    a, b, lean, _ = twins()
    train(a, lean, 5)
    again = LeanAdam(b.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)
    again.load_state_dict(lean.state_dict())
    plain = torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)
    plain.load_state_dict(lean.state_dict())
    assert again.state_dict()["state"].keys() == plain.state_dict()["state"].keys()


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
