"""The step budget of time-limited runs: fixed once from a timed warm-up, stored in the checkpoints, so a
``--max-time`` run is reproducible from any checkpoint and resumes bit-identically; and what extending a
finished run with ``--resume --steps M`` does to the schedule."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genmodels.checkpoints import checkpoint_dirs, latest_checkpoint, load_checkpoint, parse_step_name
from genmodels.training.config import TrainConfig
from genmodels.training.schedule import MARGIN, SKIP, WARMUP_SECONDS, WARMUP_SHARE, StepBudget, lr_factor

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_a_step_limit_is_the_budget_and_needs_no_warm_up():
    b = StepBudget(steps=100, max_time=None)
    assert b.total == 100 and b.progress(25) == 0.25
    assert not b.observe(10, 1.0) and b.done(99, 1e9) is None and b.done(100, 0.0) == "steps"


def test_the_time_budget_is_fixed_from_the_warm_up_and_then_ignores_the_clock():
    b = StepBudget(steps=None, max_time=1.0)  # 60 s
    assert b.total is None and b.progress(1) == 0.0
    fixed = [b.observe(step, 0.5 + 0.1 * (step - SKIP)) for step in range(1, 60)]
    assert fixed.count(True) == 1
    at = fixed.index(True) + 1  # the step whose observation fixed it
    elapsed = 0.5 + 0.1 * (at - SKIP)
    assert b.total == at + int((60.0 - elapsed) * (1 - MARGIN) / 0.1)
    # From now on the machine's speed does not matter: the run stops at the budget, not at 60 s.
    assert b.done(b.total - 1, 120.0 - 1e-6) is None
    assert b.done(b.total, 1.0) == "time"
    assert b.progress(b.total // 2) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("minutes", [5.0, 20.0])
def test_a_fast_model_is_timed_for_seconds_not_for_a_count_of_steps(minutes):
    """A 5 ms step (an MLP VAE) is timed for min(20 s, 5% of the limit), not for a fixed count of steps:
    200 steps (1 s) misjudged such a run's speed by a quarter on a noisy machine."""
    b = StepBudget(steps=None, max_time=minutes)
    step = 0
    while not b.observe(step := step + 1, 0.005 * step):
        pass
    assert 0.005 * step >= min(WARMUP_SECONDS, WARMUP_SHARE * 60 * minutes) >= 15.0


def test_both_limits_take_the_smaller_and_say_which_stopped_it():
    b = StepBudget(steps=50, max_time=10.0)  # 600 s at 1 s per step would be ~580 steps: 50 is smaller
    for step in range(1, 30):  # the warm-up: 20 s
        b.observe(step, 1.0 * step)
    assert b.total == 50 and b.done(50, 1.0) == "steps"


def test_a_machine_far_slower_than_its_warm_up_still_stops_at_twice_the_limit():
    b = StepBudget(steps=None, max_time=0.1)  # 6 s; the warm-up times 0.3 s: 300 steps at 1 ms
    for step in range(1, 400):
        b.observe(step, 0.001 * step)
    assert b.total > 1000
    assert b.done(20, 12.0) == "time"  # 2 x 6 s: cut short, with a warning from the Trainer


def test_a_budget_is_restored_only_for_the_limits_it_was_fixed_for():
    saved = {"total": 321, "steps": None, "max_time": 2.0}
    same, other = StepBudget(None, 2.0), StepBudget(None, 3.0)
    same.restore(saved)
    other.restore(saved)
    assert same.total == 321 and other.total is None  # a new --max-time on resume measures afresh


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "genmodels", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _timed_args(out: Path, minutes: float) -> list[str]:
    return [
        "train", "mlp-vae", "--dataset", "digits", "--batch-size", "32", "--max-time", str(minutes), "--seed", "3",
        "--out", str(out), "--no-progress",
        "--set", "model.hidden=[64]", "--set", "model.latent_dim=4", "--set", "train.ckpt_every=25",
        "--set", "train.sample_every=0", "--set", "train.schedule=cosine", "--set", "train.ema_decay=0.9",
        "--set", "train.keep_checkpoints=1000", "--set", "train.log_every=5",
    ]  # fmt: skip


def _final(run: Path) -> dict:
    ck = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    return {"step": ck["meta"]["step"], "budget": ck["meta"]["budget"], "model": ck["model"], "ema": ck["ema"]}


def _rewind(src: Path, dst: Path, step: int) -> None:
    """A copy of run ``src`` as it was when its checkpoint of ``step`` was the latest."""
    shutil.copytree(src, dst)
    for d in checkpoint_dirs(dst / "checkpoints"):
        if parse_step_name(d.name)[0] > step:
            shutil.rmtree(d)
    name = next(d.name for d in checkpoint_dirs(dst / "checkpoints") if parse_step_name(d.name)[0] == step)
    (dst / "checkpoints" / "latest").write_text(name + "\n")


def test_a_time_limited_run_resumes_bit_identically_from_any_checkpoint_even_after_a_kill(tmp_path):
    ref = tmp_path / "ref"
    p = _cli(*_timed_args(ref, 0.15))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    a = _final(ref)
    budget = a["budget"]
    assert budget["max_time"] == 0.15 and budget["total"] == a["step"] > 50, budget
    # The budget was fixed right after the warm-up and checkpointed then;
    # checkpoints before it have none, every one after it the same.
    metas = [load_checkpoint(d)["meta"] for d in checkpoint_dirs(ref / "checkpoints")]
    fixed = [m for m in metas if m["budget"]["total"] is not None]
    assert fixed and all(m["budget"] == budget for m in fixed)
    assert all(m["budget"]["total"] is None for m in metas if m["step"] < fixed[0]["step"])
    steps = sorted({m["step"] for m in fixed})
    middle = steps[len(steps) // 2]
    # Resume a copy from the middle, kill it once it has made progress, resume again: the same final weights,
    # although this machine is busier now than when the budget was measured (the budget is not re-measured).
    run = tmp_path / "rewound"
    _rewind(ref, run, middle)
    p = _cli("train", "--resume", str(run), "--no-progress")
    deadline = time.time() + 120
    while time.time() < deadline and parse_step_name((run / "checkpoints" / "latest").read_text().strip())[0] <= middle:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    p = _cli("train", "--resume", str(run), "--no-progress")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    b = _final(run)
    assert b["step"] == a["step"] and b["budget"] == budget
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert "(time)" in out  # reported as stopped by its time limit


def test_extending_a_finished_cosine_run_restarts_the_decay_over_the_new_horizon(tmp_path):
    run = tmp_path / "r"
    args = [a if a != "--max-time" else "--steps" for a in _timed_args(run, 0.1)]
    args[args.index("--steps") + 1] = "40"
    p = _cli(*args)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    p = _cli("train", "--resume", str(run), "--steps", "100", "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    cfg = TrainConfig(steps=100, schedule="cosine", lr=1e-3)
    # A record at step s carries the rate its last step ran with (step s - 1): over 40 steps, then over 100.
    assert lr[40] == pytest.approx(1e-3 * lr_factor(TrainConfig(steps=40, schedule="cosine"), 39, 39 / 40))
    for s in (45, 70, 100):
        assert lr[s] == pytest.approx(1e-3 * lr_factor(cfg, s - 1, (s - 1) / 100)), s
    assert lr[45] > 10 * lr[40]  # the warm restart: from nearly 0 back up to the cosine at 44 / 100
    assert math.isclose(_final(run)["step"], 100)
