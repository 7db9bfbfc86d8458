"""Crash safety and hostile input: SIGKILL at random moments, one writer per run, tampered checkpoints,
and a full or read-only disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from genmodels.api import load_run, train
from genmodels.checkpoints import latest_checkpoint, sha256_file
from genmodels.errors import CheckpointError
from helpers import ForkedCLI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
SRC = str(ROOT / "src")


def cli(*args: str) -> ForkedCLI:
    """``genmodels ARGS`` as a real process (forked from a preloaded fork server: ``helpers.ForkedCLI``)."""
    return ForkedCLI(*args)


def test_twenty_random_sigkills_resume_to_bit_identical_weights(tmp_path):
    from kill_test import run_kill_test

    rep = run_kill_test(tmp_path, trials=20, steps=200, seed=1, final_trials=4)
    assert rep["trials"] == 20 and rep["killed"] == 20, rep["kills"]
    # Kills during the final save (a second save of the last step): latest stays valid every time
    # (run_kill_test checks it), and most of them land while that save is being written.
    assert sum(f["killed"] for f in rep["final_save_kills"]) >= 3, rep["final_save_kills"]
    assert rep["mid_checkpoint_write"] >= 3, "too few kills landed during a checkpoint write"
    assert rep["bit_identical_model"] and rep["bit_identical_ema"]


def test_a_second_training_into_the_same_run_is_refused(tmp_path):
    run = tmp_path / "run"
    first = cli("train", "mlp-vae", "--dataset", "digits", "--steps", "100000", "--out", str(run), "--no-progress")
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "config.yaml").exists():
        time.sleep(0.05)
    second = cli("train", "--resume", str(run), "--no-progress")
    _, err = second.communicate(timeout=120)
    first.kill()
    first.wait()
    assert second.returncode == 2
    assert err.strip().startswith("error: run") and "is being trained by pid" in err and err.count("\n") == 1
    # The first process was killed (SIGKILL): its lock died with it, so a resume now goes ahead.
    third = cli("train", "--resume", str(run), "--no-progress", "--steps", "3")
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err


@pytest.fixture
def trained(tmp_path):
    train(
        "mlp-ae",
        "digits",
        steps=3,
        batch_size=16,
        out=tmp_path / "r",
        progress=False,
        overrides={"model.hidden": [16], "train.sample_every": 0},
    )
    return tmp_path / "r", latest_checkpoint(tmp_path / "r" / "checkpoints")


def _rehash(ck: Path, fname: str) -> None:
    meta = json.loads((ck / "state.json").read_text())
    meta["files"][fname] = sha256_file(ck / fname)
    (ck / "state.json").write_text(json.dumps(meta))


def test_weights_of_the_wrong_shape_are_refused(trained):
    run, ck = trained
    w = load_file(str(ck / "model.safetensors"))
    key = next(k for k in w if k.endswith("weight"))
    w[key] = torch.zeros(w[key].shape[0] + 1, *w[key].shape[1:])
    save_file(w, str(ck / "model.safetensors"))
    _rehash(ck, "model.safetensors")  # even with a matching hash the shapes give it away
    with pytest.raises(CheckpointError, match="does not fit model mlp-ae"):
        load_run(run, weights="raw")


def test_a_pickle_payload_is_never_executed(trained, tmp_path):
    run, ck = trained
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import pickle

    (ck / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    _rehash(ck, "model.safetensors")
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_run(run, weights="raw")
    assert not marker.exists()
    meta = json.loads((ck / "state.json").read_text())
    meta["files"]["evil.pkl"] = "0" * 64
    (ck / "state.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unexpected file 'evil\.pkl'"):
        load_run(run)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _disk_test_args(run: Path, steps: int) -> list[str]:
    return [
        "train",
        "mlp-vae",
        "--dataset",
        "digits",
        "--steps",
        str(steps),
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "model.hidden=[256]",
        "--set",
        "train.ckpt_every=5",
        "--set",
        "train.sample_every=0",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_gives_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "16m"):
        pytest.skip("this sandbox does not allow mounting a tmpfs")
    try:
        run = mnt / "run"
        p = cli(*_disk_test_args(run, 5))
        assert p.wait(timeout=120) == 0
        good = latest_checkpoint(run / "checkpoints")
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        (mnt / "filler").write_bytes(b"\0" * (free - 64 * 1024))  # leave 64 KiB: less than a checkpoint
        p = cli("train", "--resume", str(run), "--steps", "10", "--no-progress")
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "the disk is full" in lines[0] and "previous checkpoint is kept" in lines[0], err
        assert latest_checkpoint(run / "checkpoints") == good
        assert not list((run / "checkpoints").glob(".tmp-*")), "a partial checkpoint was left behind"
        assert load_run(run).step == 5
    finally:
        _umount(mnt)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_read_only_disk_gives_a_clear_error(tmp_path):
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "16m"):
        pytest.skip("this sandbox does not allow mounting a tmpfs")
    try:
        run = mnt / "run"
        assert cli(*_disk_test_args(run, 5)).wait(timeout=120) == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        p = cli("train", "--resume", str(run), "--steps", "10", "--no-progress")
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and err.count("\n") == 1 and "read-only" in err.lower(), err
        assert load_run(run).step == 5  # still readable
        p = cli(*_disk_test_args(mnt / "new", 5))
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and err.count("\n") == 1 and "read-only" in err.lower(), err
    finally:
        _umount(mnt)


def test_enospc_at_the_file_layer_leaves_latest_intact(trained, monkeypatch):
    """The same promise where no tmpfs can be mounted: the file layer reports ENOSPC mid-checkpoint."""
    import errno

    import genmodels.checkpoints as ckmod

    run, good = trained
    calls = {"n": 0}
    real = ckmod.save_file

    def failing(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second file of the checkpoint: the first one is already on disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ckmod, "save_file", failing)
    with pytest.raises(CheckpointError, match=r"the disk is full.*previous checkpoint is kept"):
        train(resume=run, steps=6, progress=False)
    assert latest_checkpoint(run / "checkpoints") == good
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_nothing_in_the_package_unpickles():
    """Loading never executes code: no pickle loads, no torch.load without weights_only=True."""
    import re

    offenders = []
    for f in (ROOT / "src" / "genmodels").rglob("*.py"):
        text = f.read_text()
        for m in re.finditer(r"pickle\.loads?\(|torch\.load\((?![^)]*weights_only=True)|allow_pickle=True", text):
            offenders.append(f"{f.relative_to(ROOT)}: {m.group(0)}")
    assert not offenders, offenders
