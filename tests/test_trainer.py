"""The generic Trainer: schedules, EMA, deterministic data order, bit-identical resume after a
kill, atomic checkpoints, divergence handling and the one-writer lock."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genmodels.api import load_run, train
from genmodels.checkpoints import latest_checkpoint, load_checkpoint
from genmodels.errors import CheckpointError, GenmodelsError
from genmodels.models import build_from_config, make_config
from genmodels.training import TrainingDiverged
from genmodels.training.batches import BatchStream
from genmodels.training.config import TrainConfig
from genmodels.training.ema import EMA
from genmodels.training.schedule import lr_factor
from genmodels.training.trainer import Trainer
from helpers import TINY, digits_images

SRC = str(Path(__file__).resolve().parents[1] / "src")


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "genmodels", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))["model"]


def test_lr_schedules():
    c = TrainConfig(steps=100, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(c, 0, 0.0) == pytest.approx(0.1)  # warm-up: (0 + 1) / 10
    assert lr_factor(c, 9, 0.09) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.09)))
    assert lr_factor(c, 50, 0.5) == pytest.approx(0.55)
    assert lr_factor(c, 100, 1.0) == pytest.approx(0.1)
    lin = TrainConfig(steps=100, schedule="linear")
    assert lr_factor(lin, 25, 0.25) == pytest.approx(0.75)
    assert lr_factor(TrainConfig(), 7, 0.3) == 1.0


def test_ema_is_the_exponential_average():
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, decay=0.9, warmup=False)
    values = [1.0, 2.0, 3.0]
    expected = 0.0
    for v in values:
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update()
        expected = 0.9 * expected + 0.1 * v
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(expected)
    with ema.swapped_in(lin):
        assert lin.weight[0, 0].item() == pytest.approx(expected)
    assert lin.weight[0, 0].item() == 3.0
    warm = EMA(lin, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)


def test_batch_stream_covers_each_epoch_and_shards_exactly():
    s = BatchStream(10, 4, seed=3)
    seen = torch.cat([s.indices(k) for k in range(5)])  # 20 positions = exactly two epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(seen, torch.cat([BatchStream(10, 4, seed=3).indices(k) for k in range(5)]))
    assert not torch.equal(seen, torch.cat([BatchStream(10, 4, seed=4).indices(k) for k in range(5)]))
    r0, r1 = BatchStream(10, 4, 3, rank=0, world=2), BatchStream(10, 4, 3, rank=1, world=2)
    for k in range(5):
        assert torch.equal(torch.cat([r0.indices(k), r1.indices(k)]), s.indices(k))


def _train_args(out: Path, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    sets = [f"model.{k}={v}" for k, v in TINY["conv-vae"].items()]
    args = [
        "train",
        "conv-vae",
        "--dataset",
        "digits",
        "--steps",
        str(steps),
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--seed",
        "7",
        "--no-progress",
        "--set",
        "train.ckpt_every=5",
        "--set",
        "train.sample_every=0",
        "--set",
        "train.schedule=cosine",
        "--set",
        "train.ema_decay=0.95",
        "--set",
        "train.keep_checkpoints=50",
    ]
    for s in sets:
        args += ["--set", s.replace(" ", "")]
    return args + list(extra)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    steps = 60
    ref = cli(*_train_args(tmp_path / "ref", steps))
    killed = cli(*_train_args(tmp_path / "killed", steps))
    # Kill the second run once it has written a checkpoint or two, mid-training.
    deadline = time.time() + 120
    while time.time() < deadline and latest_checkpoint(tmp_path / "killed" / "checkpoints") is None:
        time.sleep(0.05)
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    stopped_at = load_checkpoint(latest_checkpoint(tmp_path / "killed" / "checkpoints"))["meta"]["step"]
    assert 0 < stopped_at < steps, "the kill should land mid-run"
    resumed = cli("train", "--resume", str(tmp_path / "killed"), "--no-progress")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "killed")
    assert all(torch.equal(a[k], b[k]) for k in a), f"resumed from step {stopped_at}: weights differ"
    ea = load_checkpoint(latest_checkpoint(tmp_path / "ref" / "checkpoints"))["ema"]
    eb = load_checkpoint(latest_checkpoint(tmp_path / "killed" / "checkpoints"))["ema"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea), "EMA weights differ after resume"
    # Resuming from every earlier checkpoint of the reference run also lands on the same weights.
    ckpts = sorted((tmp_path / "ref" / "checkpoints").glob("step-*"))
    assert len(ckpts) >= 10
    for ck in ckpts[2:-1:4]:
        trainer, _ = _trainer_for(tmp_path / "ref")
        trainer.restore(ck)
        trainer.fit()
        assert all(torch.equal(trainer.model.state_dict()[k], a[k]) for k in a), f"resume from {ck.name} differs"


def _trainer_for(run_dir: Path) -> tuple[Trainer, dict]:
    from genmodels.config import from_dict
    from genmodels.data import load_dataset
    from genmodels.runs import read_config

    cfg = read_config(run_dir)
    tc = from_dict(TrainConfig, {**cfg["train"], "progress": False}, section="train")
    model = build_from_config(cfg["model_name"], make_config(cfg["model_name"], cfg["model"]))
    ds = load_dataset("digits", "train")
    return Trainer(model, torch.from_numpy(ds.images), torch.from_numpy(ds.labels), tc, None), cfg


def test_sigint_saves_a_checkpoint_and_exits_130(tmp_path):
    p = cli(*_train_args(tmp_path / "run", 100000))
    deadline = time.time() + 120
    while time.time() < deadline and latest_checkpoint(tmp_path / "run" / "checkpoints") is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    run = load_run(tmp_path / "run")
    assert run.step > 0 and run.meta["status"] == "interrupted"


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    imgs, labels = digits_images(256)
    model = build_from_config("mlp-ae", make_config("mlp-ae", TINY["mlp-ae"]))
    cfg = TrainConfig(steps=50, batch_size=16, ckpt_every=5, progress=False, sample_every=0)
    trainer = Trainer(model, imgs, labels, cfg, tmp_path)
    original = model.loss

    def poisoned(batch):
        out = original(batch)
        if trainer.step == 12:
            out.loss = out.loss * float("nan")
        return out

    model.loss = poisoned
    with pytest.raises(TrainingDiverged, match=r"nan at step 12.*last good checkpoint \(step 10\) is kept"):
        trainer.fit()
    good = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert good["meta"]["step"] == 10
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def test_cli_reports_divergence_as_one_error_line(tmp_path):
    p = cli(
        "train",
        "mlp-vae",
        "--dataset",
        "digits",
        "--steps",
        "30",
        "--out",
        str(tmp_path / "r"),
        "--no-progress",
        "--set",
        "train.lr=1e4",
        "--set",
        "model.hidden=[32]",
        "--set",
        "model.likelihood=gaussian",
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the loss became nan at step"), err
    assert "Lower the learning rate" in lines[0]


def test_checkpoints_are_verified(tmp_path):
    run = train(
        "mlp-ae",
        "digits",
        steps=4,
        batch_size=16,
        out=tmp_path / "r",
        progress=False,
        overrides={"model.hidden": [16], "train.sample_every": 0},
    )
    ck = latest_checkpoint(run.path / "checkpoints")
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its recorded SHA-256"):
        load_run(run.path)
    (ck / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(run.path)
    # A leftover temporary directory from a kill mid-write is ignored: latest still names a whole checkpoint.
    (run.path / "checkpoints" / ".tmp-step-00000009-999").mkdir()
    assert latest_checkpoint(run.path / "checkpoints") == ck


def test_second_writer_is_refused_and_a_stale_lock_is_not(tmp_path):
    from genmodels.runs import run_lock

    with run_lock(tmp_path), pytest.raises(GenmodelsError, match="is being trained by pid"), run_lock(tmp_path):
        pass
    # A lock file left by a killed process holds no kernel lock and blocks nothing.
    (tmp_path / ".lock").write_text("pid 1 on elsewhere")
    with run_lock(tmp_path):
        pass


def test_existing_run_is_not_overwritten(tmp_path):
    train(
        "mlp-ae",
        "digits",
        steps=2,
        batch_size=16,
        out=tmp_path / "r",
        progress=False,
        overrides={"model.hidden": [16], "train.sample_every": 0},
    )
    with pytest.raises(GenmodelsError, match="already holds a run; continue it with --resume"):
        train("mlp-ae", "digits", steps=2, out=tmp_path / "r", progress=False)
