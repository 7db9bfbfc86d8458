"""Fast paths on private torch ops: decided per machine at first use, overridable, and falling back to the
plain path, with the plain path's results, when the op is missing, wrong, raising or slower."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from genmodels import device
from genmodels.errors import GenmodelsError
from genmodels.nets import Linear

linear_mod = importlib.import_module("genmodels.nets.linear")  # genmodels.nets re-exports a function of that name
optim_mod = importlib.import_module("genmodels.training.optim")
LeanAdam = optim_mod.LeanAdam
NAMES = ("lean_adam", "onednn_linear")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path):
    """Each test decides afresh, with its own machine cache, no override in the environment, on a machine
    that counts as quiet (how busy it really is would change what gets cached)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(device, "_busy", lambda: "")
    for var in ("GENMODELS_FASTPATHS", "GENMODELS_ONEDNN_LINEAR"):
        monkeypatch.delenv(var, raising=False)
    device.forget_fast_paths()
    yield
    device.forget_fast_paths()


def fake_timings(monkeypatch, name: str, fast: float, plain: float, halves=None) -> list[int]:
    """Replace ``name``'s measurement by fixed timings; returns the list that counts its calls."""
    calls: list[int] = []
    real = device._probes[name]

    def measure() -> dict:
        calls.append(1)
        return {"fast_s": fast, "plain_s": plain, **({"halves": halves} if halves else {})}

    monkeypatch.setitem(device._probes, name, device._Probe(real.check, measure))
    return calls


def cached() -> dict:
    """This machine's decisions in the cache file."""
    path = device.cache_file()
    return json.loads(path.read_text())["machines"][device.machine_key()] if path.exists() else {}


def ops_run(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events()}


class _Without:
    """torch.ops.mkldnn with one op hidden (missing) or replaced."""

    def __init__(self, hidden: str, replacement=None):
        self._ns, self._hidden, self._replacement = torch.ops.mkldnn, hidden, replacement

    def __getattr__(self, name: str):
        if name == self._hidden:
            if self._replacement is None:
                raise AttributeError(name)
            return self._replacement
        return getattr(self._ns, name)


def _refuse(*args, **kwargs):
    raise RuntimeError("could not create a primitive descriptor")


# ----------------------------------------------------------------------------- the decision


