"""A folder of image files as a dataset (``folder:PATH``).

Layout: images (anything Pillow opens: PNG, JPEG, BMP, GIF, WebP, ...) anywhere below ``PATH``. The
first-level sub-folder names, sorted, are the classes (an image in ``PATH/cat/a/b.png`` is a "cat"); images
sitting directly in ``PATH`` with no sub-folders make an unlabelled dataset. If ``PATH`` has both
``train/`` and ``test/`` sub-folders they are the two splits (classes are the sorted union of both
splits' sub-folders, so label indices agree); otherwise "train" is every image and "test" is an error.
Order (for ``limit``) is the sorted relative path, so a prefix is taken class by class.

Images are read as 8-bit: 16-bit grayscale is scaled down, transparency is composited onto black, and
EXIF orientation is applied. By default every image must have the same size (else pass
``image_size``: images are then stretched to a square, not cropped), and the result has 1 channel when
every file is grayscale (modes 1, L, LA, I, I;16, F), else 3.

Safety: symbolic links that point outside ``PATH`` are refused (an error naming the link: copy the file
in instead); a file that is not an image is an error (remove it; dot-files and OS clutter such as
Thumbs.db are skipped), and so is anything that is not a regular file, directly or through a link (a
FIFO, a socket, a device such as ``/dev/zero``, a broken link): it is refused when the folder is
listed, never opened, so it cannot block or flood the loader. Every file is opened through
``genmodels.safeio`` (confined to ``PATH``, checked to be regular on the open descriptor, at most
MAX_FILE_BYTES), so one swapped in after the listing is refused too. Images over 64 megapixels
(decompression bombs) are refused. The pixel limit is set only while this loader runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genmodels import safeio
from genmodels.data.dataset import ImageDataset, resample_filter
from genmodels.errors import DataError

if TYPE_CHECKING:  # Pillow is imported lazily, inside the functions that need it
    from PIL.Image import Image as PILImage

MAX_PIXELS = 64 * 1024 * 1024  # per image; far above any training image, far below a bomb
MAX_FILE_BYTES = 1 << 30  # per file: a 64-megapixel 16-bit RGBA TIFF is 512 MiB
SKIPPED_NAMES = frozenset({"Thumbs.db", "desktop.ini", "Icon\r"})
EXIF_HEADER_FORMATS = frozenset({"JPEG", "MPO", "TIFF", "WEBP"})
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@contextlib.contextmanager
def pixel_limit() -> Iterator[None]:
    """Refuse images over MAX_PIXELS while the block runs, restoring Pillow's global limit afterwards.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that; turning the warning into an
    error makes MAX_PIXELS the hard limit. (The setting is process-wide while it lasts.)
    """
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def load_folder(
    path: str, split: str, *, image_size: int | None, channels: int | None, limit: int | None
) -> ImageDataset:
    """Read a folder of images; see the module docstring for the layout and rules."""
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"folder dataset {root} {what}; pass folder:PATH with PATH a folder of images")
    root = root.resolve()
    base, classes = _split_base(root, split)
    files = _list_images(base, root)
    if not files:
        raise DataError(f"no image files found in {base}; put PNG/JPEG files in it or in class sub-folders")
    labelled = any(label is not None for _, label in files)
    if labelled and any(label is None for _, label in files):
        loose = next(f for f, label in files if label is None)
        raise DataError(
            f"{base} mixes images directly in the folder ({loose.name}) with class sub-folders; "
            "move every image into a class sub-folder, or use a folder without sub-folders"
        )
    if limit is not None:
        files = files[:limit]
    with pixel_limit():
        sizes, gray = _scan(files, root)
        if image_size is None and len(set(sizes)) > 1:
            (w0, h0), (w1, h1) = sizes[0], next(s for s in sizes if s != sizes[0])
            other = files[sizes.index((w1, h1))][0]
            raise DataError(
                f"images in {base} have different sizes ({files[0][0].name}: {w0}x{h0}, "
                f"{other.name}: {w1}x{h1}); pass image_size=N (--set data.image_size=N) to resize them all to NxN"
            )
        c = channels or (1 if all(gray) else 3)
        w, h = (image_size, image_size) if image_size else sizes[0]
        images = np.empty((len(files), c, h, w), dtype=np.uint8)
        for i, (file, _) in enumerate(files):
            image = _read(file, c, image_size, root)
            if image.shape[1:] != (h, w):  # e.g. an EXIF rotation found only while decoding
                raise DataError(
                    f"{file} decodes to {image.shape[2]}x{image.shape[1]}, not {w}x{h} like the others; "
                    "pass image_size=N (--set data.image_size=N) to resize them all to NxN"
                )
            images[i] = image
    labels = np.array([classes.index(label) for _, label in files], dtype=np.int64) if labelled else None
    return ImageDataset(
        name=f"folder:{root}",
        split=split,
        images=images,
        labels=labels,
        classes=classes if labelled else [],
        source=str(base),
    )


def _split_base(root: Path, split: str) -> tuple[Path, list[str]]:
    """The folder holding ``split``'s images and the sorted class names."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        names = set(_class_dirs(root / "train", root)) | set(_class_dirs(root / "test", root))
        return root / split, sorted(names)
    if split == "test":
        raise DataError(
            f"folder {root} has no test split: it needs both train/ and test/ sub-folders "
            "(PATH/train/<class>/..., PATH/test/<class>/...); use split 'train' for the whole folder"
        )
    return root, sorted(_class_dirs(root, root))


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and entry.name not in SKIPPED_NAMES


