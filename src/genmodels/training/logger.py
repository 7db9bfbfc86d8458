"""Training records: ``metrics.jsonl`` (one JSON object per logging step) and TensorBoard events."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends metric records to ``RUN/metrics.jsonl`` and mirrors them to TensorBoard (``RUN/tb``)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        # Kept open for the run and line-buffered, so a killed run keeps every finished record.
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115
        self._tb = None
        if tensorboard:
            # TensorBoard's writer imports all of TensorFlow when it is installed (seconds, and log noise on
            # stderr) unless the marker module `tensorboard.compat.notf` exists; then it uses its own stub.
            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written by a run killed after its last checkpoint)."""
        self._file.close()
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def log(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record["step"]
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def image(self, tag: str, grid_hwc: Any, step: int) -> None:
        if self._tb is not None:
            self._tb.add_image(tag, grid_hwc, step, dataformats="HWC")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every readable record of a metrics.jsonl; a torn last line (from a kill) is skipped."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
