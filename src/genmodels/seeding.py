"""Seeds derived from integers, the same on every run and platform."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
