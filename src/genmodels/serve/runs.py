"""What the web app reads from a folder of run directories: safe paths, the run list, one run's
records, and the leaderboard. Read-only: nothing here writes into RUNS_DIR.

Every path that comes from a request goes through :func:`resolve_inside`, which refuses absolute
paths, ``..`` segments (after URL-decoding, so ``%2e%2e`` too) and symlinks that lead out of RUNS_DIR.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from genmodels.errors import GenmodelsError

STEP_DIR = re.compile(r"^step-(\d+)$")
SAMPLE_FILE = re.compile(r"^step-(\d+)\.png$")
# The record keys that are bookkeeping, not losses: left out of the loss curves and the run list.
NOT_LOSSES = frozenset({"step", "time", "lr", "epoch", "images_per_s"})
SKIP_DIRS = frozenset({"checkpoints", "samples", "tb", "__pycache__"})
MAX_DEPTH = 4  # how deep below RUNS_DIR runs are looked for
MAX_POINTS = 1500  # per loss curve sent to the browser


class PathRefused(GenmodelsError):
    """A request named a path outside RUNS_DIR (answered with HTTP 403)."""


class NotFound(GenmodelsError):
    """A request named a run or file that does not exist (answered with HTTP 404)."""


def resolve_inside(root: Path, rel: str) -> Path:
    """The real path of ``rel`` under ``root``, refusing anything that would leave it.

    Args:
        root: the resolved RUNS_DIR.
        rel: a relative POSIX path, already URL-decoded once ("." names root itself).

    Returns:
        the resolved absolute path (it may not exist).

    Raises:
        PathRefused: for an absolute path, a ``..`` segment, a NUL byte, a backslash or a symlink leading out.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        raise PathRefused(f"path {rel!r} is not a relative path inside RUNS_DIR")
    p = PurePosixPath(rel)
    if p.is_absolute() or rel.startswith("~") or ".." in p.parts:
        raise PathRefused(f"path {rel!r} leaves RUNS_DIR; use a path relative to it without '..'")
    full = (root / p).resolve()  # follows symlinks: one pointing outside is caught below
    if not full.is_relative_to(root):
        raise PathRefused(f"path {rel!r} resolves outside RUNS_DIR (a symlink?); it is not served")
    return full


def run_dir(root: Path, run_id: str) -> Path:
    """The directory of run ``run_id`` (its path relative to RUNS_DIR), checked to be a run."""
    path = resolve_inside(root, run_id)
    if not (path / "config.yaml").is_file():
        raise NotFound(f"no run {run_id!r} under RUNS_DIR; pick one from the run list")
    return path


def run_id(root: Path, path: Path) -> str:
    """A run's id: its directory relative to RUNS_DIR, POSIX style ("." for RUNS_DIR itself)."""
    return path.relative_to(root).as_posix() or "."


def find_runs(root: Path) -> list[Path]:
    """Every run directory (one holding config.yaml) under root, without following symlinks."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "config.yaml" in filenames:
            found.append(here)
            dirnames.clear()  # a run's own folders hold no runs
            continue
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".") and depth < MAX_DEPTH)
    return sorted(found)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing or unreadable (a run being written)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def checkpoint_steps(path: Path) -> list[int]:
    """The steps of a run's complete checkpoints (those with a state.json), ascending."""
    steps = []
    for d in (path / "checkpoints").glob("step-*"):
        m = STEP_DIR.match(d.name)
        if m and (d / "state.json").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def latest_step(path: Path) -> int | None:
    """The step the run's ``checkpoints/latest`` pointer names, or None before its first checkpoint."""
    try:
        name = (path / "checkpoints" / "latest").read_text().strip()
    except OSError:
        return None
    m = STEP_DIR.match(name)
    return int(m.group(1)) if m else None


