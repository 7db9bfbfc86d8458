"""Tests of genmodels.data on real data: Fashion-MNIST (system package), MNIST test split, sklearn digits,
real folders of PNG/JPEG files, real .npz files and damaged copies of the real IDX files."""

from __future__ import annotations

import gzip
import io
import os
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genmodels.data import ImageDataset, cache_dir, dataset_names, describe_datasets, load_dataset
from genmodels.data.idx import parse_idx
from genmodels.errors import ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# shared/ sits beside the project checkout (../shared/data/mnist); fall back to this machine's path.
_SHARED_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data"))
SHARED_DATA = next((p for p in _SHARED_CANDIDATES if p.is_dir()), None)
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

needs_fashion = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="apt-get install dataset-fashion-mnist",
)
needs_mnist = pytest.mark.skipif(
    SHARED_DATA is None or not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="shared/data/mnist not present",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's cache and settings out of the tests; the system location stays visible."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("GENMODELS_DATA", "GENMODELS_MIRRORS"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- catalog datasets


@needs_fashion
def test_fashion_mnist_train_and_test_from_system_location() -> None:
    start = time.perf_counter()
    train = load_dataset("fashion-mnist", "train")
    elapsed = time.perf_counter() - start
    print(f"\nfashion-mnist train load: {elapsed:.3f} s")
    assert train.images.shape == (60000, 1, 28, 28)
    assert train.images.dtype == np.uint8 and train.images.flags.c_contiguous
    assert train.labels is not None and train.labels.dtype == np.int64
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert train.shape == (1, 28, 28) and len(train) == 60000 and train.num_classes == 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert str(FASHION_DIR) in train.source

    test = load_dataset("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # Not a constant array: real images with black backgrounds and bright garments.
    assert test.images.min() == 0 and test.images.max() == 255


@needs_fashion
def test_transforms_limit_resize_channels() -> None:
    ds = load_dataset("fashion-mnist", "test", limit=50, image_size=32, channels=3)
    assert ds.images.shape == (50, 3, 32, 32)
    assert np.array_equal(ds.images[:, 0], ds.images[:, 2])
    full = load_dataset("fashion-mnist", "test", limit=50)
    assert np.array_equal(ds.labels, full.labels)
    small = load_dataset("fashion-mnist", "test", limit=5, image_size=14)
    assert small.images.shape == (5, 1, 14, 14)
    # Area averaging: each output pixel is the rounded mean of a 2x2 block.
    block = full.images[:5, :, :2, :2].reshape(5, -1).mean(axis=1)
    assert np.abs(small.images[:, 0, 0, 0].astype(float) - block).max() <= 1


@needs_mnist
def test_mnist_test_split_from_data_dir() -> None:
    ds = load_dataset("mnist", "test", data_dir=SHARED_DATA)
    assert ds.images.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.labels).tolist() == MNIST_TEST_COUNTS
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.name == "mnist" and ds.split == "test"


def test_mnist_train_missing_gives_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", data_dir=tmp_path / "nothing", download=False)
    msg = str(info.value)
    assert "\n" not in msg
    needles = ("mnist", "train-images-idx3-ubyte.gz", str(tmp_path), "GENMODELS_DATA", "--data-dir")
    assert all(n in msg for n in needles), msg
    assert "download disabled" in msg


def test_offline_default_mirrors_fail_fast() -> None:
    """On a machine without DNS the real mirrors must fail at once (skipped where they resolve)."""
    import socket

    try:
        socket.getaddrinfo("ossci-datasets.s3.amazonaws.com", 443)
    except OSError:
        pass
    else:
        pytest.skip("online: this test would download MNIST")
    start = time.perf_counter()
    with pytest.raises(DataError, match="host not found"):
        load_dataset("mnist", "train")
    assert time.perf_counter() - start < 10


@needs_fashion
def test_fashion_error_mentions_apt_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import genmodels.data.catalog as catalog

    monkeypatch.setattr(catalog, "SYSTEM_ROOTS", ())
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path, download=False)


