"""Image-to-image translation data: two sides of one picture (or two unrelated sets) in one dataset.

A translation dataset holds each example's *source* and *target* stacked along the channel axis,
uint8 (N, 2C, H, W): channels ``:C`` the source, ``C:`` the target, both C-channel images of the same size.
So the Trainer, the batch order, resume and distributed training handle it like any other dataset, and a
translator splits the channels (``models.translation``). ``ImageDataset.pairing`` says what it is:

* ``pair:A,B``: the same pictures drawn by two datasets, paired by their ids (``pair:emoji,twemoji``:
  Google's and Twitter's drawing of each emoji, by code point); an id is kept where both sides have it in
  this split (both emoji datasets split by the same rule). ``pairing == "paired"``.
* ``colorize:D``: source the grey (ITU-R 601 luma) version of D's colour image, repeated to 3 channels;
  target the colour image. Paired.
* ``edges:D``: source a sketch of the image (Sobel edges of its luma, black on white), target the image.
  Paired.
* ``unpaired:A,B``: A's images, each beside a B image of a fixed random draw (pairs carry no meaning:
  for CycleGAN). ``pairing == "unpaired"``. B is converted to A's channels and size; it is cycled or cut to
  A's length.

Labels and class names are the source side's; ``sides`` names (source, target).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from genmodels.data.dataset import ImageDataset, finish, resize, to_channels
from genmodels.errors import ConfigError

PAIRED = ("pair:", "colorize:", "edges:")
TRANSLATION_PREFIXES = (*PAIRED, "unpaired:")
EDGE_THRESHOLD = 32.0  # Sobel gradient magnitude (grey levels per pixel) above which a pixel is an edge


def is_translation(name: str) -> bool:
    """Whether a dataset name is a translation dataset (``pair:``, ``unpaired:``, ``colorize:``, ``edges:``)."""
    return name.startswith(TRANSLATION_PREFIXES)


def _two(name: str) -> tuple[str, str]:
    prefix, rest = name.split(":", 1)
    parts = [p.strip() for p in rest.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"'{name}' must name two datasets: {prefix}:A,B (e.g. {prefix}:emoji,twemoji)")
    if any(is_translation(p) for p in parts):
        raise ConfigError(f"'{name}': the two sides must be image datasets, not translation datasets")
    return parts[0], parts[1]


def load_translation(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    limit: int | None = None,
    download: bool = True,
    mirrors: list[str] | None = None,
) -> ImageDataset:
    """One split of a translation dataset (see the module docstring): uint8 (N, 2C, H, W)."""
    from genmodels.data.load import load_dataset

    def side(n: str, size: int | None = image_size, ch: int | None = channels) -> ImageDataset:
        return load_dataset(
            n, split, data_dir=data_dir, image_size=size, channels=ch, download=download, mirrors=mirrors
        )

    prefix = name.split(":", 1)[0] + ":"
    if prefix in ("colorize:", "edges:"):
        base = name[len(prefix) :].strip()
        if not base or is_translation(base):
            raise ConfigError(f"'{name}' must name one image dataset: {prefix}NAME (e.g. {prefix}emoji)")
        ds = side(base)
        if prefix == "colorize:":
            if ds.shape[0] != 3:
                raise ConfigError(
                    f"colorize:{base} needs colour images; {base} is grey (use a colour dataset: emoji, twemoji, "
                    "cifar10, or folder:/npz: data with data.channels=3)"
                )
            source = to_channels(to_channels(ds.images, 1), 3)
        else:
            source = np.repeat(sketch(ds.images), ds.shape[0], axis=1)
        out = _stack(ds, source, ds.images, name, (f"{base} ({prefix[:-1]} source)", base), "paired")
    elif prefix == "pair:":
        a_name, b_name = _two(name)
        a, b = side(a_name), side(b_name)
        if not a.ids or not b.ids:
            raise ConfigError(
                f"pair:{a_name},{b_name} pairs images by their ids, and "
                f"{a_name if not a.ids else b_name} has none (only emoji and twemoji do); "
                f"use unpaired:{a_name},{b_name} for CycleGAN"
            )
        if a.shape != b.shape:
            raise ConfigError(
                f"pair:{a_name},{b_name}: the sides have shapes {a.shape} and {b.shape}; set data.channels"
            )
        where = {i: k for k, i in enumerate(b.ids)}
        keep = [(k, where[i]) for k, i in enumerate(a.ids) if i in where]
        if not keep:
            raise ConfigError(f"pair:{a_name},{b_name} has no image id on both sides in the {split} split")
        ia, ib = (np.asarray(v, dtype=np.int64) for v in zip(*keep, strict=True))
        a.images, a.labels, a.ids = a.images[ia], None if a.labels is None else a.labels[ia], [a.ids[k] for k in ia]
        out = _stack(a, a.images, b.images[ib], name, (a_name, b_name), "paired")
    elif prefix == "unpaired:":
        a_name, b_name = _two(name)
        a = side(a_name)
        b = side(b_name, image_size or a.shape[1], channels or a.shape[0])
        b_images = resize(b.images, a.shape[1]) if b.shape[1:] != a.shape[1:] else b.images
        seed = int.from_bytes(hashlib.sha256(f"{name}/{split}".encode()).digest()[:8], "little")
        order = np.random.default_rng(seed).permutation(len(b_images))
        b_images = b_images[order[np.arange(len(a.images)) % len(order)]]
        out = _stack(a, a.images, b_images, name, (a_name, b_name), "unpaired")
    else:
        raise ConfigError(f"unknown translation dataset '{name}'")
    return finish(out, image_size=None, channels=None, limit=limit)


def _stack(
    ds: ImageDataset, source: np.ndarray, target: np.ndarray, name: str, sides: tuple[str, str], pairing: str
) -> ImageDataset:
    if source.shape != target.shape:
        raise ConfigError(f"{name}: source images {source.shape[1:]} and target images {target.shape[1:]} differ")
    return ImageDataset(
        name=name,
        split=ds.split,
        images=np.concatenate([source, target], axis=1),
        labels=ds.labels,
        classes=list(ds.classes),
        source=ds.source,
        ids=list(ds.ids),
        pairing=pairing,
        sides=sides,
    )


def sketch(images: np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Black-on-white edge maps of uint8 (N, C, H, W) images: (N, 1, H, W) uint8, 0 on an edge, else 255.

    The Sobel gradient of the luma (each 3x3 kernel divided by 4, so a step of d grey levels gives a
    magnitude of about d), edges where its magnitude exceeds ``threshold``; borders replicate the image.
    """
    y = to_channels(images, 1)[:, 0].astype(np.float32)
    p = np.pad(y, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:] - p[:, :-2, :-2] - 2 * p[:, 1:-1, :-2] - p[:, 2:, :-2]) / 4
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:] - p[:, :-2, :-2] - 2 * p[:, :-2, 1:-1] - p[:, :-2, 2:]) / 4
    edge = np.hypot(gx, gy) > threshold
    return np.where(edge, 0, 255).astype(np.uint8)[:, None]
