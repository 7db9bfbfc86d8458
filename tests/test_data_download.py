"""Download tests against a real HTTP server on 127.0.0.1 serving the real Fashion-MNIST / MNIST files."""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from genmodels.data import load_dataset
from genmodels.data.download import DownloadError, download
from genmodels.data.verify import Checksum, ChecksumError
from genmodels.errors import DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_SHARED_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data"))
MNIST_DIR = next((p / "mnist" for p in _SHARED_CANDIDATES if (p / "mnist").is_dir()), None)
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
LABELS_SHA = "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"

pytestmark = pytest.mark.skipif(
    not (FASHION_DIR / TEST_FILES[0]).is_file(), reason="apt-get install dataset-fashion-mnist"
)


@dataclass
class Behaviour:
    """What the test server serves and how it misbehaves."""

    files: dict[str, bytes] = field(default_factory=dict)
    drop_first: set[str] = field(default_factory=set)  # send half the body, then hang up (once)
    ignore_range: bool = False  # answer every request with 200 and the whole file
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


def _handler(behaviour: Behaviour) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            rng = self.headers.get("Range")
            behaviour.requests.append((self.path, rng))
            data = behaviour.files.get(name)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if rng and not behaviour.ignore_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if name in behaviour.drop_first:
                behaviour.drop_first.discard(name)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    """A threaded HTTP server on 127.0.0.1 with Range support; yields (base URL, behaviour)."""
    behaviour = Behaviour()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data/", behaviour
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user cache, no configured mirrors, no proxy between us and 127.0.0.1."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("GENMODELS_DATA", "GENMODELS_MIRRORS", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # The files are also in the system location; hide it so the loader must download.
    import genmodels.data.catalog as catalog

    monkeypatch.setattr(catalog, "SYSTEM_ROOTS", ())


