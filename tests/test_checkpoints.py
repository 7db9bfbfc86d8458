"""Checkpoints: a crash at any point of a save leaves ``latest`` naming a complete checkpoint, and a damaged
or hostile checkpoint directory is refused with one clear line (never followed out of the run)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from genmodels import checkpoints as C
from genmodels.errors import CheckpointError


class Crash(BaseException):
    """Stands for a SIGKILL at one file-system operation: nothing after it runs."""


def _save(root: Path, step: int, value: float, keep: int = 2) -> Path:
    model = {"w": torch.full((64, 64), value)}
    return C.save_checkpoint(root, step, model, {"rng": torch.zeros(3)}, {"batches": step}, keep=keep)


def _check_latest(root: Path) -> float:
    path = C.latest_checkpoint(root)
    assert path is not None
    return float(C.load_checkpoint(path)["model"]["w"][0, 0])


OPS = [
    (os, "rename"),
    (os, "replace"),
    (shutil, "rmtree"),
    (C, "save_file"),
    (C, "_fsync_dir"),
    (C, "_fsync_file"),
]


@pytest.mark.parametrize("module,name", OPS, ids=[n for _, n in OPS])
def test_a_crash_at_any_operation_of_a_same_step_resave_leaves_latest_complete(tmp_path, monkeypatch, module, name):
    """The periodic save of the last step, then fit's final save of the same step: crash the second save at
    each call of each file-system operation in turn; ``latest`` must always load (old code deleted the
    directory ``latest`` named before renaming the new one in)."""
    original = getattr(module, name)
    for k in range(1, 12):
        root = tmp_path / f"{name}-{k}" / "checkpoints"
        _save(root, 5, 1.0)
        _save(root, 10, 2.0)
        calls = {"n": 0}

        def failing(*args, _orig=original, _k=k, _calls=calls, **kwargs):
            _calls["n"] += 1
            if _calls["n"] == _k:
                raise Crash
            return _orig(*args, **kwargs)

        monkeypatch.setattr(module, name, failing)
        try:
            _save(root, 10, 3.0)
            crashed = False
        except Crash:
            crashed = True
        finally:
            monkeypatch.setattr(module, name, original)
        value = _check_latest(root)
        assert value in (2.0, 3.0), (name, k, value)
        if not crashed:
            assert value == 3.0
            break


def test_a_resave_of_the_same_step_gets_a_new_name_and_the_old_one_is_pruned(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, 5, 1.0)
    _save(root, 10, 2.0)
    third = _save(root, 10, 3.0)
    assert third.name == "step-00000010.1"
    assert (root / "latest").read_text().strip() == "step-00000010.1"
    assert sorted(p.name for p in C.checkpoint_dirs(root)) == ["step-00000005", "step-00000010.1"]
    assert _check_latest(root) == 3.0
    assert _save(root, 10, 4.0).name == "step-00000010.2"
    assert C.step_dir(root, 10).name == "step-00000010.2"
    assert C.parse_step_name("step-00000010.2") == (10, 2)
    assert C.parse_step_name("step-10") is None and C.parse_step_name("../step-00000010") is None


def test_a_missing_latest_recovers_the_newest_complete_checkpoint(tmp_path, capsys):
    root = tmp_path / "checkpoints"
    _save(root, 5, 1.0, keep=3)
    _save(root, 10, 2.0, keep=3)
    (root / "step-00000015").mkdir()  # an incomplete one (no state.json) is not taken
    (root / "latest").unlink()
    path = C.latest_checkpoint(root)
    assert path.name == "step-00000010"
    assert "latest is missing; using step-00000010" in capsys.readouterr().err


def test_no_checkpoint_at_all_is_none(tmp_path):
    assert C.latest_checkpoint(tmp_path / "checkpoints") is None


def _run_with_checkpoint(tmp_path: Path) -> Path:
    root = tmp_path / "run" / "checkpoints"
    _save(root, 4, 1.0)
    return root


def test_latest_symlinked_out_is_refused_without_showing_the_file(tmp_path):
    root = _run_with_checkpoint(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:TOP-SECRET-LINE\n")
    (root / "latest").unlink()
    (root / "latest").symlink_to(secret)
    with pytest.raises(CheckpointError) as e:
        C.latest_checkpoint(root)
    assert "TOP-SECRET" not in str(e.value) and "outside" in str(e.value)


def test_latest_fifo_is_refused_without_blocking(tmp_path):
    root = _run_with_checkpoint(tmp_path)
    (root / "latest").unlink()
    os.mkfifo(root / "latest")
    result: dict[str, BaseException | None] = {}

    def read() -> None:
        try:
            C.latest_checkpoint(root)
        except BaseException as e:
            result["e"] = e

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO 'latest' blocked"
    assert isinstance(result.get("e"), CheckpointError) and "FIFO" in str(result["e"])


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00step", b"step-00000004" + b" " * (1 << 20)], ids=["not-utf8", "huge"]
)
def test_latest_not_utf8_or_huge_is_one_error(tmp_path, content):
    root = _run_with_checkpoint(tmp_path)
    (root / "latest").write_bytes(content)
    with pytest.raises(CheckpointError):
        C.latest_checkpoint(root)


def test_a_step_directory_symlinked_to_another_runs_checkpoint_is_refused(tmp_path):
    other = tmp_path / "other" / "checkpoints"
    _save(other, 7, 9.0)
    root = tmp_path / "run" / "checkpoints"
    root.mkdir(parents=True)
    (root / "step-00000007").symlink_to(other / "step-00000007", target_is_directory=True)
    (root / "latest").write_text("step-00000007\n")
    with pytest.raises(CheckpointError, match="symlink"):
        C.latest_checkpoint(root)
    with pytest.raises(CheckpointError):
        C.load_checkpoint(root / "step-00000007")
    assert C.checkpoint_dirs(root) == []  # and it is never taken as one of this run's checkpoints


def test_a_weight_file_symlinked_out_of_the_checkpoint_is_refused(tmp_path):
    root = _run_with_checkpoint(tmp_path)
    other = _save(tmp_path / "other" / "checkpoints", 4, 5.0)
    ck = root / "step-00000004"
    (ck / "model.safetensors").unlink()
    (ck / "model.safetensors").symlink_to(other / "model.safetensors")
    with pytest.raises(CheckpointError, match="outside"):
        C.load_checkpoint(ck)


@pytest.mark.parametrize("step", [None, "abc", -3, True])
def test_state_json_without_a_valid_step_is_refused(tmp_path, step):
    root = _run_with_checkpoint(tmp_path)
    path = root / "step-00000004" / "state.json"
    meta = json.loads(path.read_text())
    if step is None:
        del meta["step"]
    else:
        meta["step"] = step
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no valid step"):
        C.load_checkpoint(root / "step-00000004")


def test_nan_weights_with_valid_hashes_are_refused(tmp_path):
    root = tmp_path / "checkpoints"
    w = torch.ones(4, 4)
    w[1, 2] = float("nan")
    C.save_checkpoint(root, 3, {"w": w}, {"rng": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="non-finite model weights"):
        C.load_checkpoint(C.latest_checkpoint(root))
