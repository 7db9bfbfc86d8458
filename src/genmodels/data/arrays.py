"""A ``.npz`` array file as a dataset (``npz:PATH``).

Keys: ``images`` and optional ``labels`` for the train split, ``test_images`` / ``test_labels`` for the
test split (Keras-style ``x_train`` / ``y_train`` / ``x_test`` / ``y_test`` are accepted too), and optional
``classes`` (an array of strings) naming the labels. Images may be (N, H, W), (N, C, H, W) or
(N, H, W, C) with C in {1, 3, 4}: the last dimension is taken as channels when it is 1, 3 or 4 and the
second is not. Values are uint8 (any integer dtype holding 0..255 is accepted), bool (0/255), or floats
in [0, 1] (scaled by 255 and rounded). A 4th (alpha) channel is composited onto black. Labels are
non-negative integers; without ``classes`` they are named "0".."K-1" with K = 1 + the largest label in
either split. The file is always loaded with ``allow_pickle=False``: object arrays are refused, since
unpickling can run arbitrary code.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from genmodels.data.dataset import ImageDataset
from genmodels.errors import DataError

KEYS = {
    "train": (("images", "x_train"), ("labels", "y_train")),
    "test": (("test_images", "x_test"), ("test_labels", "y_test")),
}
CHANNELS = (1, 3, 4)

MAX_CLASSES = 10_000  # class labels 0..K-1; a label of 1e8 would make a list of 1e8 class names


def load_npz(path: str, split: str) -> ImageDataset:
    """Read one split of a ``.npz`` file; see the module docstring for the keys and accepted arrays."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"npz dataset {file} does not exist; pass npz:PATH with PATH a .npz file")
    file = file.resolve()
    arrays = _read_all(file)
    (image_keys, label_keys) = KEYS[split]
    image_key = next((k for k in image_keys if k in arrays), None)
    if image_key is None:
        raise DataError(
            f"{file} has no '{image_keys[0]}' array for the {split} split (keys found: "
            f"{', '.join(sorted(arrays)) or 'none'}); save it with np.savez(path, {image_keys[0]}=...)"
        )
    images = _images(arrays[image_key], file, image_key)
    label_key = next((k for k in label_keys if k in arrays), None)
    labels = None if label_key is None else _labels(arrays[label_key], file, label_key, len(images))
    classes = _classes(arrays, file, labels) if labels is not None else []
    return ImageDataset(f"npz:{file}", split, images, labels, classes, str(file))


def _read_all(file: Path) -> dict[str, np.ndarray]:
    try:
        with open(file, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from exc
    if magic == b"\x93NUMPY":
        raise DataError(f"{file} is a single .npy array, not a .npz archive; save it with np.savez")
    if not magic.startswith(b"PK"):
        # Checked here because np.load would otherwise try to unpickle it.
        raise DataError(f"{file} is not a .npz (zip) archive; save the arrays with np.savez")
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{file} holds object (pickled) arrays, which are refused because unpickling can run code; "
                "save plain numeric arrays (e.g. uint8 images, int64 labels)"
            ) from exc
        raise DataError(f"{file}: cannot read as .npz ({exc}); re-save it with np.savez") from exc
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DataError(f"{file}: corrupt .npz file ({exc}); re-save it with np.savez") from exc


def _images(arr: np.ndarray, file: Path, key: str) -> np.ndarray:
    """Validate and convert an image array to uint8 (N, C, H, W) with C in {1, 3}."""
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[-1] in CHANNELS and arr.shape[1] not in CHANNELS:
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.shape[1] not in CHANNELS:
            raise DataError(
                f"{file}: '{key}' has shape {arr.shape}, with no channel axis of size 1, 3 or 4 "
                "(expected N,H,W or N,C,H,W or N,H,W,C)"
            )
    else:
        raise DataError(f"{file}: '{key}' has shape {arr.shape}; expected N,H,W or N,C,H,W or N,H,W,C images")
    if len(arr) == 0 or 0 in arr.shape:
        raise DataError(f"{file}: '{key}' is empty (shape {arr.shape})")
    arr = _to_uint8(arr, file, key)
    if arr.shape[1] == 4:
        alpha = arr[:, 3:].astype(np.uint32)
        arr = ((arr[:, :3].astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, file: Path, key: str) -> np.ndarray:
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{file}: integer '{key}' values span {lo}..{hi}; expected 0..255")
        return arr.astype(np.uint8)
    if kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(f"{file}: '{key}' contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            hint = " (divide by 255 first, or save uint8)" if hi <= 255.0 and lo >= 0.0 else ""
            raise DataError(f"{file}: float '{key}' values span {lo:g}..{hi:g}; expected [0, 1]{hint}")
        return np.rint(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise DataError(f"{file}: '{key}' has dtype {arr.dtype}; expected uint8, or float in [0, 1]")


def _labels(arr: np.ndarray, file: Path, key: str, n: int) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        raise DataError(f"{file}: '{key}' has dtype {arr.dtype}; expected integer class indices")
    arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr  # Keras-style (N, 1)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"{file}: '{key}' has shape {arr.shape} but there are {n} images; expected ({n},)")
    if n and int(arr.min()) < 0:
        raise DataError(f"{file}: '{key}' holds negative label {int(arr.min())}; expected 0..K-1")
    if n and int(arr.max()) >= MAX_CLASSES:
        raise DataError(
            f"{file}: '{key}' holds label {int(arr.max())}; at most {MAX_CLASSES:,} classes (0..{MAX_CLASSES - 1}) "
            "are supported: renumber the labels 0..K-1"
        )
    return arr.astype(np.int64)


def _classes(arrays: dict[str, np.ndarray], file: Path, labels: np.ndarray) -> list[str]:
    """Class names from a ``classes`` array, or "0".."K-1" with K covering the labels of both splits."""
    top = int(labels.max()) if len(labels) else -1
    for keys in KEYS.values():
        other = next((arrays[k] for k in keys[1] if k in arrays), None)
        if other is not None and other.dtype.kind in "iu" and other.size:
            top = max(top, min(int(other.max()), MAX_CLASSES - 1))
    if "classes" not in arrays:
        return [str(i) for i in range(top + 1)]
    names = arrays["classes"]
    if names.dtype.kind not in "US" or names.ndim != 1:
        raise DataError(f"{file}: 'classes' must be a 1-D array of strings, got {names.dtype} {names.shape}")
    if len(names) <= top:
        raise DataError(f"{file}: 'classes' names {len(names)} classes but a label is {top}")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
