"""Strict reader for the IDX format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a 4-byte magic ``0x00 0x00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then
the raw values. These datasets use dtype 0x08 (unsigned byte): images are ``0x00000803`` (N, H, W) and
labels ``0x00000801`` (N,). Every check below names the file and says to delete / re-download it, since
a bad IDX file is nearly always a truncated or mixed-up download.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from genmodels.errors import DataError

UBYTE = 0x08
IMAGES_NDIM = 3
LABELS_NDIM = 1


def _bad(path: Path | str, problem: str) -> DataError:
    return DataError(f"{path}: {problem}; delete it and download it again")


def parse_idx(
    data: bytes, path: Path | str, *, ndim: int, count: int | None = None, dims: tuple[int, ...] = ()
) -> np.ndarray:
    """Parse an uncompressed IDX payload of unsigned bytes into an array of shape (N, *dims).

    Args:
        data: the whole decompressed file.
        path: the file it came from, for messages.
        ndim: 3 for images, 1 for labels (sets the expected magic).
        count: the expected number of items N, or None to accept any.
        dims: the expected per-item shape, e.g. (28, 28), or () to accept any.

    Returns:
        A writable uint8 array of shape (N, *dims).
    """
    kind = "images" if ndim == IMAGES_NDIM else "labels"
    expected_magic = (UBYTE << 8) | ndim
    if len(data) < 4:
        raise _bad(path, f"truncated: {len(data)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise _bad(path, f"not an IDX {kind} file (magic 0x{magic:08x}, expected 0x{expected_magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad(path, f"truncated IDX header: {len(data)} bytes, expected at least {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if count is not None and shape[0] != count:
        raise _bad(path, f"holds {shape[0]} {kind}, expected {count}")
    if dims and tuple(shape[1:]) != tuple(dims):
        raise _bad(path, f"item shape {tuple(shape[1:])}, expected {tuple(dims)}")
    size = header + int(np.prod(shape, dtype=np.int64))
    if len(data) < size:
        raise _bad(path, f"truncated: {len(data)} bytes, the header promises {size}")
    if len(data) > size:
        raise _bad(path, f"{len(data) - size} unexpected trailing bytes after the {size} the header promises")
    # frombuffer over bytes is read-only; copy so callers own a normal writable array.
    return np.frombuffer(data, dtype=np.uint8, count=size - header, offset=header).reshape(shape).copy()


def check_labels(labels: np.ndarray, path: Path | str, num_classes: int) -> np.ndarray:
    """Return ``labels`` as int64 after checking they lie in 0..num_classes-1."""
    if labels.size and int(labels.max()) >= num_classes:
        raise _bad(path, f"label {int(labels.max())} out of range 0..{num_classes - 1}")
    return labels.astype(np.int64)


def check_counts(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    """Raise a DataError when an images file and its labels file hold different numbers of items."""
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "the two files come from different datasets or splits: delete them and download them again"
        )
