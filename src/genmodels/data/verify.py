"""Checksums for dataset files: the published MD5 of a download, or the SHA-256 of its decompressed payload.

A file is accepted when its MD5 matches the published one (the official ``.gz`` as downloaded) OR the
SHA-256 of its payload (the decompressed bytes) matches the one measured from the official files. The
second rule exists because redistributors (Debian's ``dataset-fashion-mnist``) recompress the same IDX
payload, which changes the ``.gz`` bytes but not the data. When neither is known to match, the file is
rejected.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

from genmodels.errors import DataError


@dataclass(frozen=True)
class Checksum:
    """What a dataset file is checked against.

    Args:
        md5: published MD5 of the file as distributed (the compressed ``.gz`` / ``.tar.gz``), or None.
        sha256: SHA-256 of the decompressed payload, or None when unknown.
    """

    md5: str | None = None
    sha256: str | None = None

    @property
    def known(self) -> bool:
        """Whether there is anything to check against."""
        return bool(self.md5 or self.sha256)


class ChecksumError(DataError):
    """A dataset file that is not the official one: corrupt, truncated, or another dataset's file."""


def verify_bytes(raw: bytes, checksum: Checksum, *, compressed: bool) -> tuple[bytes | None, str]:
    """Check a file's bytes against ``checksum``.

    Args:
        raw: the file as stored.
        checksum: what to verify against. ``md5`` is of the file as distributed, so it only applies when
            ``compressed``; an uncompressed copy can only be checked by ``sha256``, and when that is
            unknown nothing is checked here: the caller must then validate the structure strictly.
        compressed: whether ``raw`` is gzip data (the payload is its decompression).

    Returns:
        (payload, "") on success, or (None, what is wrong) on failure.
    """
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest() if compressed and checksum.md5 else None
    if compressed:
        try:
            payload = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            # BadGzipFile (an OSError) covers bad magic and CRC/length mismatch; EOFError a cut stream.
            return None, f"corrupt gzip data ({exc})"
    else:
        payload = raw
    if md5 is not None and md5 == checksum.md5:
        return payload, ""
    if checksum.sha256 is not None:
        sha = hashlib.sha256(payload).hexdigest()
        if sha == checksum.sha256:
            return payload, ""
        return None, f"payload SHA-256 {sha}, expected {checksum.sha256}"
    if md5 is not None:
        return None, f"MD5 {md5}, expected {checksum.md5}"
    return payload, ""


def read_payload(path: Path, checksum: Checksum, *, what: str = "") -> bytes:
    """Read ``path`` (gunzipping a ``.gz``), verify it against ``checksum`` and return the payload bytes.

    Args:
        path: the file; a name ending in ``.gz`` is decompressed.
        checksum: what to verify against (see ``verify_bytes``).
        what: a short description for the error message, e.g. "mnist train-images".

    Raises:
        DataError: the file cannot be read; ChecksumError: it is not valid gzip or fails the checksum.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    payload, problem = verify_bytes(raw, checksum, compressed=path.name.endswith(".gz"))
    if payload is None:
        raise ChecksumError(checksum_message(path, what, problem))
    return payload


def checksum_message(path: Path, what: str, detail: str, url: str | None = None) -> str:
    """One line saying a file failed its checksum, and what to do about it."""
    label = f" is not the official {what} file" if what else " failed its checksum"
    if url:
        # The downloader has already deleted the bad copy; the fix is another source.
        return (
            f"{path}{label} (downloaded from {url}): {detail}; the download was deleted: try again, "
            "or another mirror (GENMODELS_MIRRORS=URL), or put a good copy there yourself"
        )
    return (
        f"{path}{label}: {detail}; it may be corrupt, truncated or another dataset's file: "
        "delete it and download it again"
    )