def test_nothing_is_decided_or_measured_at_import(tmp_path):
    code = (
        "import genmodels.device as d\n"
        "calls = []\n"
        "real = d.race\n"
        "d.race = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
        "import genmodels.nets, genmodels.training.optim, genmodels.training.trainer, genmodels.models\n"
        "from genmodels.nets import Linear\n"
        "Linear(512, 256)\n"
        "assert not d._decided and not calls and not d.cache_file().exists(), (d._decided, calls)\n"
        "d.fast_paths()\n"  # and the instrument would have seen a measurement
        "assert sorted(d._decided) == ['lean_adam', 'onednn_linear'] and calls, (d._decided, calls)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "GENMODELS_FASTPATHS": "auto"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr


def test_decided_once_per_process_then_read_from_the_machine_cache(monkeypatch):
    calls = {name: fake_timings(monkeypatch, name, fast=0.5, plain=1.0) for name in NAMES}
    assert device.fast_path("onednn_linear") and device.fast_path("onednn_linear")
    got = device.fast_paths()
    assert set(got) == set(NAMES) and all(len(c) == 1 for c in calls.values()), calls
    for entry in got.values():
        assert entry["chosen"] is True and "0.50x" in entry["why"] and entry["measured"]["ratio"] == 0.5
    assert set(cached()) == set(NAMES) and cached()["lean_adam"]["chosen"] is True
    device.forget_fast_paths()  # as a new process on the same machine: the cache answers
    again = device.fast_paths()
    assert all(len(c) == 1 for c in calls.values()) and "measured earlier" in again["onednn_linear"]["why"]
    device.fast_paths(remeasure=True)
    assert all(len(c) == 2 for c in calls.values())


@pytest.mark.parametrize(
    "fast, plain, halves, chosen",
    [
        (0.50, 1.0, None, True),
        (0.94, 1.0, None, True),
        (0.96, 1.0, None, False),  # within the 5% margin: noise, not a win
        (1.30, 1.0, None, False),
        (0.50, 1.0, [[0.5, 1.0], [1.1, 1.0]], False),  # the two halves of the rounds disagree: a busy machine
    ],
)
def test_a_fast_path_is_used_only_where_it_wins_by_the_margin(monkeypatch, fast, plain, halves, chosen):
    fake_timings(monkeypatch, "onednn_linear", fast, plain, halves)
    got = device.fast_paths()["onednn_linear"]
    assert got["chosen"] is chosen, got
    assert cached()["onednn_linear"]["measured"]["settled"] is (halves is None)


def test_a_decision_timed_on_a_busy_machine_says_so_and_stands_until_remeasured(monkeypatch):
    calls = fake_timings(monkeypatch, "onednn_linear", 0.5, 1.0)
    monkeypatch.setattr(device, "_busy", lambda: "load 9.0 on 2 CPUs")
    got = device.fast_paths()["onednn_linear"]
    assert got["chosen"] and "busy machine (load 9.0 on 2 CPUs)" in got["why"] and "remeasure" in got["why"]
    assert cached()["onednn_linear"]["measured"]["settled"] is False
    monkeypatch.setattr(device, "_busy", lambda: "")
    device.forget_fast_paths()  # a later process, even on the quiet machine, keeps it: a resume computes the same
    assert device.fast_path("onednn_linear") and len(calls) == 1
    device.fast_paths(remeasure=True)
    assert len(calls) == 2 and cached()["onednn_linear"]["measured"]["settled"] is True


def test_processes_that_start_together_take_the_same_decision(tmp_path):
    """Each would time a coin toss; the machine lock makes the second wait for the first one's decision."""
    code = (
        "import random, sys, time\n"
        "import genmodels.nets\n"
        "from genmodels import device\n"
        "def toss():\n"
        "    open(sys.argv[1], 'a').write('measured\\n')\n"
        "    time.sleep(1.0)\n"
        "    return {'fast_s': random.choice([0.5, 2.0]), 'plain_s': 1.0}\n"
        "device._probes['onednn_linear'] = device._Probe(lambda: None, toss)\n"
        "print(device.fast_path('onednn_linear'))\n"
    )
    log = tmp_path / "measured.txt"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "GENMODELS_FASTPATHS": "auto"}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(log)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    answers = {p.communicate(timeout=300)[0].strip() for p in procs}
    assert log.read_text().count("measured") == 1 and len(answers) == 1, (log.read_text(), answers)


@pytest.mark.parametrize("damage", ["garbage", "other format", "directory", "fifo"])
def test_a_damaged_or_odd_cache_is_measured_again(monkeypatch, damage):
    calls = fake_timings(monkeypatch, "onednn_linear", 0.5, 1.0)
    path = device.cache_file()
    path.parent.mkdir(parents=True)
    if damage == "garbage":
        path.write_bytes(b"\xff{not json")
    elif damage == "other format":
        path.write_text(json.dumps({"format": 99, "machines": {device.machine_key(): {"onednn_linear": {}}}}))
    elif damage == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # opened without O_NONBLOCK this would hang the first Linear call
    assert device.fast_path("onednn_linear") is True and len(calls) == 1
    if damage != "directory":  # replaced by a good cache
        assert cached()["onednn_linear"]["chosen"] is True


def test_the_environment_overrides_the_measurement(monkeypatch):
    calls = {name: fake_timings(monkeypatch, name, fast=0.5, plain=1.0) for name in NAMES}
    monkeypatch.setenv("GENMODELS_FASTPATHS", "off")
    assert not any(e["chosen"] for e in device.fast_paths().values())
    layer = Linear(512, 256)
    assert "aten::addmm" in ops_run(lambda: layer(torch.randn(32, 512)))
    device.forget_fast_paths()
    monkeypatch.setenv("GENMODELS_FASTPATHS", "on")
    got = device.fast_paths()
    assert got["lean_adam"]["chosen"] and "=on" in got["lean_adam"]["why"]
    if linear_mod._op() is not None:
        assert got["onednn_linear"]["chosen"]
        assert "mkldnn::_linear_pointwise" in ops_run(lambda: layer(torch.randn(32, 512)))
    assert not any(calls.values())  # neither setting measures
    device.forget_fast_paths()
    monkeypatch.setenv("GENMODELS_FASTPATHS", "fast")
    with pytest.raises(GenmodelsError, match="GENMODELS_FASTPATHS='fast' is not a setting; use auto, on or off"):
        device.fast_path("onednn_linear")
    monkeypatch.setenv("GENMODELS_FASTPATHS", "on")
    monkeypatch.setenv("GENMODELS_ONEDNN_LINEAR", "0")  # the older switch still turns the linear path off
    got = device.fast_paths()["onednn_linear"]
    assert not got["chosen"] and "GENMODELS_ONEDNN_LINEAR=0" in got["why"]


