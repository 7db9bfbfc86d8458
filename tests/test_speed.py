"""How a training step runs on the machine (``training.speed``): precision, memory layout and torch.compile
chosen by timing the model's own step, without changing what the run computes, recorded in every checkpoint
so that a resume (compiled kernels included) continues bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genmodels.api import train
from genmodels.checkpoints import latest_checkpoint
from genmodels.training.speed import PLAN_PREFIX, StepPlan, _worth_compiling
from helpers import ForkedCLI

TINY_AE = {"model.channels": [8, 16], "model.latent_dim": 4, "train.schedule": "constant", "train.sample_every": 0}
TINY_GAN = {
    "model.g_channels": [16, 8],
    "model.d_channels": [8, 16],
    "model.latent_dim": 8,
    "train.sample_every": 0,
    "train.monitor_classes": 0,
}


def real_cli(*args: str) -> subprocess.CompletedProcess:
    """``genmodels ARGS`` in a new interpreter on this process's thread count (the forked test CLI runs on 1
    thread: another machine key for the fast-path cache, and other kernels: inductor splits its loops by the
    thread count, so bit-identical resumes hold for the same machine and thread count, the cache's key)."""
    return subprocess.run([sys.executable, "-m", "genmodels", *args], capture_output=True, text=True, timeout=600)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run / "checkpoints") / "model.safetensors")


def saved_plan(run: Path) -> dict:
    return json.loads((latest_checkpoint(run / "checkpoints") / "state.json").read_text())["step_plan"]


def cached_plans() -> dict[str, dict]:
    from genmodels.device import cached_decisions

    return {k: v["measured"]["plan"] for k, v in cached_decisions().items() if k.startswith(PLAN_PREFIX)}


@pytest.mark.parametrize(
    "model, overrides",
    [("conv-ae", {**TINY_AE, "train.ema_decay": 0.9}), ("dcgan", TINY_GAN)],
    ids=["autoencoder-with-ema", "gan-with-batch-norm"],
)
def test_timing_the_step_changes_nothing_the_run_computes(tmp_path, model, overrides):
    """The probe runs forward and backward passes on the real model (batch-norm statistics, the random
    state, gradients): a run that timed its step ends with the very weights of a run told the same plan."""
    auto = {**overrides, "train.precision": "auto", "train.channels_last": "auto", "train.compile": "off"}
    train(model, "digits", steps=12, batch_size=16, out=tmp_path / "timed", progress=False, overrides=auto)
    plan = saved_plan(tmp_path / "timed")
    assert plan["why"].startswith("timed forward+backward"), plan  # it was measured, not assumed
    told = {
        **overrides,
        "train.precision": plan["precision"],
        "train.channels_last": "on" if plan["channels_last"] else "off",
        "train.compile": "off",
    }
    train(model, "digits", steps=12, batch_size=16, out=tmp_path / "told", progress=False, overrides=told)
    assert saved_plan(tmp_path / "told")["why"] == "set in the config"
    a, b = weights(tmp_path / "timed"), weights(tmp_path / "told")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_both_layouts_train_the_same_model_and_the_same_ema(tmp_path):
    """channels_last is a layout, not a different computation: after 12 steps the weights and their EMA agree
    with the contiguous run's to float rounding. (The EMA once kept following the weights' old storage after
    the layout change, so it averaged the initial weights and the samples were noise.)"""
    runs = {}
    for layout in ("on", "off"):
        over = {
            **TINY_AE,
            "train.channels_last": layout,
            "train.compile": "off",
            "train.precision": "fp32",
            "train.ema_decay": 0.5,
        }
        train("conv-ae", "digits", steps=12, batch_size=16, out=tmp_path / layout, progress=False, overrides=over)
        ck = latest_checkpoint(tmp_path / layout / "checkpoints")
        runs[layout] = {"model": load_file(ck / "model.safetensors"), "ema": load_file(ck / "ema.safetensors")}
        assert saved_plan(tmp_path / layout)["channels_last"] is (layout == "on")
    for part in ("model", "ema"):
        for k, v in runs["on"][part].items():
            torch.testing.assert_close(v, runs["off"][part][k], rtol=1e-4, atol=1e-5, msg=f"{part} {k}")


def test_a_compiled_run_resumes_bit_for_bit_in_a_new_process(tmp_path):
    """train.compile=on: 8 steps in one go, and 4 steps then a resume to 8 in a fresh process (which compiles
    again), end with identical weights; every checkpoint says the steps ran compiled."""
    over = {**TINY_AE, "train.compile": "on", "train.precision": "fp32", "train.ckpt_every": 4}
    train("conv-ae", "digits", steps=8, batch_size=16, out=tmp_path / "straight", progress=False, overrides=over)
    assert saved_plan(tmp_path / "straight")["compile"] is True
    train("conv-ae", "digits", steps=4, batch_size=16, out=tmp_path / "split", progress=False, overrides=over)
    proc = real_cli("train", "--resume", str(tmp_path / "split"), "--steps", "8", "--no-progress")
    err = proc.stderr
    assert proc.returncode == 0, err
    assert "training step: fp32, " in proc.stdout and ", compiled (" in proc.stdout, proc.stdout
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