def test_unknown_name_and_bad_options() -> None:
    with pytest.raises(ConfigError, match="did you mean 'fashion-mnist'"):
        load_dataset("fashon-mnist")
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        load_dataset("digits", "validation")
    with pytest.raises(ConfigError, match="channels"):
        load_dataset("digits", channels=2)
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("digits", image_size=0)
    with pytest.raises(ConfigError, match="limit"):
        load_dataset("digits", limit=-1)
    assert dataset_names() == ["cifar10", "digits", "emoji", "fashion-mnist", "kmnist", "mnist", "twemoji"]


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_dir() == tmp_path / "xdg-cache" / "genmodels"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "genmodels"


def test_describe_datasets_locates_without_downloading(tmp_path: Path) -> None:
    report = {d["name"]: d for d in describe_datasets(tmp_path)}
    assert sorted(report) == dataset_names()
    assert report["digits"]["status"] == "found"
    assert report["cifar10"]["shape"] == (3, 32, 32) and report["cifar10"]["num_classes"] == 10
    assert report["kmnist"]["status"] == "downloadable"
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        assert report["fashion-mnist"]["status"] == "found"
        assert report["fashion-mnist"]["where"] == str(FASHION_DIR)
    assert not (tmp_path / "xdg-cache").exists()  # nothing created, nothing fetched


@needs_mnist
def test_describe_reports_partial_mnist() -> None:
    report = {d["name"]: d for d in describe_datasets(SHARED_DATA)}
    assert report["mnist"]["found_splits"] == ["test"]
    assert "train-images-idx3-ubyte.gz" in report["mnist"]["where"]


