"""Reading files that a user, another program or an attacker may have put in a run directory or dataset.

Everything read from a run directory or a dataset folder goes through here, so that one damaged or
hostile file gives one clear error instead of a hang, an out-of-memory kill or a leak:

- confined: the file's real path (symlinks followed) must lie inside the directory it belongs to,
  so a ``config.yaml`` symlinked to ``~/.ssh/id_ed25519`` or a step directory symlinked to another
  run's checkpoint is refused;
- a regular file: a FIFO, a socket or ``/dev/zero`` is refused without blocking (opened with
  ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so the check and the read see the
  same file);
- size-limited: small files (configs, pointers, JSON records) are read only up to a limit, and their
  text must be UTF-8.

Error messages never quote the refused file's contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from genmodels.errors import GenmodelsError

SMALL_FILE = 1 << 20  # configs, run.json, state.json, eval.json, the ``latest`` pointer
LARGE_FILE = 64 << 30  # weight files: anything bigger is not a checkpoint this library wrote


class FileRefused(GenmodelsError):
    """A file that is outside its directory, not a regular file, too large or not UTF-8."""


def confine(path: str | os.PathLike[str], root: str | os.PathLike[str], what: str = "file") -> Path:
    """The real path of ``path``, which must lie inside the real path of ``root``.

    Raises:
        FileRefused: the path (through a symlink or ``..``) leads outside ``root``.
    """
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real != real_root and not real.is_relative_to(real_root):
        raise FileRefused(
            f"{what} {path} leads outside {root} (a symlink?); refusing to read it. Replace it with a real file"
        )
    return real


def open_regular(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None, *, limit: int, what: str = "file"
) -> int:
    """An open read-only descriptor of a regular file of at most ``limit`` bytes (confined to ``root``).

    Raises:
        FileNotFoundError: the file does not exist (callers decide whether that is an error).
        FileRefused: it leads outside ``root``, is not a regular file, or is larger than ``limit``.
    """
    real = confine(path, root, what) if root is not None else Path(path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise FileRefused(f"cannot open {what} {path}: {e.strerror}; check its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) else "a device"
            raise FileRefused(f"{what} {path} is {kind}, not a regular file; replace it with a real file")
        if st.st_size > limit:
            raise FileRefused(
                f"{what} {path} is {st.st_size:,} bytes, more than the {limit:,} allowed; it is not one genmodels wrote"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None, *, limit: int = SMALL_FILE, what: str = "file"
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes inside ``root``."""
    fd = open_regular(path, root, limit=limit, what=what)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # it grew after the size check
        raise FileRefused(f"{what} {path} is larger than the {limit:,} bytes allowed; it is not one genmodels wrote")
    return data


def read_text(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None, *, limit: int = SMALL_FILE, what: str = "file"
) -> str:
    """The UTF-8 text of a small regular file inside ``root``.

    Raises:
        FileNotFoundError: it does not exist.
        FileRefused: outside ``root``, not a regular file, too large, or not UTF-8.
    """
    data = read_bytes(path, root, limit=limit, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused(f"{what} {path} is not UTF-8 text; the file is damaged") from None


def read_json(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None, *, limit: int = SMALL_FILE, what: str = "file"
) -> Any:
    """A JSON value from a small regular file inside ``root``.

    Raises:
        FileNotFoundError: it does not exist.
        FileRefused: outside ``root``, not a regular file, too large, not UTF-8, or not JSON.
    """
    text = read_text(path, root, limit=limit, what=what)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack ("[" * 5000)
        raise FileRefused(f"{what} {path} is not valid JSON (or nested too deeply); the file is damaged") from None


def check_regular(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None, *, limit: int = LARGE_FILE, what: str = "file"
) -> Path:
    """Check that ``path`` is a regular file of at most ``limit`` bytes inside ``root``; its real path.

    For files handed to a library that opens them itself (safetensors, PIL, numpy).
    """
    os.close(open_regular(path, root, limit=limit, what=what))
    return confine(path, root, what) if root is not None else Path(path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB chunks (checkpoints, feature-net weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