def test_the_probes_leave_the_global_random_state_and_the_caller_s_context_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with torch.inference_mode():  # a first use inside inference mode (sampling) decides as well
        got = device.fast_paths(remeasure=True)
    assert torch.equal(torch.rand(3), expected)
    for entry in got.values():  # the real measurement on this machine, in the shape fast_paths promises
        assert isinstance(entry["chosen"], bool) and entry["why"]
        m = entry["measured"]
        if m:
            assert m["fast_s"] > 0 and m["plain_s"] > 0 and m["ratio"] == pytest.approx(m["fast_s"] / m["plain_s"])
            assert entry["chosen"] == (m["ratio"] < 1 - device.MARGIN) or "disagree" in entry["why"]


def test_race_takes_each_side_s_fastest_call_and_keeps_to_its_budget():
    def nap(s):
        return lambda: time.sleep(s)

    t0 = time.perf_counter()
    got = device.race([(nap(0.002), nap(0.006))], budget_s=0.05, min_reps=4)
    assert 4 <= got["reps"] <= 7 and time.perf_counter() - t0 < 1.0
    assert 0.002 <= got["fast_s"] < got["plain_s"] and len(got["halves"]) == 2
    got = device.race([(nap(0.1), nap(0.1))], budget_s=0.05, min_reps=4)
    assert got["reps"] == 2  # slow units: stops at 4x the budget, after one round of each half


# ----------------------------------------------------------------------------- oneDNN linear falls back


def _linear_twins() -> tuple[Linear, nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    ours = Linear(512, 256)
    plain = nn.Linear(512, 256)
    plain.load_state_dict(ours.state_dict())
    return ours, plain, torch.randn(64, 512)


def _forward_backward(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    y = layer(x)
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return [y.detach(), x.grad, layer.weight.grad, layer.bias.grad]


@pytest.mark.parametrize("how", ["missing", "raises", "wrong", "slower"])
def test_linear_is_nn_linear_when_the_onednn_op_is_missing_raising_wrong_or_slower(monkeypatch, how):
    if how == "slower":
        fake_timings(monkeypatch, "onednn_linear", fast=1.2, plain=1.0)
    else:
        replacement = {"missing": None, "raises": _refuse, "wrong": lambda x, w, b, *a: F.linear(x, w, b) * 1.01}[how]
        monkeypatch.setattr(torch.ops, "mkldnn", _Without("_linear_pointwise", replacement))
    got = device.fast_paths()["onednn_linear"]
    assert got["chosen"] is False, got
    why = {"missing": "missing", "raises": "check failed", "wrong": "other results", "slower": "1.20x"}[how]
    assert why in got["why"], got
    ours, plain, x = _linear_twins()
    assert "mkldnn::_linear_pointwise" not in ops_run(lambda: ours(x))
    for a, b in zip(_forward_backward(ours, x), _forward_backward(plain, x), strict=True):
        assert torch.equal(a, b)  # the plain path is nn.Linear's own function, bit for bit


def test_a_product_the_chosen_op_refuses_falls_back_to_the_blas(monkeypatch):
    monkeypatch.setenv("GENMODELS_FASTPATHS", "on")
    if not device.fast_path("onednn_linear"):
        pytest.skip("no oneDNN linear op in this torch build")
    ours, plain, x = _linear_twins()
    monkeypatch.setattr(torch.ops, "mkldnn", _Without("_linear_pointwise", _refuse))
    for a, b in zip(_forward_backward(ours, x), _forward_backward(plain, x), strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- LeanAdam falls back


def _adam_twins() -> tuple[nn.Module, nn.Module, LeanAdam, torch.optim.Adam]:
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(10, 32), nn.LeakyReLU(0.2), nn.Linear(32, 3))
    b = nn.Sequential(nn.Linear(10, 32), nn.LeakyReLU(0.2), nn.Linear(32, 3))
    b.load_state_dict(a.state_dict())
    kw = {"lr": 1e-2, "betas": (0.5, 0.999), "fused": True}
    return a, b, LeanAdam(a.parameters(), **kw), torch.optim.Adam(b.parameters(), **kw)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 8) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 10, generator=g), torch.randn(16, 3, generator=g)
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x), y).backward()
        opt.step()