def test_a_resume_takes_its_run_s_plan_not_the_machine_s_newer_one(tmp_path):
    """The plan a run started with is in its checkpoint: a resume keeps it even after the machine's cached
    plan for the config changed (otherwise the resumed steps would round differently)."""
    over = {
        **TINY_AE,
        "model.latent_dim": 5,  # a config of its own: no other test's cached plan
        "train.precision": "auto",
        "train.channels_last": "auto",
        "train.compile": "off",
    }
    before = cached_plans()
    train("conv-ae", "digits", steps=4, batch_size=16, out=tmp_path / "r", progress=False, overrides=over)
    first = saved_plan(tmp_path / "r")
    from genmodels.device import remember_decision

    plans = {k: v for k, v in cached_plans().items() if k not in before}
    assert len(plans) == 1, "the first run's plan is cached for the machine"
    for key, plan in plans.items():  # the machine now says the opposite layout
        flipped = {**plan, "channels_last": not plan["channels_last"], "why": "flipped by the test"}
        remember_decision(key, {"chosen": False, "why": "flipped", "measured": {"plan": flipped}})
    train(resume=tmp_path / "r", steps=8, progress=False)
    assert saved_plan(tmp_path / "r")["channels_last"] is first["channels_last"]
    # A new run of the same config takes the machine's (flipped) plan.
    train("conv-ae", "digits", steps=2, batch_size=16, out=tmp_path / "new", progress=False, overrides=over)
    assert saved_plan(tmp_path / "new")["channels_last"] is not first["channels_last"]


def test_a_short_run_does_not_pay_for_a_compile(tmp_path):
    over = {**TINY_AE, "model.latent_dim": 6, "train.compile": "auto"}
    train("conv-ae", "digits", steps=3, batch_size=16, out=tmp_path / "r", progress=False, overrides=over)
    plan = saved_plan(tmp_path / "r")
    assert plan["compile"] is False and "not compiled: the run has about" in plan["why"], plan


def test_only_a_run_of_ten_minutes_or_more_tries_a_compile():
    """A compile try costs 17-82 s on 2 cores and was kept for one family default in six: a 3- or 5-minute run
    (the old-against-new benchmark's length) does not try it; 10 minutes and more do."""
    for minutes in (3, 5, 9):
        worth, why = _worth_compiling(None, 60.0 * minutes, eager_s=0.1)
        assert worth is False and f"about {60 * minutes:.0f} s left, under the 570 s" in why, why
    for seconds_gone in (0.0, 5.0, 20.0):  # a --max-time 10 run, its data loaded and its probe timed
        assert _worth_compiling(None, 600.0 - seconds_gone, eager_s=0.1) == (True, "")


def test_doctor_lists_the_timed_plans_and_remeasure_drops_them(tmp_path):
    over = {**TINY_AE, "model.latent_dim": 7, "train.precision": "auto", "train.compile": "off"}
    train("conv-ae", "digits", steps=2, batch_size=16, out=tmp_path / "r", progress=False, overrides=over)
    proc = real_cli("doctor")
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err
    assert "training steps (timed by each model's first run here" in out
    assert any(line.strip().startswith("conv-ae ") and "timed forward+backward" in line for line in out.splitlines()), (
        out
    )
    proc = real_cli("doctor", "--remeasure")
    assert proc.returncode == 0, proc.stderr
    assert "cached plans dropped" in proc.stdout
    assert not cached_plans()