def test_import_is_light() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    code = (
        "import sys, genmodels.data; "
        "bad = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --------------------------------------------------------------------------- digits


def test_digits_geometry_split_and_range() -> None:
    from sklearn.datasets import load_digits

    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert train.images.shape == (1500, 1, 28, 28) and test.images.shape == (297, 1, 28, 28)
    assert train.classes == [str(i) for i in range(10)]
    for ds in (train, test):
        assert ds.images.dtype == np.uint8 and ds.images.max() == 255
        frame = ds.images[:, 0]
        # The 20x20 digit is centred: a 4-pixel black border on every side.
        assert frame[:, :4].max() == 0 and frame[:, -4:].max() == 0
        assert frame[:, :, :4].max() == 0 and frame[:, :, -4:].max() == 0
        assert frame[:, 4:24, 4:24].max() == 255

    # image_size=8 gives the original pixels, and the two splits partition all 1,797 digits.
    small_train = load_dataset("digits", "train", image_size=8)
    small_test = load_dataset("digits", "test", image_size=8)
    assert small_train.images.shape == (1500, 1, 8, 8)
    bunch = load_digits()
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    order = np.random.default_rng(0).permutation(1797)
    assert np.array_equal(small_train.images[:, 0], expected[order[:1500]])
    assert np.array_equal(small_test.images[:, 0], expected[order[1500:]])
    assert np.array_equal(small_test.labels, bunch.target[order[1500:]])
    assert set(order[:1500]).isdisjoint(order[1500:])

    limited = load_dataset("digits", "train", limit=10, channels=3)
    assert limited.images.shape == (10, 3, 28, 28)
    assert np.array_equal(limited.images[:, 1], train.images[:10, 0])


# --------------------------------------------------------------------------- folders of images


def _save(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def _gray(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size), value, dtype=np.uint8)


def _rgb(rgb: tuple[int, int, int], size: int = 16) -> np.ndarray:
    return np.tile(np.array(rgb, dtype=np.uint8), (size, size, 1))


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for i in range(3):
        _save(root / "cat" / f"c{i}.png", _gray(10 * i))
    for i in range(2):
        _save(root / "dog" / "nested" / f"d{i}.jpg", _rgb((200, 30, 30)))
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # OS clutter is skipped, not an error
    ds = load_dataset(f"folder:{root}")
    assert ds.classes == ["cat", "dog"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.images.shape == (5, 3, 16, 16)  # a colour JPEG makes the default 3 channels
    assert ds.images[2, :, 0, 0].tolist() == [20, 20, 20]
    assert abs(int(ds.images[3, 0, 8, 8]) - 200) <= 3  # JPEG is lossy
    assert ds.name == f"folder:{root.resolve()}"

    gray = load_dataset(f"folder:{root}", channels=1, image_size=8, limit=4)
    assert gray.images.shape == (4, 1, 8, 8)
    # Luma of (200, 30, 30) is 0.299*200 + 0.587*30 + 0.114*30 ~ 81.
    assert abs(int(gray.images[3, 0, 4, 4]) - 81) <= 4


def test_folder_grayscale_unlabelled_and_sizes(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    _save(flat / "a.png", _gray(7, 12))
    _save(flat / "b.bmp", _gray(9, 12))
    ds = load_dataset(f"folder:{flat}")
    assert ds.labels is None and ds.classes == [] and ds.num_classes == 0
    assert ds.images.shape == (2, 1, 12, 12)

    _save(flat / "c.png", _gray(1, 20))
    with pytest.raises(DataError, match="image_size"):
        load_dataset(f"folder:{flat}")
    resized = load_dataset(f"folder:{flat}", image_size=10)
    assert resized.images.shape == (3, 1, 10, 10)
    assert resized.images[2].max() == 1  # a flat image stays flat through the area filter


def test_folder_modes_alpha_and_16_bit(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[0, 0, 3] = 255  # one opaque white pixel; the rest is transparent white
    _save(root / "a_rgba.png", rgba)
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(root / "b_16bit.png")
    ds = load_dataset(f"folder:{root}")
    assert ds.images.shape == (2, 3, 4, 4)
    assert ds.images[0, :, 0, 0].tolist() == [255, 255, 255]
    assert ds.images[0, :, 1, 1].tolist() == [0, 0, 0]  # transparency composited onto black
    assert ds.images[1].min() == 255  # 16-bit white scaled, not clipped from 65535


def test_folder_train_test_layout(tmp_path: Path) -> None:
    root = tmp_path / "split"
    _save(root / "train" / "a" / "1.png", _gray(1))
    _save(root / "train" / "b" / "1.png", _gray(2))
    _save(root / "test" / "b" / "1.png", _gray(3))
    train, test = load_dataset(f"folder:{root}", "train"), load_dataset(f"folder:{root}", "test")
    assert train.classes == test.classes == ["a", "b"]
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [1]
    assert test.images.shape == (1, 1, 16, 16)

    plain = tmp_path / "plain"
    _save(plain / "x.png", _gray(1))
    with pytest.raises(DataError, match="no test split"):
        load_dataset(f"folder:{plain}", "test")


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"no image files found in {empty}"):
        load_dataset(f"folder:{empty}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'absent'}")

    junk = tmp_path / "junk"
    _save(junk / "a" / "ok.png", _gray(1))
    (junk / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.txt is not an image.*remove it"):
        load_dataset(f"folder:{junk}")

    broken = tmp_path / "broken"
    _save(broken / "ok.png", _gray(1, 64))
    _save(broken / "cut.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    (broken / "cut.png").write_bytes((broken / "cut.png").read_bytes()[:200])  # header intact, pixels cut
    with pytest.raises(DataError, match=r"cut\.png"):
        load_dataset(f"folder:{broken}")

    mixed = tmp_path / "mixed"
    _save(mixed / "loose.png", _gray(1))
    _save(mixed / "cls" / "x.png", _gray(1))
    with pytest.raises(DataError, match="mixes images"):
        load_dataset(f"folder:{mixed}")


def test_folder_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    _save(outside, _gray(5))
    root = tmp_path / "linked"
    _save(root / "a" / "real.png", _gray(1))
    (root / "a" / "inside.png").symlink_to(root / "a" / "real.png")
    ds = load_dataset(f"folder:{root}")
    assert len(ds) == 2  # a link that stays inside the folder is fine

    (root / "a" / "escape.png").symlink_to(outside)
    with pytest.raises(DataError, match=r"escape\.png is a symbolic link to .*outside"):
        load_dataset(f"folder:{root}")
    (root / "a" / "escape.png").unlink()
    (root / "b").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DataError, match="outside"):
        load_dataset(f"folder:{root}")


def _png_bomb(path: Path, width: int, height: int) -> None:
    """Write a valid 1-bit black PNG of width x height: tiny on disk, huge once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_folder_refuses_decompression_bombs(tmp_path: Path) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    huge = tmp_path / "huge"
    _png_bomb(huge / "bomb.png", 20000, 20000)  # 400 megapixels
    assert (huge / "bomb.png").stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb\.png.*megapixels"):
        load_dataset(f"folder:{huge}")
    # 81 megapixels: under Pillow's default limit, over ours (64), so only our scoped limit stops it.
    mid = tmp_path / "mid"
    _png_bomb(mid / "big.png", 9000, 9000)
    with pytest.raises(DataError, match=r"big\.png"):
        load_dataset(f"folder:{mid}")
    assert limit_before == Image.MAX_IMAGE_PIXELS  # the global limit was restored


# --------------------------------------------------------------------------- .npz arrays


def test_npz_layouts_and_dtypes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, (5, 3, 6, 6), dtype=np.uint8)
    labels = np.array([0, 1, 2, 1, 0])
    np.savez(tmp_path / "cf.npz", images=chw, labels=labels, test_images=chw[:2], test_labels=labels[:2])
    ds = load_dataset(f"npz:{tmp_path / 'cf.npz'}")
    assert np.array_equal(ds.images, chw) and ds.labels.tolist() == labels.tolist()
    assert ds.classes == ["0", "1", "2"] and ds.name == f"npz:{tmp_path / 'cf.npz'}"
    assert len(load_dataset(f"npz:{tmp_path / 'cf.npz'}", "test")) == 2

    np.savez(tmp_path / "cl.npz", x_train=chw.transpose(0, 2, 3, 1), y_train=labels[:, None])
    assert np.array_equal(load_dataset(f"npz:{tmp_path / 'cl.npz'}").images, chw)

    floats = rng.random((4, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "f.npz", images=floats, classes=np.array(["no"]))
    fds = load_dataset(f"npz:{tmp_path / 'f.npz'}", image_size=4)
    assert fds.labels is None and fds.images.shape == (4, 1, 4, 4)
    raw = load_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert np.array_equal(raw.images[:, 0], np.rint(floats.astype(np.float64) * 255).astype(np.uint8))

    rgba = np.zeros((2, 5, 5, 4), dtype=np.uint8)  # channel-last: dim 1 (5) is no channel count
    rgba[..., :3], rgba[0, ..., 3] = 200, 255
    np.savez(tmp_path / "rgba.npz", images=rgba)
    out = load_dataset(f"npz:{tmp_path / 'rgba.npz'}")
    assert out.images.shape == (2, 3, 5, 5)
    assert out.images[0].min() == 200 and out.images[1].max() == 0

    np.savez(tmp_path / "named.npz", images=chw, labels=labels, classes=np.array(["ant", "bee", "cat"]))
    assert load_dataset(f"npz:{tmp_path / 'named.npz'}").classes == ["ant", "bee", "cat"]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"pixels": np.zeros((2, 4, 4), np.uint8)}, r"no 'images' array .*keys found: pixels"),
        ({"images": np.zeros((2, 16), np.uint8)}, "expected N,H,W"),
        ({"images": np.zeros((2, 5, 5, 5), np.uint8)}, "no channel axis"),
        ({"images": np.full((2, 4, 4), 2.0)}, r"expected \[0, 1\].*divide by 255"),
        ({"images": np.full((2, 4, 4), 300)}, "expected 0..255"),
        ({"images": np.zeros((2, 4, 4), np.complex64)}, "dtype complex64"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(3, int)}, r"there are 2 images"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.array([0.0, 1.0])}, "integer class"),
        ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.array([0, -1])}, "negative label"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict, match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_npz_refuses_pickles_and_corrupt_files(tmp_path: Path) -> None:
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, images=np.array([np.zeros((2, 2)), "x"], dtype=object))
    with pytest.raises(DataError, match="pickled"):
        load_dataset(f"npz:{pickled}")

    good = tmp_path / "good.npz"
    np.savez_compressed(good, images=np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.npz: corrupt"):
        load_dataset(f"npz:{cut}")
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"not a \.npz"):
        load_dataset(f"npz:{text}")
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"single \.npy"):
        load_dataset(f"npz:{npy}")
    with pytest.raises(DataError, match="test"):
        load_dataset(f"npz:{good}", "test")


# --------------------------------------------------------------------------- damaged IDX files


def _fashion_test_copy(folder: Path, *, gz: bool = True) -> tuple[bytes, bytes]:
    """Copy Fashion-MNIST's test files into ``folder``; return the decompressed images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    payloads = []
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = (FASHION_DIR / f"{name}.gz").read_bytes()
        payload = gzip.decompress(raw)
        payloads.append(payload)
        if gz:
            (folder / f"{name}.gz").write_bytes(raw)
        else:
            (folder / name).write_bytes(payload)
    return payloads[0], payloads[1]


@needs_fashion
def test_data_dir_layouts_take_priority(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = _fashion_test_copy(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False)
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path / "tv")
    assert "FashionMNIST/raw/t10k-images-idx3-ubyte" in ds.source  # uncompressed, verified by SHA-256
    assert np.array_equal(ds.images.reshape(-1), np.frombuffer(images, np.uint8, offset=16))

    _fashion_test_copy(tmp_path / "env" / "fashion-mnist")
    monkeypatch.setenv("GENMODELS_DATA", str(tmp_path / "env"))
    assert str(tmp_path / "env") in load_dataset("fashion-mnist", "test").source


@needs_fashion
def test_flipped_payload_byte_fails_checksum(tmp_path: Path) -> None:
    images, _ = _fashion_test_copy(tmp_path / "fashion-mnist")
    flipped = bytearray(images)
    flipped[5000] ^= 0xFF  # inside the pixels: the IDX structure stays valid
    target = tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(bytes(flipped), compresslevel=1))  # valid gzip, wrong content
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is not the official.*SHA-256") as info:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b" in str(info.value)
    # Uncompressed copies are checked by the same payload hash.
    target.unlink()
    target.with_suffix("").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="SHA-256"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


@needs_fashion
def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    _fashion_test_copy(tmp_path / "fashion-mnist")
    labels = tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:2000])
    with pytest.raises(DataError, match=rf"{labels}.*corrupt gzip.*delete it"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path)


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def _kmnist_test(folder: Path, *, images: bytes | None = None, labels: bytes | None = None) -> None:
    """Write structurally valid, uncompressed KMNIST-shaped test files (no payload hash is on record)."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, 10000 * 784, dtype=np.uint8).tobytes()
    classes = (np.arange(10000) % 10).astype(np.uint8).tobytes()
    (folder / "t10k-images-idx3-ubyte").write_bytes(images or _idx(0x803, (10000, 28, 28), pixels))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels or _idx(0x801, (10000,), classes))


def test_uncompressed_idx_without_hash_is_validated_structurally(tmp_path: Path) -> None:
    _kmnist_test(tmp_path / "kmnist")
    ds = load_dataset("kmnist", "test", data_dir=tmp_path, download=False)
    assert ds.images.shape == (10000, 1, 28, 28) and ds.classes[0] == "o"

    pixels = bytes(10000 * 784)
    cases = {
        "magic": (_idx(0x801, (10000, 28, 28), pixels), None, r"not an IDX images file \(magic 0x00000801"),
        "trunc": (_idx(0x803, (10000, 28, 28), pixels[:-10]), None, "truncated"),
        "extra": (_idx(0x803, (10000, 28, 28), pixels + b"xx"), None, "trailing bytes"),
        "dims": (_idx(0x803, (10000, 32, 24), bytes(10000 * 768)), None, r"item shape \(32, 24\)"),
        "count": (None, _idx(0x801, (9999,), bytes(9999)), "holds 9999 labels, expected 10000"),
        "range": (None, _idx(0x801, (10000,), bytes([10]) * 10000), "label 10 out of range"),
        "short": (b"\0\0", None, "too short"),
    }
    for key, (images, labels, match) in cases.items():
        folder = tmp_path / key
        _kmnist_test(folder / "kmnist", images=images, labels=labels)
        with pytest.raises(DataError, match=match) as info:
            load_dataset("kmnist", "test", data_dir=folder, download=False)
        assert str(folder) in str(info.value) and "download it again" in str(info.value), key


def test_parse_idx_rejects_other_dtypes() -> None:
    with pytest.raises(DataError, match="magic 0x00000d03"):
        parse_idx(_idx(0xD03, (1, 2, 2), bytes(16)), "x.idx", ndim=3)  # float32 IDX
    arr = parse_idx(_idx(0x803, (2, 2, 3), bytes(range(12))), "x.idx", ndim=3)
    assert arr.shape == (2, 2, 3) and arr.flags.writeable


# --------------------------------------------------------------------------- CIFAR-10 (binary version)


def _cifar_records(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    images[:, 0] = (np.arange(n) % 251)[:, None, None]  # red plane varies per record
    images[:, 1, :, 5] = 77  # one green column
    records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
    return records.tobytes(), images, labels


def test_cifar_extracted_folder_and_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, images, labels = _cifar_records(10000)
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "test_batch.bin").write_bytes(data)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path, download=False)
    assert ds.images.shape == (10000, 3, 32, 32) and ds.classes[0] == "airplane"
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)
    with pytest.raises(DataError, match=r"data_batch_1\.bin"):
        load_dataset("cifar10", "train", data_dir=tmp_path, download=False)
    (folder / "test_batch.bin").write_bytes(data[:-3073])
    with pytest.raises(DataError, match=r"test_batch\.bin: 30726927 bytes, expected 30730000"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=False)

    # The tarball: members are read in memory, never extracted; a foreign tarball fails the MD5.
    tar_root = tmp_path / "tar"
    (tar_root / "cifar10").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tarball = tar_root / "cifar10" / "cifar-10-binary.tar.gz"
    tarball.write_bytes(gzip.compress(buf.getvalue(), compresslevel=1))
    with pytest.raises(DataError, match="MD5"):
        load_dataset("cifar10", "test", data_dir=tar_root, download=False)
    # The real tarball is not on this machine; check the member reader against this one's MD5.
    import hashlib

    import genmodels.data.catalog as catalog
    from genmodels.data.verify import Checksum

    spec = catalog.FileSpec(catalog.CIFAR_TAR, Checksum(md5=hashlib.md5(tarball.read_bytes()).hexdigest()))
    monkeypatch.setitem(catalog.CIFAR10.files, "test", (spec,))
    monkeypatch.setitem(catalog.CIFAR10.files, "train", (spec,))
    ds = load_dataset("cifar10", "test", data_dir=tar_root, download=False)
    assert np.array_equal(ds.images, images)
    assert isinstance(ds, ImageDataset)
