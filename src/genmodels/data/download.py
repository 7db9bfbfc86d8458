"""Resumable, verified downloads with urllib (no extra dependency).

A file is fetched into ``<dest>.part``; an interrupted transfer is resumed with an HTTP Range request
(a server that ignores Range and answers 200 makes us start over), connection errors and drops are
retried with exponential backoff, and the result is verified against its checksum before it is fsynced
and atomically renamed to ``dest``. A file that fails verification is deleted and reported: it is never
used. Hosts that do not resolve or refuse the connection are not retried, so an offline machine fails
in well under a second.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from genmodels.data.verify import Checksum, ChecksumError, checksum_message, verify_bytes
from genmodels.errors import DataError

RETRIES = 3  # extra attempts per mirror after a dropped or timed-out transfer
TIMEOUT = 10.0  # seconds, per connect and per read
BACKOFF = 0.5  # seconds before the first retry; doubles each time
CHUNK = 1 << 20
USER_AGENT = "genmodels-data/0.1 (+urllib)"


class DownloadError(DataError):
    """No mirror could deliver the file (network errors, HTTP errors); nothing usable was written."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"could not download {filename}: {reason}")
        self.reason = reason  # per-mirror failures, e.g. "host: connection refused; host2: HTTP 404"


class _Retry(Exception):
    """A transient failure: try the same URL again after a pause (the .part file is kept)."""


class _RangeRejected(_Retry):
    """HTTP 416: the server cannot serve the rest of our partial file (stale or already complete)."""


class _GiveUp(Exception):
    """A failure retrying will not fix: move on to the next mirror."""


def host_of(url: str) -> str:
    """The host of ``url`` (or the URL itself when it has none), for short messages."""
    return urllib.parse.urlsplit(url).netloc or url


def download(
    urls: Sequence[str],
    dest: Path,
    checksum: Checksum,
    *,
    what: str = "",
    retries: int = RETRIES,
    timeout: float = TIMEOUT,
    backoff: float = BACKOFF,
) -> Path:
    """Download the first mirror that delivers a verified copy of a file to ``dest``.

    Args:
        urls: full URLs of the same file, tried in order.
        dest: final path; the transfer goes to ``dest.part`` first and is renamed only once verified.
        checksum: the published MD5 of the file and/or the SHA-256 of its decompressed payload
            (``dest`` ending in ``.gz`` is gunzipped for the SHA-256).
        what: description for messages, e.g. "fashion-mnist t10k-labels".
        retries: extra attempts per mirror after a transient failure.
        timeout: seconds per connect / read.
        backoff: seconds before the first retry, doubled each time.

    Returns:
        ``dest``.

    Raises:
        ChecksumError: a mirror delivered a file that failed verification (and none delivered a good one).
        DownloadError: no mirror could be reached or delivered the file.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    bad: str | None = None
    for url in urls:
        # A .part left by an earlier run may belong to a different file version: if a resumed transfer
        # fails verification, try this mirror once more from scratch before blaming it.
        fresh_tries = 1 if part.exists() else 0
        while True:
            try:
                _fetch(url, part, timeout=timeout, retries=retries, backoff=backoff)
            except _GiveUp as exc:
                failures.append(f"{host_of(url)}: {exc}")
                break
            except OSError as exc:
                # Network errors are classified inside _fetch; what escapes is the local disk failing.
                raise DataError(
                    f"cannot write the download to {part} ({exc.strerror or exc}); pass data_dir=DIR "
                    "(--data-dir DIR) or set GENMODELS_DATA=DIR to a writable folder"
                ) from exc
            problem = _verify_part(part, dest, checksum)
            if not problem:
                _commit(part, dest)
                return dest
            part.unlink(missing_ok=True)
            if fresh_tries:
                fresh_tries -= 1
                continue
            bad = bad or checksum_message(dest, what, problem, url)
            failures.append(f"{host_of(url)}: checksum mismatch")
            break
    if bad:
        raise ChecksumError(bad)
    raise DownloadError(dest.name, "; ".join(failures or ["no mirror given"]))


def _verify_part(part: Path, dest: Path, checksum: Checksum) -> str:
    """Verify the finished ``.part`` file; return what is wrong, or "" when it is good."""
    with open(part, "rb") as f:
        raw = f.read()
    payload, problem = verify_bytes(raw, checksum, compressed=dest.name.endswith(".gz"))
    return "" if payload is not None else problem


def _commit(part: Path, dest: Path) -> None:
    """Make the verified download durable, then atomically give it its final name."""
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    # fsync the directory so the rename itself survives a crash (not possible on every platform).
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fetch(url: str, part: Path, *, timeout: float, retries: int, backoff: float) -> None:
    """Bring ``part`` to the complete content of ``url``, resuming and retrying transient failures."""
    attempt = 0
    while True:
        try:
            _fetch_once(url, part, timeout=timeout)
            return
        except _Retry as exc:
            attempt += 1
            if attempt > retries:
                raise _GiveUp(f"{exc} (gave up after {retries} retries)") from exc
            time.sleep(backoff * 2 ** (attempt - 1))


def _open(url: str, have: int, timeout: float) -> http.client.HTTPResponse:
    """Send the GET (with a Range header when resuming) and classify connection failures."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            raise _RangeRejected("server refused to resume (HTTP 416)") from exc
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from exc
        raise _GiveUp(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        # No DNS answer or nobody listening: retrying only delays the offline message.
        if isinstance(reason, socket.gaierror):
            raise _GiveUp("host not found (offline?)") from exc
        if isinstance(reason, ConnectionRefusedError):
            raise _GiveUp("connection refused") from exc
        raise _Retry(f"connection failed ({reason})") from exc
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
        raise _Retry(f"connection failed ({exc})") from exc


def _fetch_once(url: str, part: Path, *, timeout: float) -> None:
    """One request: append to (206) or restart (200) ``part``; raise _Retry if the transfer is cut short."""
    have = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, have, timeout)
    except _RangeRejected:
        part.unlink(missing_ok=True)
        raise
    with response:
        status = getattr(response, "status", None) or 200
        total = _content_length(response)
        if status == 206 and have:
            start, total = _content_range(response)
            if start != have:
                # Unexpected range: our partial cannot be trusted to line up; start over.
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:
            # 200: the server ignored Range (or there was nothing to resume); restart the file.
            have, mode = 0, "wb"
        # Created only once a server answers, so an offline machine gets the offline message.
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as f:
            got = _copy(response, f, have, total, url)
    size = have + got
    if total is not None and size < total:
        raise _Retry(f"connection dropped after {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink(missing_ok=True)
        raise _Retry(f"received {size} bytes, more than the {total} announced")


def _copy(response: http.client.HTTPResponse, f: BinaryIO, have: int, total: int | None, url: str) -> int:
    """Stream the body into ``f``; return the bytes written (kept on disk even when the read fails)."""
    bar = None
    if sys.stderr.isatty():
        from tqdm import tqdm  # only for interactive use

        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1])
    got = 0
    try:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as exc:
                raise _Retry(f"connection dropped after {have + got} bytes ({exc})") from exc
            if not chunk:
                return got
            f.write(chunk)
            got += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _content_range(response: http.client.HTTPResponse) -> tuple[int, int | None]:
    """Parse ``Content-Range: bytes START-END/TOTAL`` into (START, TOTAL or None)."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, _, rest = value.partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.split("-")[0])
        if unit != "bytes":
            raise ValueError(unit)
    except ValueError as exc:
        raise _Retry(f"unreadable Content-Range {value!r}") from exc
    return start, int(total) if total.isdigit() else None