def _check_link(entry: os.DirEntry, root: Path) -> Path:
    """Resolve a symbolic link, refusing one that leads outside ``root``."""
    target = Path(os.path.realpath(entry.path))
    if target != root and root not in target.parents:
        raise DataError(
            f"{entry.path} is a symbolic link to {target}, outside {root}; refusing to follow it: "
            "copy the file into the folder instead"
        )
    return target


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if _visible(e)), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot list {folder} ({exc.strerror or exc})") from exc


def _class_dirs(folder: Path, root: Path) -> list[str]:
    names = []
    for entry in _entries(folder):
        if entry.is_symlink():
            _check_link(entry, root)
            # A link to a folder inside root would only duplicate images already counted.
            continue
        if entry.is_dir():
            names.append(entry.name)
    return names


def _list_images(base: Path, root: Path) -> list[tuple[Path, str | None]]:
    """Every candidate file below ``base`` with its class (first-level folder name) or None, sorted."""
    found: list[tuple[Path, str | None]] = []

    def walk(folder: Path, label: str | None) -> None:
        for entry in _entries(folder):
            if entry.is_symlink():
                target = _check_link(entry, root)
                if target.is_dir():
                    continue  # inside root: a duplicate at best, a cycle at worst
                _check_regular(entry.path, target, link=True)
                found.append((Path(entry.path), label))
            elif entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), entry.name if label is None else label)
            else:
                _check_regular(entry.path, Path(entry.path), link=False)
                found.append((Path(entry.path), label))

    walk(base, None)
    return found


def _check_regular(name: str, target: Path, *, link: bool) -> None:
    """Refuse a listed entry that is not a regular file (``lstat``/``stat`` only: nothing is opened)."""
    what = f"{name} is a symbolic link to" if link else f"{name} is"
    try:
        st = os.stat(target)
    except OSError as exc:
        raise DataError(f"{what} {target}, which cannot be read ({exc.strerror}); remove the link") from exc
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise DataError(f"{what} {kind}, not an image file; remove it from the folder")
    if st.st_size > MAX_FILE_BYTES:
        raise DataError(
            f"{what} a file of {st.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} an image may be; remove it"
        )


def _scan(files: list[tuple[Path, str | None]], root: Path) -> tuple[list[tuple[int, int]], list[bool]]:
    """Open every file's header: its (width, height) and whether it is grayscale. Checks it is an image."""
    from PIL import ExifTags

    sizes, gray = [], []
    for file, _ in files:
        with _open(file, root) as img:
            # EXIF orientation 5..8 swaps width and height once applied. Only ask where EXIF sits in the
            # header: Pillow would decode a whole PNG to look for an eXIf chunk after the pixels.
            orientation = 1
            if "exif" in img.info or img.format in EXIF_HEADER_FORMATS:
                try:
                    orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
                except (OSError, SyntaxError, ValueError) as exc:
                    raise DataError(f"{file}: damaged image header ({exc}); remove or replace it") from exc
            w, h = img.size
            sizes.append((h, w) if orientation in (5, 6, 7, 8) else (w, h))
            gray.append(img.mode in GRAY_MODES)
    return sizes, gray


@contextlib.contextmanager
def _open(file: Path, root: Path) -> Iterator[PILImage]:
    """Open an image with Pillow, turning every failure into a DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        fd = safeio.open_regular(file, root, limit=MAX_FILE_BYTES, what="image file")
    except safeio.FileRefused as exc:  # swapped for a FIFO or a link out since it was listed
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{file}: cannot open ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "rb") as fp:  # Pillow leaves a file object it was handed open: this closes it
        try:
            img = Image.open(fp)
        except UnidentifiedImageError as exc:
            raise DataError(
                f"{file} is not an image Pillow can read; remove it from the folder (or convert it to PNG)"
            ) from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(
                f"{file}: refusing an image of more than {MAX_PIXELS // 2**20} megapixels "
                f"(a decompression bomb?): {exc}; remove it or shrink it"
            ) from exc
        except OSError as exc:
            raise DataError(f"{file}: cannot open ({exc.strerror or exc})") from exc
        try:
            yield img
        finally:
            img.close()


def _read(file: Path, channels: int, image_size: int | None, root: Path) -> np.ndarray:
    """Decode one file to uint8 (channels, H, W), resized to image_size x image_size if given."""
    from PIL import Image, ImageOps

    with _open(file, root) as img:
        try:
            img = ImageOps.exif_transpose(img)
            img = _to_8bit(img)
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{file}: refusing a decompression bomb ({exc}); remove it") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{file}: cannot decode ({exc}); the file is damaged: remove or replace it") from exc
    img = img.convert("L") if channels == 1 else img.convert("RGB")
    if image_size is not None and img.size != (image_size, image_size):
        w, h = img.size
        img = img.resize((image_size, image_size), resample_filter(h, w, image_size))
    arr = np.asarray(img)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _to_8bit(img: PILImage) -> PILImage:
    """Bring any Pillow mode to 8-bit "L" or "RGB", compositing transparency onto black."""
    from PIL import Image

    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode.startswith("I"):
        # 16-bit grayscale (PNG opens as I or I;16): scale 0..65535 to 0..255 instead of clipping.
        arr = np.asarray(img, dtype=np.float64) / 257.0
        return Image.fromarray(np.rint(arr).clip(0, 255).astype(np.uint8))
    if mode in ("1", "F"):
        return img.convert("L")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("LA" if mode in ("LA", "La") else "RGBA"), dtype=np.uint32)
        alpha = rgba[..., -1:]
        out = ((rgba[..., :-1] * alpha + 127) // 255).astype(np.uint8)
        return Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out)
    return img.convert("RGB")
