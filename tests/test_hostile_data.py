"""A folder dataset that holds things other than image files: a FIFO, a symlink to one, a symlink to
``/dev/zero`` or out of the folder, a broken link. Each is refused at once with an error naming it; none
may block the loader (the old loader opened a symlinked FIFO and waited for a writer forever)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genmodels.data import load_dataset
from genmodels.errors import DataError

WAIT_S = 20  # the loader answers in milliseconds; a blocked open never does


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8)).save(path)


def _load_within(spec: str, fifos: list[Path]) -> BaseException | None:
    """Load ``spec`` in a thread; the exception it raised (None if it loaded). A load still running after
    WAIT_S fails the test; its FIFOs are then opened for writing, which lets a blocked open return."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_dataset(spec)
            outcome.append(None)
        except BaseException as e:  # handed to the test thread
            outcome.append(e)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(WAIT_S)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"loading {spec} blocked for {WAIT_S} s")
    return outcome[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _png(root / "a" / "x.png", 10)
    _png(root / "b" / "y.png", 200)
    assert len(load_dataset(f"folder:{root}")) == 2
    return root


def test_a_symlink_to_a_fifo_inside_the_folder_is_refused_without_blocking(folder: Path) -> None:
    fifo = folder / "a" / ".pipe"  # a dot-file: never listed itself, only reached through the link
    os.mkfifo(fifo)
    (folder / "a" / "z.png").symlink_to(fifo)
    err = _load_within(f"folder:{folder}", [fifo])
    assert isinstance(err, DataError), err
    assert "z.png is a symbolic link to a FIFO, not an image file; remove it" in str(err)


def test_a_fifo_in_the_folder_is_refused_not_skipped(folder: Path) -> None:
    fifo = folder / "b" / "pipe.png"
    os.mkfifo(fifo)
    err = _load_within(f"folder:{folder}", [fifo])
    assert isinstance(err, DataError), err
    assert "pipe.png is a FIFO, not an image file" in str(err)


def test_a_symlink_to_dev_zero_is_refused_as_leading_outside(folder: Path) -> None:
    (folder / "a" / "zero.png").symlink_to("/dev/zero")
    err = _load_within(f"folder:{folder}", [])
    assert isinstance(err, DataError) and "zero.png is a symbolic link to /dev/zero, outside" in str(err)


def test_a_broken_symlink_is_named(folder: Path) -> None:
    (folder / "a" / "gone.png").symlink_to(folder / "a" / "missing.png")
    err = _load_within(f"folder:{folder}", [])
    assert isinstance(err, DataError) and "gone.png is a symbolic link to" in str(err) and "remove" in str(err)


def test_a_file_swapped_for_a_fifo_after_listing_is_refused_on_open(folder: Path, monkeypatch) -> None:
    """The open itself checks the descriptor (O_NONBLOCK + fstat), not only the listing's stat."""
    from genmodels.data import folder as F

    listed = F._list_images

    def list_then_swap(base: Path, root: Path):
        files = listed(base, root)
        target = folder / "b" / "y.png"
        target.unlink()
        os.mkfifo(target)
        return files

    monkeypatch.setattr(F, "_list_images", list_then_swap)
    err = _load_within(f"folder:{folder}", [folder / "b" / "y.png"])
    assert isinstance(err, DataError) and "y.png is a FIFO, not a regular file" in str(err)
