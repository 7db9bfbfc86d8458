"""Atomic, verifiable checkpoints that never execute code when loaded.

A checkpoint is a directory ``checkpoints/step-00001234/`` holding:
- ``model.safetensors``: the model's weights and buffers;
- ``ema.safetensors``: the EMA weights, when EMA is on;
- ``state.safetensors``: every tensor of the training state (optimiser moments, RNG states);
- ``state.json``: the non-tensor training state, and the SHA-256 of every file above.

It is written into a temporary sibling directory, fsync'ed, then renamed to a name no other directory
has; only then is ``checkpoints/latest`` (a one-line file naming the directory) replaced atomically,
and only after that are older checkpoints pruned. A second checkpoint of the same step (a resumed run
saving the step it was killed at, or ``fit``'s final save right after a periodic one) is written as
``step-00001234.1`` (then ``.2``, ...) beside the first, never over it: the directory ``latest``
names is never deleted or replaced, so a kill at any moment leaves ``latest`` naming a complete
checkpoint. A loader verifies the hashes, and that the weights are finite, before trusting a file.

Everything is read through ``safeio``: ``latest`` and ``state.json`` are small regular UTF-8 files, and
no checkpoint directory or file may lead outside ``checkpoints/`` (a step directory symlinked to
another run's checkpoint is refused).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from genmodels import safeio
from genmodels.errors import CheckpointError
from genmodels.safeio import sha256_file

FORMAT = 1
LATEST = "latest"
# step-00001234, or step-00001234.2 for the second re-save of one step (see the module docstring)
STEP_NAME = re.compile(r"^step-(\d{8,})(?:\.(\d{1,6}))?$")
WEIGHT_FILES = ("model.safetensors", "state.safetensors", "ema.safetensors")


def parse_step_name(name: str) -> tuple[int, int] | None:
    """(step, version) of a checkpoint directory name, or None when it is not one."""
    m = STEP_NAME.match(name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def checkpoint_dirs(ckpt_root: Path) -> list[Path]:
    """Every checkpoint directory (complete or not) under ``ckpt_root``, oldest first by (step, version);
    symlinks are not checkpoints of this run and are left out."""
    if not ckpt_root.is_dir():
        return []
    found = []
    for p in ckpt_root.iterdir():
        key = parse_step_name(p.name)
        if key is not None and p.is_dir() and not p.is_symlink():
            found.append((key, p))
    return [p for _, p in sorted(found)]


def is_complete(path: Path) -> bool:
    """Whether a checkpoint directory has its state.json and every file it lists (hashes not checked)."""
    try:
        meta = safeio.read_json(path / "state.json", path, what="checkpoint record")
    except (OSError, safeio.FileRefused):
        return False
    files = meta.get("files") if isinstance(meta, dict) else None
    return isinstance(files, dict) and all(
        f in WEIGHT_FILES and (path / f).is_file() and not (path / f).is_symlink() for f in files
    )


def step_dir(ckpt_root: Path, step: int) -> Path | None:
    """The newest complete checkpoint directory of ``step``, or None."""
    dirs = [p for p in checkpoint_dirs(ckpt_root) if parse_step_name(p.name)[0] == step and is_complete(p)]
    return dirs[-1] if dirs else None


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
    name = _fresh_name(ckpt_root, step)
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
        os.rename(tmp, final)  # a fresh name: nothing is replaced, least of all what ``latest`` names
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


def _fresh_name(ckpt_root: Path, step: int) -> str:
    """``step-XXXXXXXX``, or ``step-XXXXXXXX.K`` (K one above any existing version) when that exists."""
    base = f"step-{step:08d}"
    versions = [
        parse_step_name(p.name)[1]
        for p in (ckpt_root.iterdir() if ckpt_root.is_dir() else [])
        if parse_step_name(p.name) is not None and parse_step_name(p.name)[0] == step
    ]
    return base if not versions else f"{base}.{max(versions) + 1}"


def _os_error_from(e: SafetensorError) -> OSError:
    """The OSError inside a safetensors I/O error message ("... (os error 28)")."""
    import re

    m = re.search(r"os error (\d+)", str(e))
    code = int(m.group(1)) if m else errno.EIO
    return OSError(code, os.strerror(code))


def _prune(ckpt_root: Path, keep: int, keep_name: str) -> None:
    """Delete all but the newest ``keep`` steps' checkpoints (older versions of a re-saved step too), and
    leftover temporary directories; never the one ``latest`` names (``keep_name``, just written)."""
    dirs = checkpoint_dirs(ckpt_root)
    newest: dict[int, Path] = {}
    for p in dirs:  # oldest first, so the last version of each step wins
        newest[parse_step_name(p.name)[0]] = p
    kept = {p.name for p in sorted(newest.values(), key=lambda p: parse_step_name(p.name))[-keep:]} | {keep_name}
    for old in dirs:
        if old.name not in kept:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in ckpt_root.glob(".tmp-*"):
        if not tmp.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(tmp, ignore_errors=True)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The checkpoint directory ``latest`` names, or None when the run has no checkpoint yet.

    When ``latest`` is missing but complete checkpoint directories exist (the pointer was deleted by
    hand), the newest complete one is used and a note says so: a resume then continues from it instead
    of starting over and pruning the run's checkpoints.

    Raises:
        CheckpointError: ``latest`` is refused (a symlink out, a FIFO, too large, not UTF-8), names no
            checkpoint directory, or names one that is missing or leads outside ``checkpoints/``.
    """
    pointer = ckpt_root / LATEST
    if not os.path.lexists(pointer):
        complete = [p for p in checkpoint_dirs(ckpt_root) if is_complete(p)]
        if not complete:
            return None
        print(
            f"note: {pointer} is missing; using {complete[-1].name}, the newest complete checkpoint",
            file=sys.stderr,
        )
        return complete[-1]
    try:
        name = safeio.read_text(pointer, ckpt_root, limit=256, what="checkpoint pointer").strip()
    except (OSError, safeio.FileRefused) as e:
        why = str(e) if isinstance(e, safeio.FileRefused) else f"{pointer} is unreadable ({e.strerror})"
        raise CheckpointError(f"{why}; delete it and genmodels will use the newest complete checkpoint") from None
    if parse_step_name(name) is None:
        shown = name[:40].encode("unicode_escape").decode()
        raise CheckpointError(
            f"{pointer} names '{shown}', not a checkpoint; delete it and genmodels will use the newest complete one"
        )
    path = ckpt_root / name
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symlink, not a checkpoint of this run; a run's checkpoints never leave it")
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {name}, which is missing; the run directory was altered")
    return path


