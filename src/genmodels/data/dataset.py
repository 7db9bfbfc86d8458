"""The in-memory dataset record every loader returns, and the resize / channel transforms they share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genmodels.errors import ConfigError

SPLITS = ("train", "test")


@dataclass
class ImageDataset:
    """A whole split of an image dataset, held in memory as uint8.

    Args:
        name: dataset name, e.g. "fashion-mnist", "digits", "folder:/abs/path", "npz:/abs/path".
        split: "train" or "test".
        images: uint8 (N, C, H, W), C-contiguous, values 0..255.
        labels: int64 (N,) class indices in 0..num_classes-1, or None when unlabelled.
        classes: class names (empty when unlabelled).
        source: where the data was read from, for messages and run metadata.
        ids: per image, a stable identifier (emoji: the code points, '1f44d-1f3fd'), or empty.
        pairing: "" for plain images; "paired" or "unpaired" for a translation dataset, whose images
            stack a source and a target image along the channels (``data.pairs``).
        sides: a translation dataset's (source, target) names, else empty.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str] = field(default_factory=list)
    source: str = ""
    ids: list[str] = field(default_factory=list)
    pairing: str = ""
    sides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Loaders build these, so a violation is a bug here, not a user error: fail loudly.
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        self.images = np.ascontiguousarray(self.images)
        if self.labels is not None:
            self.labels = np.ascontiguousarray(self.labels, dtype=np.int64)
            if self.labels.shape != (len(self.images),):
                raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.images)} images")
        if self.ids and len(self.ids) != len(self.images):
            raise ValueError(f"{len(self.ids)} ids for {len(self.images)} images")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.images)


def cache_dir() -> Path:
    """The user cache directory for downloads: ``$XDG_CACHE_HOME/genmodels`` or ``~/.cache/genmodels``.

    Not created here; the downloader creates it when it first writes.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "genmodels"


def check_options(split: str, image_size: int | None, channels: int | None, limit: int | None) -> None:
    """Raise ConfigError for a bad split / image_size / channels / limit value."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; valid splits: {', '.join(SPLITS)}")
    from genmodels.data.config import MAX_IMAGE_SIZE

    if image_size is not None and (not isinstance(image_size, int) or not 1 <= image_size <= MAX_IMAGE_SIZE):
        raise ConfigError(f"image_size must be an integer in 1..{MAX_IMAGE_SIZE}, got {image_size!r}")
    if channels is not None and channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer, got {limit!r}")


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert uint8 (N, C, H, W) images between 1 and 3 channels.

    3 -> 1 uses the ITU-R 601-2 luma weights (as Pillow's ``convert("L")``); 1 -> 3 repeats the plane.
    """
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if c == 3 and channels == 1:
        # Integer arithmetic with rounding, so the result equals Pillow's conversion.
        rgb = images.astype(np.uint32)
        luma = (rgb[:, 0] * 299 + rgb[:, 1] * 587 + rgb[:, 2] * 114 + 500) // 1000
        return luma[:, None].astype(np.uint8)
    raise ConfigError(f"cannot convert {c}-channel images to {channels} channels")


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) images to (N, C, size, size) with Pillow.

    Shrinking uses area averaging (BOX: no ringing, no aliasing); enlarging uses bicubic, which Pillow
    clips to 0..255 for 8-bit images. Non-square images are stretched, not cropped.
    """
    from PIL import Image  # Pillow is only needed when resizing.

    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    method = resample_filter(h, w, size)
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for i in range(n):
        for j in range(c):
            # Per-plane "L" images: Pillow's 8-bit resize is exact-rounded and clipped.
            plane = Image.fromarray(images[i, j])
            out[i, j] = np.asarray(plane.resize((size, size), method))
    return out


def resample_filter(h: int, w: int, size: int) -> int:
    """Pillow filter for resizing an h x w image to size x size: area (BOX) to shrink, bicubic to enlarge."""
    from PIL import Image

    return Image.Resampling.BOX if size < min(h, w) else Image.Resampling.BICUBIC


def finish(ds: ImageDataset, *, image_size: int | None, channels: int | None, limit: int | None) -> ImageDataset:
    """Apply ``limit`` then resizing and channel conversion, in the cheapest order."""
    if limit is not None and limit < len(ds.images):
        # Copies, so a small prefix does not keep the whole split's buffer alive.
        ds.images = ds.images[:limit].copy()
        ds.labels = None if ds.labels is None else ds.labels[:limit].copy()
        ds.ids = ds.ids[:limit]
    images = ds.images
    # Drop to one channel before resizing and expand to three after: resize fewer planes.
    if channels == 1:
        images = to_channels(images, 1)
    if image_size is not None:
        images = resize(images, image_size)
    if channels == 3:
        images = to_channels(images, 3)
    ds.images = np.ascontiguousarray(images)
    if ds.labels is not None:
        ds.labels = np.ascontiguousarray(ds.labels)
    return ds
