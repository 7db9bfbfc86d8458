"""Distributed training with torchrun and DistributedDataParallel, as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from genmodels.checkpoints import latest_checkpoint, load_checkpoint
from genmodels.models import FAMILIES
from genmodels.runs import read_meta
from helpers import TINY, data_of

SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def genmodels(nproc: int, *args: str, module: bool = True) -> subprocess.CompletedProcess:
    """``genmodels ARGS`` in nproc processes (torchrun for more than one); ``module=False``: ARGS start with
    a script to run instead of the CLI."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    what = ["-m", "genmodels"] if module else []
    if nproc == 1:
        cmd = [sys.executable, *what, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc-per-node={nproc}",
            "--master-addr=127.0.0.1",
            f"--master-port={free_port()}",
            *(["-m", "genmodels"] if module else []),
            *args,
        ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def final(run: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run / "checkpoints"))


def assert_agree(w0: dict, a: dict, b: dict, rel: float = 0.03) -> None:
    """a and b agree to within ``rel`` of the largest distance training moved any weight from w0."""
    weights = [k for k in a if k.endswith("weight")]
    moved = max(float((a[k] - w0[k]).abs().max()) for k in weights)
    worst = max(float((a[k] - b[k]).abs().max()) for k in weights)
    assert moved > 0.02, "training should move the weights"
    assert worst < rel * moved, f"weights differ by up to {worst} after moving by {moved}"


def tiny_sets(name: str) -> list[str]:
    out = []
    for k, v in TINY[name].items():
        out += ["--set", f"model.{k}={v}".replace(" ", "")]
    return out


COMMON = [
    "--dataset",
    "digits",
    "--batch-size",
    "32",
    "--no-progress",
    "--seed",
    "3",
    "--set",
    "train.sample_every=0",
    "--set",
    "train.log_every=5",
    "--set",
    "train.lr=3e-3",
]


def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    """2 processes x 16 images == 1 process x 32 images: DDP averages the two halves' gradients, which is the
    gradient of the mean over the global batch, so the weights agree to float rounding."""
    args = ["train", "conv-ae", *COMMON, *tiny_sets("conv-ae")]
    init = genmodels(1, *args, "--steps", "0", "--out", str(tmp_path / "init"))
    one = genmodels(1, *args, "--steps", "20", "--out", str(tmp_path / "one"))
    two = genmodels(2, *args, "--steps", "20", "--out", str(tmp_path / "two"))
    for r in (init, one, two):
        assert r.returncode == 0, r.stderr
    # Summation order differs (two partial means, then an all-reduce), and Adam's normalisation lets
    # that rounding grow a little; it must stay far below how far training moved the weights.
    assert_agree(*(final(tmp_path / d)["model"] for d in ("init", "one", "two")))
    assert read_meta(tmp_path / "two")["world_size"] == 2
    # Only rank 0 writes: one metrics file, one line per logging step.
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_a_run_saved_at_one_world_size_resumes_at_another(tmp_path):
    args = ["train", "conv-ae", *COMMON, *tiny_sets("conv-ae"), "--set", "train.ckpt_every=10"]
    init = genmodels(1, *args, "--steps", "0", "--out", str(tmp_path / "init"))
    ref = genmodels(1, *args, "--steps", "20", "--out", str(tmp_path / "ref"))
    assert init.returncode == 0 and ref.returncode == 0, ref.stderr
    first = genmodels(2, *args, "--steps", "10", "--out", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr
    assert final(tmp_path / "run")["meta"]["step"] == 10
    resumed = genmodels(1, "train", "--resume", str(tmp_path / "run"), "--steps", "20", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert final(tmp_path / "run")["meta"]["step"] == 20
    assert_agree(*(final(tmp_path / d)["model"] for d in ("init", "ref", "run")))


# Every family's default model, and a class-conditional one (labels travel with each rank's shard; the
# conditional models differ only inside their networks, which DDP does not see).
CONDITIONAL = ("cddpm",)


def test_every_family_trains_under_torchrun(tmp_path):
    """Each family's default (and a conditional model) trains 4 steps in 2 processes: one torchrun launch
    trains them one after another (``tests/ddp_train_each.py``)."""
    import json

    names = sorted({*FAMILIES.values(), *CONDITIONAL})
    jobs = []
    for name in names:
        common = [data_of(name) if a == "digits" else a for a in COMMON]  # a translator: digits beside sketches
        out = str(tmp_path / name)
        jobs.append(
            ["train", name, *common, "--steps", "4", *tiny_sets(name), "--out", out, "--set", "train.ema_decay=0.9"]
        )
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    r = genmodels(2, str(Path(__file__).with_name("ddp_train_each.py")), str(tmp_path / "jobs.json"), module=False)
    assert r.returncode == 0, r.stderr[-4000:]
    for name in names:
        ck = final(tmp_path / name)
        assert ck["meta"]["step"] == 4 and ck["meta"]["world"] == 2, name
        assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point()), name


def test_a_time_limited_run_agrees_on_rank_0s_step_budget(tmp_path):
    """Under --max-time each process times its own warm-up; the run takes rank 0's budget on every process,
    stops there on all of them together, and stores it in the checkpoint."""
    out = tmp_path / "timed"
    r = genmodels(2, "train", "mlp-vae", *COMMON, "--max-time", "0.1", "--out", str(out), *tiny_sets("mlp-vae"))
    assert r.returncode == 0, r.stderr[-3000:]
    meta = final(out)["meta"]
    assert meta["budget"]["max_time"] == 0.1 and meta["budget"]["total"] == meta["step"] > 0
    assert read_meta(out)["status"] == "finished" and read_meta(out)["world_size"] == 2
