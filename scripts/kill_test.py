"""Kill test: SIGKILL a training run at random moments, resume it each time, and check that every resume
continues, the run directory stays readable, and the final weights equal an uninterrupted run's bit for bit.

Checkpoints are written every step, and the model (an MLP VAE of 2.4M parameters: 38 MB of weights, EMA and
Adam moments per checkpoint) makes writing take longer than a step, so most kills land while a checkpoint is
being written; the report counts them (a temporary checkpoint directory left behind by the killed process).

Then the final save: with a checkpoint every step, the last step is saved twice (the periodic save, then
``fit``'s final one), and every resume of the finished run saves it once more. ``--final-trials`` times, the
finished run is resumed and killed the moment its final save starts writing (plus a random few
milliseconds): ``latest`` must still name a complete checkpoint each time (once, deleting what ``latest``
named before the new one was in place left ``latest`` naming a missing directory).

Every trial is a new operating-system process running the CLI's ``main`` (``genmodels train ...``), killed
with SIGKILL. By default the processes are forked from a multiprocessing fork server that has imported
torch and genmodels once, so a trial costs the training, not a 3-second interpreter start (the suite runs
this test); ``--fresh-processes`` starts each one as ``python -m genmodels`` instead.

usage: python scripts/kill_test.py [--trials 20] [--final-trials 5] [--steps 200] [--seed 0] [--workdir DIR]
                                   [--fresh-processes]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

SRC = str(Path(__file__).resolve().parents[1] / "src")
TRAIN = [
    "--dataset",
    "digits",
    "--batch-size",
    "32",
    "--seed",
    "11",
    "--no-progress",
    "--set",
    "model.hidden=[768,768]",
    "--set",
    "model.latent_dim=8",
    "--set",
    "train.ckpt_every=1",
    "--set",
    "train.sample_every=20",
    "--set",
    "train.log_every=5",
    "--set",
    "train.ema_decay=0.9",
    "--set",
    "train.schedule=cosine",
    "--set",
    "train.keep_checkpoints=3",
    "--set",
    "data.limit=512",
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


# What the fork server imports once, so that each forked trial starts in a fraction of a second.
PRELOAD = ["torch", "numpy", "yaml", "safetensors.torch", "sklearn.datasets", "genmodels.cli", "genmodels.api"]
FRESH = False  # --fresh-processes: each trial a new interpreter (python -m genmodels)


def _cli_child(args: list[str], err_path: str) -> None:
    """A forked trial: the CLI's main in this process, stderr to a file, one intra-op thread."""
    import torch

    from genmodels.cli import main

    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115  (the process's own stderr, left open)
    torch.set_num_threads(1)
    code = main(args)
    sys.stderr.flush()
    os._exit(code)


class Forked:
    """A trial forked from the fork server, with the part of ``subprocess.Popen`` the test uses."""

    _n = 0

    def __init__(self, args: list[str]) -> None:
        ctx = multiprocessing.get_context("forkserver")
        Forked._n += 1
        self._err = Path(tempfile.gettempdir()) / f"genmodels-kill-{os.getpid()}-{Forked._n}.err"
        self._p = ctx.Process(target=_cli_child, args=(args, str(self._err)), daemon=True)
        self._p.start()
        self.pid = self._p.pid

    @property
    def returncode(self) -> int | None:
        return self._p.exitcode

    def poll(self) -> int | None:
        return self._p.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int | None:
        self._p.join(timeout)
        return self._p.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired("genmodels", timeout or 0)
        try:
            return "", self._err.read_text(errors="replace")
        finally:
            self._err.unlink(missing_ok=True)


def _start(args: list[str]) -> subprocess.Popen | Forked:
    if not FRESH:
        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
        return Forked(args)
    return subprocess.Popen(
        [sys.executable, "-m", "genmodels", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def check_readable(run: Path) -> int | None:
    """Assert the run directory is readable as a user would read it; returns the latest step (None if none yet)."""
    from genmodels.checkpoints import latest_checkpoint, load_checkpoint
    from genmodels.training.logger import read_metrics

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model_name"] == "mlp-vae", cfg
    read_metrics(run / "metrics.jsonl")
    latest = latest_checkpoint(run / "checkpoints")
    if latest is None:
        return None
    return int(load_checkpoint(latest)["meta"]["step"])  # verifies every file's SHA-256


def latest_step(run: Path) -> int | None:
    """The step the ``latest`` pointer names (cheap: no verification), or None."""
    from genmodels.checkpoints import parse_step_name

    try:
        key = parse_step_name((run / "checkpoints" / "latest").read_text().strip())
    except OSError:
        return None
    return key[0] if key else None


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    from genmodels.checkpoints import latest_checkpoint, load_checkpoint

    ck = load_checkpoint(latest_checkpoint(run / "checkpoints"))
    return {"model": ck["model"], "ema": ck["ema"], "step": ck["meta"]["step"]}


def run_kill_test(
    workdir: Path, trials: int = 20, steps: int = 200, seed: int = 0, final_trials: int = 5
) -> dict[str, Any]:
    """Run the whole experiment; returns a report (raises AssertionError on any broken promise)."""
    rng = random.Random(seed)
    ref, victim = workdir / "reference", workdir / "killed"
    t0 = time.monotonic()
    # The reference checkpoints only at the end (and spares the test its writes): checkpointing every step,
    # as the killed run does, must not change the weights either.
    once = ["--set", f"train.ckpt_every={steps}"]
    p = _start(["train", "mlp-vae", *TRAIN, *once, "--steps", str(steps), "--out", str(ref)])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    full_time = time.monotonic() - t0
    kills: list[dict[str, Any]] = []
    for i in range(trials):
        args = (
            ["train", "--resume", str(victim), "--no-progress"]
            if (victim / "config.yaml").exists()
            else ["train", "mlp-vae", *TRAIN, "--steps", str(steps), "--out", str(victim)]
        )
        done_before = latest_step(victim) or 0
        if done_before >= steps - 1:
            break
        # Aim at a random step still ahead, then a random few milliseconds into the next step or its write.
        share = max(1, (steps - 1 - done_before) // (trials - i + 1))  # spread the kills over the run
        target = min(steps - 1, done_before + rng.randint(1, share))
        p = _start(args)
        seen, changed, cycle = latest_step(victim), time.monotonic(), 0.05
        while p.poll() is None and (seen or 0) < target:
            time.sleep(0.001)
            now_step = latest_step(victim)
            if now_step != seen:  # a checkpoint landed: measure the step-plus-write cycle
                now = time.monotonic()
                cycle, changed, seen = now - changed, now, now_step
        time.sleep(rng.uniform(0.0, min(cycle, 0.3)))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        mid_write = any((victim / "checkpoints").glob(".tmp-step-*"))
        step = check_readable(victim)
        kills.append(
            {
                "trial": i,
                "target_step": target,
                "killed": p.returncode == -signal.SIGKILL,
                "latest_step": step,
                "mid_checkpoint_write": mid_write,
            }
        )
    p = _start(["train", "--resume", str(victim), "--no-progress"])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    finals = [kill_during_final_save(victim, steps, rng) for _ in range(final_trials)]
    a, b = final_weights(ref), final_weights(victim)
    assert a["step"] == b["step"] == steps
    same_model = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    same_ema = all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    return {
        "trials": len(kills),
        "killed": sum(k["killed"] for k in kills),
        "mid_checkpoint_write": sum(k["mid_checkpoint_write"] for k in kills),
        "bit_identical_model": same_model,
        "bit_identical_ema": same_ema,
        "kills": kills,
        "final_save_kills": finals,
        "reference_seconds": round(full_time, 1),
    }


def kill_during_final_save(run: Path, steps: int, rng: random.Random) -> dict[str, Any]:
    """Resume the finished run (it saves its last step once more) and SIGKILL it while that save is written;
    then check ``latest`` names a complete, verified checkpoint of the last step."""
    ckpts = run / "checkpoints"
    before = {p.name for p in ckpts.iterdir()}
    p = _start(["train", "--resume", str(run), "--no-progress"])
    deadline = time.monotonic() + 300
    while p.poll() is None and time.monotonic() < deadline:
        if any(q.name not in before for q in ckpts.iterdir()):
            break  # the final save has started (a new temporary directory) or just landed
        time.sleep(0.0005)
    time.sleep(rng.uniform(0.0, 0.05))
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    names = sorted(q.name for q in ckpts.iterdir())
    step = check_readable(run)  # raises when latest names a missing or incomplete checkpoint
    assert step == steps, (step, names)
    new = sorted(set(names) - before)
    return {"killed": killed, "latest": (ckpts / "latest").read_text().strip(), "entries": names, "new": new}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--final-trials", type=int, default=5, help="kills during the final save of the finished run")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir")
    ap.add_argument("--fresh-processes", action="store_true", help="start each trial as python -m genmodels")
    a = ap.parse_args()
    global FRESH
    FRESH = a.fresh_processes
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="genmodels-kill-"))
    rep = run_kill_test(work, a.trials, a.steps, a.seed, a.final_trials)
    for k in rep["kills"]:
        print(
            f"trial {k['trial']:2d}: killed near step {k['target_step']} -> latest checkpoint step "
            f"{k['latest_step']}{' (killed during a checkpoint write)' if k['mid_checkpoint_write'] else ''}"
        )
    for i, f in enumerate(rep["final_save_kills"]):
        print(
            f"final save {i}: {'killed' if f['killed'] else 'finished first'} -> latest {f['latest']} ({f['entries']})"
        )
    print(
        f"{rep['killed']} kills in {rep['trials']} trials, {rep['mid_checkpoint_write']} during a checkpoint write; "
        f"final weights bit-identical to the uninterrupted run: model {rep['bit_identical_model']}, "
        f"EMA {rep['bit_identical_ema']}"
    )
    sys.exit(0 if rep["bit_identical_model"] and rep["bit_identical_ema"] else 1)


if __name__ == "__main__":
    main()
