"""An older commit's ``src`` beside the working tree, for benchmarks that run both side by side."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def export(rev: str, into: Path) -> Path:
    """The ``src`` tree of ``rev`` (``git archive``), unpacked under ``into``; returns that ``src``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "old.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"