def load_checkpoint(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """Read and verify one checkpoint directory.

    Returns:
        ``{"meta": state.json dict, "model": tensors, "state": tensors, "ema": tensors or None}``.

    Raises:
        CheckpointError: a file is missing, refused (a symlink out of the checkpoint, not a regular file,
            too large), does not match its recorded SHA-256, is not a valid safetensors file, or holds
            non-finite weights; state.json lacks a valid step. Nothing is ever unpickled.
    """
    if path.is_symlink() or not path.is_dir():
        raise CheckpointError(f"checkpoint {path} is not a directory of this run; a run's checkpoints never leave it")
    try:
        meta = safeio.read_json(path / "state.json", path, what="checkpoint record")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} has no state.json; it is incomplete") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {path}/state.json is unreadable ({e.strerror}); it is corrupt") from None
    except safeio.FileRefused as e:
        raise CheckpointError(f"{e} (the checkpoint is corrupt)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"checkpoint {path}/state.json is not a genmodels checkpoint of format {FORMAT}")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path}/state.json has no valid step (got {str(step)[:20]!r}); it is damaged")
    out: dict[str, Any] = {"meta": meta, "ema": None}
    for fname in meta["files"]:
        if fname not in WEIGHT_FILES:
            raise CheckpointError(f"checkpoint {path} lists an unexpected file '{str(fname)[:40]}'; refusing it")
    for fname, digest in meta["files"].items():
        fpath = path / fname
        try:
            safeio.check_regular(fpath, path, what="checkpoint file")
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint file {fpath} is missing") from None
        except safeio.FileRefused as e:
            raise CheckpointError(str(e)) from None
        if verify and sha256_file(fpath) != digest:
            raise CheckpointError(
                f"checkpoint file {fpath} does not match its recorded SHA-256; it was altered or corrupted"
            )
        try:
            tensors = load_file(str(fpath))
        except (SafetensorError, OSError, ValueError) as e:
            first = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise CheckpointError(f"checkpoint file {fpath} is not a valid safetensors file ({first})") from None
        out[fname.split(".")[0]] = tensors
    if "model" not in out or "state" not in out:
        raise CheckpointError(f"checkpoint {path} lacks model or training state")
    for part in ("model", "ema"):
        bad = [k for k, t in (out[part] or {}).items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            raise CheckpointError(
                f"checkpoint {path} holds non-finite {part} weights ({bad[0]}); the run diverged or was damaged: "
                f"retrain it, or point checkpoints/latest at an earlier step directory"
            )
    return out