def eval_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an eval.json: FID, KID, precision/recall, the tightest NLL bound, and the
    reconstruction error of models that reconstruct."""
    out: dict[str, Any] = {k: report[k] for k in ("fid", "precision", "recall", "coverage") if _finite(report.get(k))}
    if _finite(report.get("reconstruction_mse")):
        out["recon_mse"] = report["reconstruction_mse"]
    kid = report.get("kid")
    if isinstance(kid, dict) and _finite(kid.get("mean")):
        out["kid"] = kid["mean"]
    lik = report.get("likelihood")
    if isinstance(lik, dict) and isinstance(lik.get("bpd"), dict) and lik["bpd"]:
        best = min(lik["bpd"], key=lambda k: lik["bpd"][k])
        out["nll_bpd"] = lik["bpd"][best]
        out["nll_bound"] = best
    return out


def run_summary(root: Path, path: Path) -> dict[str, Any]:
    """One row of the run list: what was trained on what, for how long, and its last and eval metrics."""
    meta = read_json(path / "run.json")
    ds = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    last = meta.get("last_metrics") if isinstance(meta.get("last_metrics"), dict) else {}
    report = read_json(path / "eval.json")
    return {
        "id": run_id(root, path),
        "model_name": meta.get("model_name") or _config_model(path),
        "family": meta.get("family"),
        "dataset": ds.get("name"),
        "steps": meta.get("steps"),
        "wall_time_s": meta.get("wall_time_s"),
        "status": meta.get("status", "unknown"),
        "updated": meta.get("updated") or meta.get("created"),
        "metrics": {k: v for k, v in last.items() if k not in NOT_LOSSES and _finite(v)},
        "eval": eval_summary(report) if report else None,
        "checkpoint": latest_step(path),
    }


def _config_model(path: Path) -> str | None:
    import yaml

    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return cfg.get("model_name") if isinstance(cfg, dict) else None


def metric_series(path: Path) -> dict[str, list[list[float]]]:
    """Loss curves from metrics.jsonl: {name: [[step, value], ...]}, thinned to MAX_POINTS each."""
    from genmodels.training.logger import read_metrics

    series: dict[str, list[list[float]]] = {}
    for rec in read_metrics(path / "metrics.jsonl"):
        step = rec.get("step")
        if not _finite(step):
            continue
        for k, v in rec.items():
            if k not in NOT_LOSSES and _finite(v):
                series.setdefault(k, []).append([step, v])
    for k, pts in series.items():
        if len(pts) > MAX_POINTS:
            stride = math.ceil(len(pts) / MAX_POINTS)
            series[k] = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return series


def sample_grids(root: Path, path: Path, steps: int | None) -> list[dict[str, Any]]:
    """The grids saved during training, in step order: [{step, label, file}], ``file`` relative to RUNS_DIR."""
    grids = []
    for f in (path / "samples").glob("*.png"):
        m = SAMPLE_FILE.match(f.name)
        if m:
            grids.append({"step": int(m.group(1)), "label": f"step {int(m.group(1))}"})
        elif f.name == "final.png":
            grids.append({"step": steps if steps is not None else math.inf, "label": "final"})
        else:
            continue
        grids[-1]["file"] = run_id(root, f)
    grids.sort(key=lambda g: (g["step"], g["label"] == "final"))
    for g in grids:
        if g["step"] == math.inf:
            g["step"] = None
    return grids


def figures(root: Path, path: Path) -> list[dict[str, str]]:
    """The PNG figures at the top of a run (loss.png, reconstructions.png, manifold.png, ...)."""
    return [{"name": f.stem, "file": run_id(root, f)} for f in sorted(path.glob("*.png")) if not f.is_symlink()]


def _by_fid(report: dict[str, Any]) -> tuple[int, float]:
    """Sort key: runs with a FID first, lowest first (lower is better); the rest after."""
    fid = report.get("fid")
    return (0, float(fid)) if _finite(fid) else (1, 0.0)


def leaderboard(root: Path) -> dict[str, Any]:
    """Every eval.json under RUNS_DIR as leaderboard tables, one per dataset, sorted by FID.

    Returns:
        ``{"columns": [...], "datasets": {name: [{"id": run id, "cells": {column: text}}, ...]}}``.
    """
    from genmodels.eval import leaderboard as lb

    by_ds: dict[str, list[dict[str, Any]]] = {}
    for rep in lb.find_reports(root):
        where = Path(rep["_dir"]).resolve()
        if not where.is_relative_to(root) or not (where / "eval.json").resolve().is_relative_to(root):
            continue  # an eval.json reached through a symlink out of RUNS_DIR
        by_ds.setdefault(str(rep["dataset"]), []).append(rep)
    tables = {}
    for ds in sorted(by_ds):
        reps = sorted(by_ds[ds], key=_by_fid)
        tables[ds] = [
            {
                "id": run_id(root, Path(r["_dir"]).resolve()) if (Path(r["_dir"]) / "config.yaml").is_file() else None,
                "cells": lb.row(r, root),
            }
            for r in reps
        ]
    return {"columns": list(lb.COLUMNS), "datasets": tables}