def _changed_for_direct_calls(kernel, how: str):
    """The fused kernel as a torch whose private signature changed would present it to LeanAdam's direct call:
    torch's own Adam (which passes ``grad_scale``) still gets the real kernel."""

    def changed(*args, **kwargs):
        if "grad_scale" in kwargs:
            return kernel(*args, **kwargs)
        if how == "raises":
            raise TypeError("_fused_adam_() missing required argument 'grad_scale'")
        kwargs["beta1"], kwargs["beta2"] = kwargs["beta2"], kwargs["beta1"]  # same names, other meaning
        return kernel(*args, **kwargs)

    return changed


@pytest.mark.parametrize("how", ["missing", "raises", "wrong", "slower"])
def test_lean_adam_is_torch_s_adam_when_the_fused_kernel_is_missing_raising_wrong_or_slower(monkeypatch, how):
    with monkeypatch.context() as hidden:  # hidden while deciding only: torch's own fused Adam needs the kernel
        if how == "missing":
            hidden.delattr(torch, "_fused_adam_")
        elif how in ("raises", "wrong"):
            hidden.setattr(torch, "_fused_adam_", _changed_for_direct_calls(torch._fused_adam_, how))
        else:
            fake_timings(monkeypatch, "lean_adam", fast=1.2, plain=1.0)
        got = device.fast_paths()["lean_adam"]
    assert got["chosen"] is False, got
    why = {"missing": "missing", "raises": "check failed", "wrong": "bit for bit", "slower": "1.20x"}[how]
    assert why in got["why"], got
    a, b, lean, ref = _adam_twins()
    torch_steps = []
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda s, c=None: torch_steps.append(1) or real_step(s, c))
    _train(a, lean)
    assert len(torch_steps) == 8  # every step of the LeanAdam went through torch's own
    _train(b, ref)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        assert all(torch.equal(lean.state[p][k], ref.state[q][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_a_lean_adam_that_could_never_take_the_short_path_never_times_it(monkeypatch):
    """float64 parameters here, CUDA ones on a GPU: the first steps must not pay for a CPU measurement."""
    calls = fake_timings(monkeypatch, "lean_adam", 0.5, 1.0)
    model = nn.Linear(4, 2).double()
    opt = LeanAdam(model.parameters(), lr=1e-2, fused=True)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4, dtype=torch.float64)).sum().backward()
        opt.step()
    assert not calls and "lean_adam" not in device._decided


def test_lean_adam_without_torch_s_global_hook_registries(tmp_path):
    """A torch without the private registries: LeanAdam imports, never takes the short path, honours hooks."""
    code = (
        "import torch, torch.optim.optimizer as o\n"
        "saved = o._global_optimizer_pre_hooks, o._global_optimizer_post_hooks\n"
        "del o._global_optimizer_pre_hooks, o._global_optimizer_post_hooks\n"
        "from genmodels.training.optim import LeanAdam\n"
        "o._global_optimizer_pre_hooks, o._global_optimizer_post_hooks = saved  # torch's own step needs them\n"
        "from genmodels.device import fast_paths\n"
        "got = fast_paths()['lean_adam']\n"
        "assert not got['chosen'] and 'hook registries' in got['why'], got\n"
        "ps = [torch.nn.Parameter(torch.ones(3)) for _ in range(2)]\n"
        "lean = LeanAdam([ps[0]], lr=0.1, fused=True)\n"
        "ref = torch.optim.Adam([ps[1]], lr=0.1, fused=True)\n"
        "seen = []\n"
        "lean.register_step_post_hook(lambda *a: seen.append(1))\n"
        "for i in range(4):\n"
        "    for p, opt in zip(ps, (lean, ref)):\n"
        "        p.grad = torch.full((3,), float(i + 1))\n"
        "        opt.step()\n"
        "assert len(seen) == 4 and torch.equal(ps[0], ps[1]), (seen, ps)\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "GENMODELS_FASTPATHS": "on"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
