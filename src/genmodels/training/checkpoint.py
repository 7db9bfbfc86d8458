"""Atomic, verifiable checkpoints that never execute code when loaded.

A checkpoint is a directory ``checkpoints/step-00001234/`` holding:
- ``model.safetensors``: the model's weights and buffers;
- ``ema.safetensors``: the EMA weights, when EMA is on;
- ``state.safetensors``: every tensor of the training state (optimiser moments, RNG states);
- ``state.json``: the non-tensor training state, and the SHA-256 of every file above.

It is written into a temporary sibling directory, fsync'ed, then renamed into place; only then is
``checkpoints/latest`` (a one-line file naming the directory) replaced atomically. A kill at any
moment therefore leaves ``latest`` naming a complete checkpoint, and a loader verifies the hashes
before trusting any file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genmodels.errors import CheckpointError

FORMAT = 1
LATEST = "latest"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def flatten_optimizer(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into safetensors-ready tensors and a JSON-ready remainder."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        plain["state"][str(idx)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                plain["state"][str(idx)][key] = value
    return tensors, plain


def unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The inverse of ``flatten_optimizer``."""
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in plain["state"].items()}
    for name, value in tensors.items():
        head, _, rest = name.partition(".")
        if head != prefix:
            continue
        idx, _, key = rest.partition(".")
        state.setdefault(int(idx), {})[key] = value
    groups = plain["param_groups"]
    for g in groups:  # JSON turned tuples into lists; Adam wants its betas back as a tuple
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    ckpt_root: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    state_tensors: dict[str, torch.Tensor],
    state_json: dict[str, Any],
    ema_state: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write one checkpoint atomically and point ``latest`` at it; returns its directory.

    Raises:
        CheckpointError: the location is full, read-only or otherwise unwritable; the previous
            ``latest`` checkpoint is left untouched.
    """
    name = f"step-{step:08d}"
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}-{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {"model.safetensors": model_state, "state.safetensors": state_tensors}
        if ema_state is not None:
            files["ema.safetensors"] = ema_state
        hashes = {}
        for fname, tensors in files.items():
            save_file(_contiguous(tensors), str(tmp / fname))
            _fsync_file(tmp / fname)
            hashes[fname] = sha256_file(tmp / fname)
        meta = {"format": FORMAT, "step": step, "files": hashes, **state_json}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        _fsync_file(tmp / "state.json")
        _fsync_dir(tmp)
        if final.exists():  # a checkpoint of the same step from a run resumed before it: replace
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        pointer = ckpt_root / f".{LATEST}.tmp-{os.getpid()}"
        pointer.write_text(name + "\n")
        _fsync_file(pointer)
        os.replace(pointer, ckpt_root / LATEST)
        _fsync_dir(ckpt_root)
    except (OSError, SafetensorError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, SafetensorError):  # safetensors reports I/O failures as its own error type
            e = _os_error_from(e)
        why = {
            errno.ENOSPC: "the disk is full",
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EDQUOT: "the disk quota is exceeded",
        }.get(e.errno, str(e))
        raise CheckpointError(
            f"cannot write checkpoint step {step} to {ckpt_root}: {why}; free space or choose another --out "
            f"(the previous checkpoint is kept)"
        ) from None
    _prune(ckpt_root, keep, keep_name=name)
    return final


def _os_error_from(e: SafetensorError) -> OSError:
    """The OSError inside a safetensors I/O error message ("... (os error 28)")."""
    import re

    m = re.search(r"os error (\d+)", str(e))
    code = int(m.group(1)) if m else errno.EIO
    return OSError(code, os.strerror(code))


def _prune(ckpt_root: Path, keep: int, keep_name: str) -> None:
    """Delete all but the newest ``keep`` checkpoints, and any leftover temporary directories."""
    done = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        if old.name != keep_name:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in ckpt_root.glob(".tmp-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The directory ``latest`` names, or None when the run has no checkpoint yet."""
    pointer = ckpt_root / LATEST
    if not pointer.exists():
        return None
    name = pointer.read_text().strip()
    if not name.startswith("step-") or "/" in name or name.startswith("."):
        raise CheckpointError(f"{pointer} names '{name}', not a checkpoint; delete the file to start over")
    path = ckpt_root / name
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which is missing; the run directory was altered")
    return path


def load_checkpoint(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """Read and verify one checkpoint directory.

    Returns:
        ``{"meta": state.json dict, "model": tensors, "state": tensors, "ema": tensors or None}``.

    Raises:
        CheckpointError: a file is missing, does not match its recorded SHA-256, or is not a valid
            safetensors file. Nothing is ever unpickled.
    """
    try:
        meta = json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no state.json; it is incomplete") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {path}/state.json is unreadable ({e}); it is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"checkpoint {path}/state.json is not a genmodels checkpoint of format {FORMAT}")
    out: dict[str, Any] = {"meta": meta, "ema": None}
    for fname in meta["files"]:
        if fname not in ("model.safetensors", "state.safetensors", "ema.safetensors"):
            raise CheckpointError(f"checkpoint {path} lists an unexpected file '{fname}'; refusing it")
    for fname, digest in meta["files"].items():
        fpath = path / fname
        if not fpath.exists():
            raise CheckpointError(f"checkpoint file {fpath} is missing")
        if verify and sha256_file(fpath) != digest:
            raise CheckpointError(
                f"checkpoint file {fpath} does not match its recorded SHA-256; it was altered or corrupted"
            )
        try:
            tensors = load_file(str(fpath))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint file {fpath} is not a valid safetensors file ({e})") from None
        out[fname.split(".")[0]] = tensors
    if "model" not in out or "state" not in out:
        raise CheckpointError(f"checkpoint {path} lacks model or training state")
    return out
