"""Locate, download, verify and read the file-based catalog datasets (MNIST, Fashion-MNIST, KMNIST, CIFAR-10).

Acceptance rule for IDX files: a ``.gz`` is accepted when its MD5 matches the published one or its
decompressed payload's SHA-256 matches the recorded one (Debian recompresses its copies). An
uncompressed IDX file is checked by the payload SHA-256 where one is recorded; where only the ``.gz``
MD5 is published (MNIST train-images, all of KMNIST) there is nothing to hash it against, so we accept it
after strict structural validation instead (magic, item count, 28x28 dims, exact size, label range):
people commonly keep torchvision's extracted ``raw/`` files, and refusing them would force a download
the user cannot always make. The ``.gz`` is preferred whenever both are present.

CIFAR-10 is read from the binary version only (never the pickled Python version, which can execute
code on load): the records are taken straight from the tarball's ``data_batch_{1..5}.bin`` /
``test_batch.bin`` members without extracting anything, or from an extracted ``cifar-10-batches-bin``
folder whose files must each hold exactly 10,000 records of 3,073 bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np

from genmodels.data.catalog import (
    CIFAR_DIR,
    CIFAR_TAR,
    Entry,
    download_root,
    locate_split,
    mirror_urls,
    search_roots,
)
from genmodels.data.dataset import ImageDataset
from genmodels.data.download import DownloadError, download, host_of
from genmodels.data.idx import IMAGES_NDIM, LABELS_NDIM, check_counts, check_labels, parse_idx
from genmodels.data.verify import read_payload
from genmodels.errors import DataError

CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then the R, G and B 32x32 planes
CIFAR_PER_FILE = 10000
CIFAR_MEMBERS = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}


def load_official(
    entry: Entry,
    split: str,
    *,
    data_dir: str | os.PathLike | None,
    download_ok: bool,
    mirrors: list[str] | None,
) -> ImageDataset:
    """Locate (downloading what is missing, if allowed), verify and read one split of a file-based dataset."""
    roots = search_roots(data_dir)
    located = locate_split(entry, split, roots)
    missing = [name for name, path in located.items() if path is None]
    paths = {name: path for name, path in located.items() if path is not None}
    if missing:
        paths.update(_fetch_missing(entry, split, missing, roots, data_dir, download_ok, mirrors))
    if entry.kind == "cifar":
        return _load_cifar(entry, split, paths[CIFAR_TAR])
    return _load_idx(entry, split, paths)


def _fetch_missing(
    entry: Entry,
    split: str,
    missing: list[str],
    roots: list[Path],
    data_dir: str | os.PathLike | None,
    download_ok: bool,
    mirrors: list[str] | None,
) -> dict[str, Path]:
    target = download_root(data_dir, entry)
    bases = mirror_urls(entry, mirrors)
    if not download_ok:
        raise _offline(entry, split, missing, roots, target, "download disabled")
    specs = {spec.name: spec for spec in entry.files[split]}
    fetched: dict[str, Path] = {}
    for name in missing:
        try:
            fetched[name] = download(
                [base + name for base in bases],
                target / name,
                specs[name].checksum,
                what=f"{entry.name} {name.split('.')[0]}",
            )
        except DownloadError as exc:
            # Stop at the first file: if one cannot be fetched the others will not be either.
            # (A ChecksumError is not caught: a mirror answered, with a bad file, and says so.)
            raise _offline(entry, split, missing, roots, target, f"download failed: {exc.reason}") from exc
    return fetched


def _offline(entry: Entry, split: str, missing: list[str], roots: list[Path], target: Path, reason: str) -> DataError:
    """The one-line error for a split that is neither on disk nor downloadable right now."""
    apt = f", or apt-get install {entry.apt}" if entry.apt else ""
    hosts = ", ".join(host_of(m) for m in entry.mirrors)
    return DataError(
        f"{entry.name} {split} split not found: need {', '.join(missing)}; looked in "
        f"{', '.join(str(r) for r in roots)} (as ROOT/{entry.name}/FILE, ROOT/FILE"
        f"{f', ROOT/{entry.torchvision}/raw/FILE' if entry.torchvision else ''}, gzipped or not); {reason}. "
        f"Put the files in {target} (official mirrors: {hosts}), set GENMODELS_DATA=DIR, "
        f"or pass --data-dir DIR / data_dir=DIR{apt}"
    )


def _load_idx(entry: Entry, split: str, located: dict[str, Path]) -> ImageDataset:
    images_spec, labels_spec = entry.files[split]
    images_path, labels_path = located[images_spec.name], located[labels_spec.name]
    count = entry.counts[split]
    _, h, w = entry.shape
    stem = f"{entry.name} {images_spec.name.split('.')[0]}"
    payload = read_payload(images_path, images_spec.checksum, what=stem)
    images = parse_idx(payload, images_path, ndim=IMAGES_NDIM, count=count, dims=(h, w))
    del payload
    stem = f"{entry.name} {labels_spec.name.split('.')[0]}"
    payload = read_payload(labels_path, labels_spec.checksum, what=stem)
    labels = parse_idx(payload, labels_path, ndim=LABELS_NDIM, count=count)
    labels = check_labels(labels, labels_path, len(entry.classes))
    check_counts(images, labels, images_path, labels_path)
    sources = sorted({str(images_path), str(labels_path)})
    return ImageDataset(
        name=entry.name,
        split=split,
        images=images[:, None],
        labels=labels,
        classes=list(entry.classes),
        source=", ".join(sources),
    )


def _load_cifar(entry: Entry, split: str, path: Path) -> ImageDataset:
    members = CIFAR_MEMBERS[split]
    blobs = [_read_cifar_file(path / m) for m in members] if path.is_dir() else _read_cifar_tar(path, members, entry)
    records = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = check_labels(records[:, 0], path, len(entry.classes))
    # Each record's 3072 image bytes are already channel-first: R plane, G plane, B plane, row-major.
    images = records[:, 1:].reshape(-1, *entry.shape).copy()
    return ImageDataset(entry.name, split, images, labels, list(entry.classes), str(path))


def _read_cifar_file(path: Path) -> bytes:
    expected = CIFAR_PER_FILE * CIFAR_RECORD
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read ({exc.strerror or exc}); the {CIFAR_DIR} folder is incomplete: "
            f"delete it and use {CIFAR_TAR} instead"
        ) from exc
    if len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes, expected {expected} ({CIFAR_PER_FILE} records of {CIFAR_RECORD}); "
            f"delete the {CIFAR_DIR} folder and download {CIFAR_TAR} again"
        )
    return data


def _read_cifar_tar(path: Path, members: tuple[str, ...], entry: Entry) -> list[bytes]:
    spec = entry.files["train"][0]
    tar_bytes = read_payload(path, spec.checksum, what=CIFAR_TAR)
    expected = CIFAR_PER_FILE * CIFAR_RECORD
    blobs = []
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for name in members:
                # Read only the known member names; nothing is ever extracted to disk.
                info = tar.getmember(f"{CIFAR_DIR}/{name}")
                if not info.isfile() or info.size != expected:
                    raise DataError(
                        f"{path}: member {info.name} is not a {expected}-byte file; delete it and download it again"
                    )
                blobs.append(tar.extractfile(info).read())  # type: ignore[union-attr]
    except KeyError as exc:
        raise DataError(f"{path}: no member {exc}; delete it and download {CIFAR_TAR} again") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: corrupt tarball ({exc}); delete it and download it again") from exc
    return blobs
