"""``load_dataset``: one entry point for catalog datasets, folders of images and ``.npz`` files."""

from __future__ import annotations

import os

from genmodels.data.catalog import CATALOG
from genmodels.data.dataset import ImageDataset, check_options, finish
from genmodels.errors import ConfigError, unknown

PREFIXES = ("folder:", "npz:")
TRANSLATION_NAMES = ("pair:A,B", "unpaired:A,B", "colorize:NAME", "edges:NAME")


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    download: bool = True,
    limit: int | None = None,
    mirrors: list[str] | None = None,
) -> ImageDataset:
    """Load one split of a dataset into memory as uint8 (N, C, H, W).

    Args:
        name: a catalog name ("cifar10", "digits", "emoji", "fashion-mnist", "kmnist", "mnist", "twemoji"), or
            "folder:PATH" (a folder of images), or "npz:PATH" (a .npz file), or a translation dataset
            (``pair:A,B``, ``unpaired:A,B``, ``colorize:NAME``, ``edges:NAME``: see ``data.pairs``).
        split: "train" or "test".
        data_dir: a folder searched first for the dataset's files, and where missing ones are downloaded.
        image_size: resize every image to image_size x image_size (Pillow; area to shrink, bicubic to
            enlarge). None keeps the dataset's size. ``emoji`` and ``twemoji`` are drawn at this size
            (default 64) from their sources, Lanczos-filtered.
        channels: 1 or 3 to convert (luma for RGB -> gray, repetition for gray -> RGB); None keeps them.
        download: fetch missing files of catalog datasets from their mirrors.
        limit: keep only the first ``limit`` images (in the dataset's fixed order).
        mirrors: base URLs to download from instead of the catalog's (e.g. a local server).

    Returns:
        An ImageDataset with images uint8 (N, C, H, W) in 0..255 and labels int64 (N,) or None.

    Raises:
        ConfigError: unknown name or split, bad option value.
        DataError: files that cannot be found, downloaded, read or verified.
    """
    check_options(split, image_size, channels, limit)
    from genmodels.data.pairs import is_translation, load_translation

    if is_translation(name):
        return load_translation(
            name,
            split,
            data_dir=data_dir,
            image_size=image_size,
            channels=channels,
            limit=limit,
            download=download,
            mirrors=mirrors,
        )
    if name.startswith("folder:"):
        from genmodels.data.folder import load_folder

        path = _path_of(name)
        ds = load_folder(path, split, image_size=image_size, channels=channels, limit=limit)
        # The folder loader already applied limit and size while decoding; only channels may remain.
        return finish(ds, image_size=None, channels=channels, limit=None)
    if name.startswith("npz:"):
        from genmodels.data.arrays import load_npz

        ds = load_npz(_path_of(name), split)
        return finish(ds, image_size=image_size, channels=channels, limit=limit)
    entry = CATALOG.get(name.strip().lower().replace("_", "-"))
    if entry is None:
        raise unknown("dataset", name, [*CATALOG, *(f"{p}PATH" for p in PREFIXES), *TRANSLATION_NAMES])
    if entry.kind in ("emoji", "twemoji"):
        from genmodels.data.emoji import load_emoji

        ds = load_emoji(entry.kind, split, image_size=image_size)
        return finish(ds, image_size=None, channels=channels, limit=limit)
    if entry.kind == "digits":
        from genmodels.data.digits import load_digits_dataset

        ds = load_digits_dataset(split, image_size=image_size, limit=limit)
        size = None if image_size == 8 else image_size
        return finish(ds, image_size=size, channels=channels, limit=None)
    from genmodels.data.official import load_official

    ds = load_official(entry, split, data_dir=data_dir, download_ok=download, mirrors=mirrors)
    return finish(ds, image_size=image_size, channels=channels, limit=limit)


def _path_of(name: str) -> str:
    path = name.split(":", 1)[1]
    if not path:
        raise ConfigError(f"'{name}' names no path; use {name}PATH, e.g. {name}/data/images")
    return path
