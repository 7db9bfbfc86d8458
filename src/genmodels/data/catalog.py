"""The catalog of named datasets, where their files are looked for, and a no-download status report.

Look-up order for a dataset's files: the explicit ``data_dir``, ``$GENMODELS_DATA``, ``cache_dir()``,
then the system location ``/usr/share/datasets`` (where Debian's ``dataset-fashion-mnist`` installs).
In each root a file may sit at ``<root>/<name>/<file>``, torchvision's ``<root>/<MNIST|FashionMNIST|
KMNIST>/raw/<file>`` or ``<root>/<file>``, gzipped or not. Downloads go to ``<target>/<name>/`` where
target is ``data_dir``, else ``$GENMODELS_DATA``, else ``cache_dir()``: the ``<name>`` sub-folder is
needed because MNIST, Fashion-MNIST and KMNIST use the very same file names.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from genmodels.data.dataset import SPLITS, cache_dir
from genmodels.data.download import host_of
from genmodels.data.emoji import GROUPS as EMOJI_GROUPS
from genmodels.data.verify import Checksum

SYSTEM_ROOTS = (Path("/usr/share/datasets"),)
CIFAR_TAR = "cifar-10-binary.tar.gz"
CIFAR_DIR = "cifar-10-batches-bin"


@dataclass(frozen=True)
class FileSpec:
    """One distributed file and its checksum (``name`` as published, e.g. ending in ``.gz``)."""

    name: str
    checksum: Checksum


@dataclass(frozen=True)
class Entry:
    """One catalog dataset.

    Args:
        name: catalog name.
        kind: loader family: "idx", "cifar", "digits", "emoji" or "twemoji".
        shape: (C, H, W) of the stored images.
        classes: class names, index = label.
        files: per split, the files it needs (IDX: images then labels; CIFAR: the one tarball).
        counts: per split, the number of images.
        mirrors: base URLs (ending in "/") the files are downloaded from, in order.
        torchvision: torchvision's folder name for this dataset, or None.
        apt: a Debian package that installs the files, or None.
    """

    name: str
    kind: str
    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    files: dict[str, tuple[FileSpec, ...]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()
    torchvision: str | None = None
    apt: str | None = None


def _idx_files(md5: dict[str, str], sha256: dict[str, str]) -> dict[str, tuple[FileSpec, ...]]:
    files: dict[str, tuple[FileSpec, ...]] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        files[split] = tuple(FileSpec(f"{n}.gz", Checksum(md5.get(n), sha256.get(n))) for n in names)
    return files


# Published MD5 of the official .gz files, and SHA-256 of the decompressed payloads measured from
# official copies (see DESIGN.md). MNIST train-images and all of KMNIST have no payload hash on record.
MNIST = Entry(
    name="mnist",
    kind="idx",
    shape=(1, 28, 28),
    classes=tuple(str(i) for i in range(10)),
    files=_idx_files(
        md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        sha256={
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    counts={"train": 60000, "test": 10000},
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    torchvision="MNIST",
)

FASHION_MNIST = Entry(
    name="fashion-mnist",
    kind="idx",
    shape=(1, 28, 28),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    files=_idx_files(
        md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    counts={"train": 60000, "test": 10000},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    torchvision="FashionMNIST",
    apt="dataset-fashion-mnist",
)

KMNIST = Entry(
    name="kmnist",
    kind="idx",
    shape=(1, 28, 28),
    # Romanised names of the ten hiragana classes, in label order.
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    files=_idx_files(
        md5={
            "train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        sha256={},
    ),
    counts={"train": 60000, "test": 10000},
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    torchvision="KMNIST",
)

_CIFAR_SPEC = FileSpec(CIFAR_TAR, Checksum(md5="c32a1d4ab5d03f1284b67883e8d87530"))
CIFAR10 = Entry(
    name="cifar10",
    kind="cifar",
    shape=(3, 32, 32),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    files={"train": (_CIFAR_SPEC,), "test": (_CIFAR_SPEC,)},
    counts={"train": 50000, "test": 10000},
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)

DIGITS = Entry(
    name="digits",
    kind="digits",
    shape=(1, 28, 28),
    classes=tuple(str(i) for i in range(10)),
    counts={"train": 1500, "test": 297},
)

# Rendered from files Debian / PyPI packages install (data/emoji.py); counts depend on those versions.
EMOJI = Entry(name="emoji", kind="emoji", shape=(3, 64, 64), classes=EMOJI_GROUPS, apt="fonts-noto-color-emoji")
TWEMOJI = Entry(name="twemoji", kind="twemoji", shape=(3, 64, 64), classes=EMOJI_GROUPS)

CATALOG: dict[str, Entry] = {e.name: e for e in (CIFAR10, DIGITS, EMOJI, FASHION_MNIST, KMNIST, MNIST, TWEMOJI)}


def dataset_names() -> list[str]:
    """Names of the catalog datasets, sorted.

    ``load_dataset`` also accepts ``folder:PATH`` (a folder of images) and ``npz:PATH`` (a .npz array file).
    """
    return sorted(CATALOG)


def search_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The roots searched for dataset files, in priority order (they need not exist)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("GENMODELS_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_dir())
    roots.extend(SYSTEM_ROOTS)
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def download_root(data_dir: str | os.PathLike | None, entry: Entry) -> Path:
    """Where missing files of ``entry`` are downloaded: ``<data_dir|$GENMODELS_DATA|cache_dir()>/<name>``."""
    env = os.environ.get("GENMODELS_DATA")
    if data_dir is not None:
        return Path(data_dir).expanduser() / entry.name
    return (Path(env).expanduser() if env else cache_dir()) / entry.name


def mirror_urls(entry: Entry, mirrors: list[str] | None = None) -> list[str]:
    """Base URLs to download from: ``mirrors`` if given (replacing the defaults), else
    ``$GENMODELS_MIRRORS`` (comma-separated) followed by the catalog's own mirrors."""
    if mirrors is not None:
        bases = list(mirrors)
    else:
        env = os.environ.get("GENMODELS_MIRRORS", "")
        bases = [m.strip() for m in env.split(",") if m.strip()] + list(entry.mirrors)
    return [b if b.endswith("/") else b + "/" for b in bases]