def _fashion(name: str) -> bytes:
    return (FASHION_DIR / name).read_bytes()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_clean_download_then_load(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    behaviour.files = {name: _fashion(name) for name in TEST_FILES}
    data_dir = tmp_path / "data"
    ds = load_dataset("fashion-mnist", "test", data_dir=data_dir, mirrors=[url])
    assert ds.images.shape == (10000, 1, 28, 28)
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    saved = sorted(p.name for p in (data_dir / "fashion-mnist").iterdir())
    assert saved == sorted(TEST_FILES)  # verified, renamed, no .part left
    assert len(behaviour.requests) == 2
    # A second load finds the files and does not touch the network.
    load_dataset("fashion-mnist", "test", data_dir=data_dir, mirrors=[url])
    assert len(behaviour.requests) == 2


@pytest.mark.skipif(MNIST_DIR is None, reason="shared/data/mnist not present")
def test_download_verified_by_published_md5(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    behaviour.files = {name: (MNIST_DIR / name).read_bytes() for name in TEST_FILES}  # type: ignore[operator]
    ds = load_dataset("mnist", "test", data_dir=tmp_path, mirrors=[url])
    assert len(ds) == 10000 and (tmp_path / "mnist" / TEST_FILES[0]).is_file()


def test_env_mirrors_are_tried_first(
    tmp_path: Path, server: tuple[str, Behaviour], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, behaviour = server
    behaviour.files = {name: _fashion(name) for name in TEST_FILES}
    missing = f"http://127.0.0.1:{_closed_port()}/"
    monkeypatch.setenv("GENMODELS_MIRRORS", f"{missing},{url}")
    ds = load_dataset("fashion-mnist", "test")
    assert len(ds) == 10000
    assert (tmp_path / "xdg-cache" / "genmodels" / "fashion-mnist" / TEST_FILES[1]).is_file()


def test_corrupted_download_is_rejected_and_removed(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    payload = bytearray(gzip.decompress(_fashion(TEST_FILES[1])))
    payload[100] = (payload[100] + 1) % 10  # still a valid label, still valid gzip: only the hash can tell
    behaviour.files = {TEST_FILES[0]: _fashion(TEST_FILES[0]), TEST_FILES[1]: gzip.compress(bytes(payload))}
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", "test", data_dir=data_dir, mirrors=[url])
    msg = str(info.value)
    assert TEST_FILES[1] in msg and url + TEST_FILES[1] in msg and LABELS_SHA in msg and "\n" not in msg
    leftovers = [p.name for p in (data_dir / "fashion-mnist").iterdir()]
    assert TEST_FILES[1] not in leftovers and TEST_FILES[1] + ".part" not in leftovers


def test_dropped_connection_resumes_with_range(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    behaviour.files = {name: _fashion(name) for name in TEST_FILES}
    behaviour.drop_first = {TEST_FILES[0]}
    ds = load_dataset("fashion-mnist", "test", data_dir=tmp_path, mirrors=[url])
    assert len(ds) == 10000
    image_requests = [rng for path, rng in behaviour.requests if path.endswith(TEST_FILES[0])]
    half = len(behaviour.files[TEST_FILES[0]]) // 2
    assert image_requests == [None, f"bytes={half}-"]
    assert (tmp_path / "fashion-mnist" / TEST_FILES[0]).read_bytes() == behaviour.files[TEST_FILES[0]]


def test_server_ignoring_range_restarts_the_file(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    name = TEST_FILES[0]
    behaviour.files = {name: _fashion(name)}
    behaviour.drop_first = {name}
    behaviour.ignore_range = True
    dest = download([url + name], tmp_path / name, Checksum(sha256=None, md5=None), backoff=0.01)
    assert dest.read_bytes() == behaviour.files[name]
    assert [rng for _, rng in behaviour.requests][1].startswith("bytes=")


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    name = TEST_FILES[1]
    data = _fashion(name)
    behaviour.files = {name: data}
    (tmp_path / f"{name}.part").write_bytes(data[:1000])
    checksum = Checksum(sha256=LABELS_SHA)
    download([url + name], tmp_path / name, checksum)
    assert behaviour.requests == [("/data/" + name, "bytes=1000-")]
    assert (tmp_path / name).read_bytes() == data

    # A stale partial (another file's bytes) fails verification once resumed: it is redone from scratch.
    behaviour.requests.clear()
    (tmp_path / name).unlink()
    (tmp_path / f"{name}.part").write_bytes(b"x" * 1000)
    download([url + name], tmp_path / name, checksum)
    assert [rng for _, rng in behaviour.requests] == ["bytes=1000-", None]
    assert (tmp_path / name).read_bytes() == data


def test_http_errors_fall_through_to_the_next_mirror(tmp_path: Path, server: tuple[str, Behaviour]) -> None:
    url, behaviour = server
    name = TEST_FILES[1]
    behaviour.files = {name: _fashion(name)}
    with pytest.raises(DownloadError, match="HTTP 404"):
        download([url + "nothing-here.gz"], tmp_path / "x.gz", Checksum())
    download([url + "nothing-here.gz", url + name], tmp_path / name, Checksum(sha256=LABELS_SHA))
    assert (tmp_path / name).is_file()
    with pytest.raises(ChecksumError, match="expected 00"):
        download([url + name], tmp_path / "again" / name, Checksum(sha256="00" * 32))
    assert not (tmp_path / "again" / f"{name}.part").exists()


def test_unreachable_server_gives_one_line_offline_error_fast(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}/"
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "data", mirrors=[dead])
    elapsed = time.perf_counter() - start
    msg = str(info.value)
    assert "\n" not in msg and "connection refused" in msg
    needles = ("fashion-mnist", TEST_FILES[0], str(tmp_path / "data"), "GENMODELS_DATA", "apt-get")
    assert all(n in msg for n in needles), msg
    assert elapsed < 5, f"offline error took {elapsed:.1f} s"
    assert not (tmp_path / "data").exists()  # nothing created when nothing was fetched