@pytest.mark.parametrize("value", ["fast", "maybe"])
def test_an_unknown_setting_is_one_error_line(tmp_path, value):
    proc = ForkedCLI(
        "train",
        "conv-ae",
        "--dataset",
        "digits",
        "--steps",
        "1",
        "--set",
        f"train.compile={value}",
        "--out",
        str(tmp_path / "r"),
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and err.count("\n") == 1 and "train.compile setting" in err, err
    assert not (tmp_path / "r").exists()


def test_yaml_on_and_off_are_the_switches(tmp_path):
    from genmodels.training.config import TrainConfig

    assert TrainConfig(steps=1, compile=True, channels_last=False).compile == "on"
    assert TrainConfig(steps=1, compile=True, channels_last=False).channels_last == "off"
    assert StepPlan.from_dict({"precision": "bf16", "channels_last": True, "compile": "yes"}) is None


def test_the_sampling_layout_is_timed_once_and_draws_the_same_images(tmp_path, monkeypatch):
    """A run's first draw times its sampling network in both layouts (on the inputs a real draw gives it),
    caches the verdict for the machine and applies it; either layout draws the same images for a seed (up to
    float rounding: the same uint8 pixels), and the timing consumes none of the draw's random numbers."""
    from genmodels.device import cached_decisions
    from genmodels.models.sampling_layout import SAMPLE_PREFIX
    from genmodels.training import load_run
    from genmodels.viz import to_uint8

    train("dcgan", "digits", steps=3, batch_size=16, out=tmp_path / "r", progress=False, overrides=TINY_GAN)
    draws = {}
    for setting in ("off", "on", "auto"):  # off: contiguous; on: channels_last untimed; auto: measured
        monkeypatch.setenv("GENMODELS_FASTPATHS", setting)
        run = load_run(tmp_path / "r")
        draws[setting] = run.sample(40, seed=3)
        layout, why = run.sampling_layout()
        first_conv = next(p for p in run.model.generator.parameters() if p.dim() == 4)
        assert first_conv.is_contiguous(memory_format=torch.channels_last if layout else torch.contiguous_format)
        assert layout is {"off": False, "on": True}.get(setting, layout), why
    timed = {k: v for k, v in cached_decisions().items() if k.startswith(SAMPLE_PREFIX + "dcgan ")}
    assert len(timed) == 1 and "timed the sampling networks at batch 500" in next(iter(timed.values()))["why"]
    assert "measured earlier on this machine" in load_run(tmp_path / "r").sampling_layout()[1]
    layouts_differ = max(float((draws[s] - draws["off"]).abs().max()) for s in ("on", "auto"))
    seeds_differ = float((load_run(tmp_path / "r").sample(40, seed=4) - draws["off"]).abs().max())
    assert layouts_differ < 1e-5 and seeds_differ > 100 * max(layouts_differ, 1e-7), (layouts_differ, seeds_differ)
    for setting in ("on", "auto"):
        assert (to_uint8(draws[setting]) != to_uint8(draws["off"])).mean() < 1e-3


def test_a_model_without_convolutions_samples_as_it_is(tmp_path):
    from genmodels.training import load_run

    train(
        "gan-mlp",
        "digits",
        steps=2,
        batch_size=16,
        out=tmp_path / "r",
        progress=False,
        overrides={"model.g_hidden": [32], "model.d_hidden": [32], "train.sample_every": 0},
    )
    run = load_run(tmp_path / "r")
    run.sample(4)
    assert run.sampling_layout() == (False, "no convolutional sampling network")


def test_a_plan_that_cannot_compile_here_trains_eager(tmp_path, monkeypatch, capsys):
    """A compiled plan from the machine's cache (or a checkpoint) whose compile fails at the first step, here
    because inductor's C++ compiler is broken, does not end the run: it trains eager from that step, warns
    once, records the eager plan, and ends with the very weights of a run told to train eager."""
    import torch._inductor.config as inductor

    from genmodels.device import remember_decision

    over = {**TINY_AE, "model.latent_dim": 9, "train.precision": "fp32", "train.channels_last": "off"}
    train(
        "conv-ae",
        "digits",
        steps=3,
        batch_size=16,
        out=tmp_path / "eager",
        progress=False,
        overrides={**over, "train.compile": "off"},
    )
    auto = {**over, "train.compile": "auto"}
    train("conv-ae", "digits", steps=1, batch_size=16, out=tmp_path / "probe", progress=False, overrides=auto)
    (key,) = [
        k
        for k, v in cached_plans().items()
        if k.startswith(PLAN_PREFIX + "conv-ae ") and saved_plan(tmp_path / "probe") == v
    ]
    compiled = {"precision": "fp32", "channels_last": False, "compile": True, "why": "compiled (set by the test)"}
    remember_decision(key, {"chosen": True, "why": "set by the test", "measured": {"plan": compiled}})
    monkeypatch.setattr(inductor.cpp, "cxx", (None, "/bin/false"))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    torch._dynamo.reset()
    capsys.readouterr()
    train("conv-ae", "digits", steps=3, batch_size=16, out=tmp_path / "r", progress=False, overrides=auto)
    err = capsys.readouterr().err
    assert err.count("warning: torch.compile failed") == 1, err
    plan = saved_plan(tmp_path / "r")
    assert plan["compile"] is False and "the compile failed at the first step" in plan["why"], plan
    a, b = weights(tmp_path / "r"), weights(tmp_path / "eager")
    assert all(torch.equal(a[k], b[k]) for k in b)