def _candidates(root: Path, entry: Entry, filename: str) -> list[Path]:
    folders = [root / entry.name]
    if entry.torchvision:
        folders.append(root / entry.torchvision / "raw")
    folders.append(root)
    # Prefer the gzip: its published MD5 can always be checked, an uncompressed copy's not always.
    names = [filename, filename.removesuffix(".gz")] if filename.endswith(".gz") else [filename]
    return [folder / n for folder in folders for n in names]


def locate(entry: Entry, filename: str, roots: list[Path]) -> Path | None:
    """The first existing copy of ``filename`` (gzipped or not) under ``roots``, or None."""
    for root in roots:
        for path in _candidates(root, entry, filename):
            if path.is_file():
                return path
    return None


def locate_cifar(roots: list[Path]) -> Path | None:
    """The CIFAR-10 binary tarball or an extracted ``cifar-10-batches-bin`` folder under ``roots``."""
    for root in roots:
        for folder in (root / CIFAR10.name, root):
            if (folder / CIFAR_TAR).is_file():
                return folder / CIFAR_TAR
            if (folder / CIFAR_DIR).is_dir():
                return folder / CIFAR_DIR
    return None


def locate_split(entry: Entry, split: str, roots: list[Path]) -> dict[str, Path | None]:
    """For each file ``split`` of ``entry`` needs, where it was found (or None)."""
    if entry.kind == "cifar":
        return {CIFAR_TAR: locate_cifar(roots)}
    return {spec.name: locate(entry, spec.name, roots) for spec in entry.files[split]}


def describe_datasets(data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Report every catalog dataset and whether its files are on disk, without downloading or reading them.

    Returns:
        One dict per dataset: name, shape (C, H, W), num_classes, classes, splits, status
        ("found" | "missing" | "downloadable"), found_splits, and where (the folder found, or a one-line
        reason / how to get it).
    """
    roots = search_roots(data_dir)
    report = []
    for entry in CATALOG.values():
        if entry.kind in ("emoji", "twemoji"):
            from genmodels.data.emoji import where as emoji_where

            ok, where = emoji_where(entry.kind)
            status, found_splits = ("found", list(SPLITS)) if ok else ("missing", [])
        elif entry.kind == "digits":
            found = importlib.util.find_spec("sklearn") is not None
            status = "found" if found else "missing"
            where = "bundled with scikit-learn" if found else "install scikit-learn (pip install scikit-learn)"
            found_splits = list(SPLITS) if found else []
        else:
            status, where, found_splits = _file_status(entry, roots)
        report.append(
            {
                "name": entry.name,
                "shape": entry.shape,
                "num_classes": len(entry.classes),
                "classes": list(entry.classes),
                "splits": list(SPLITS),
                "status": status,
                "found_splits": found_splits,
                "where": where,
            }
        )
    return report


def _file_status(entry: Entry, roots: list[Path]) -> tuple[str, str, list[str]]:
    found_in: dict[str, set[str]] = {}
    missing: dict[str, list[str]] = {}
    for split in SPLITS:
        located = locate_split(entry, split, roots)
        missing[split] = [name for name, path in located.items() if path is None]
        found_in[split] = {str(path.parent) if path.is_file() else str(path) for path in located.values() if path}
    found_splits = [s for s in SPLITS if not missing[s]]
    hosts = ", ".join(host_of(m) for m in entry.mirrors)
    get = f"downloaded on first use from {hosts}" + (f", or apt-get install {entry.apt}" if entry.apt else "")
    if len(found_splits) == len(SPLITS):
        return "found", ", ".join(sorted(set().union(*found_in.values()))), found_splits
    parts = []
    for split in SPLITS:
        if missing[split]:
            parts.append(f"{split}: missing {', '.join(missing[split])}")
        else:
            parts.append(f"{split}: {', '.join(sorted(found_in[split]))}")
    return "downloadable", "; ".join(parts) + f" ({get})", found_splits
