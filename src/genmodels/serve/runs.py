"""What the web app reads from a folder of run directories: safe paths, the run list, one run's
records, and the leaderboard. Read-only: nothing here writes into RUNS_DIR.

Every path that comes from a request goes through :func:`resolve_inside`, which refuses absolute
paths, ``..`` segments (after URL-decoding, so ``%2e%2e`` too) and symlinks that lead out of RUNS_DIR.
Every file is read through ``genmodels.safeio``: confined to the run directory it belongs to (so a
``config.yaml`` symlinked to ``~/.ssh/id_ed25519`` is refused, not shown), a regular file (a FIFO or
``/dev/zero`` is refused without blocking), size-limited, UTF-8 for text. A run whose files are
refused or damaged is still listed, with ``damaged`` saying why; the other runs are unaffected.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from genmodels import safeio
from genmodels.checkpoints import checkpoint_dirs, is_complete, parse_step_name
from genmodels.errors import GenmodelsError

# The record keys that are bookkeeping, not losses: left out of the loss curves and the run list.
NOT_LOSSES = frozenset({"step", "time", "lr", "epoch", "images_per_s"})
SKIP_DIRS = frozenset({"checkpoints", "samples", "tb", "__pycache__"})
MAX_DEPTH = 4  # how deep below RUNS_DIR runs are looked for
MAX_POINTS = 1500  # per loss curve sent to the browser
# metrics.jsonl grows with the run: only its tail is read (about 100k records), so a long or hostile
# log costs at most this much memory and a second of parsing; the curves then start where the tail does.
MAX_METRICS_BYTES = 16 << 20
MAX_FILE_BYTES = 64 << 20  # the largest file /files/ serves (sample grids and figures are far smaller)
# A record is plain data a person could read: JSON or YAML nested deeper, or larger once YAML's aliases
# are expanded (a "billion laughs" config.yaml), is damaged, not something to send to a browser.
MAX_NESTING = 64
MAX_NODES = 200_000
MAX_PATH = 4096  # bytes in a request's path (Linux PATH_MAX); one name at most NAME_MAX bytes
NAME_MAX = 255


class PathRefused(GenmodelsError):
    """A request named a path outside RUNS_DIR (answered with HTTP 403)."""


class NotFound(GenmodelsError):
    """A request named a run or file that does not exist (answered with HTTP 404)."""


def quote_path(text: str) -> str:
    """A request's path for an error message, cut short: a 5,000-character path is not echoed back."""
    return repr(text if len(text) <= 80 else text[:80] + "...")


def resolve_inside(root: Path, rel: str) -> Path:
    """The real path of ``rel`` under ``root``, refusing anything that would leave it.

    Args:
        root: the resolved RUNS_DIR.
        rel: a relative POSIX path, already URL-decoded once ("." names root itself).

    Returns:
        the resolved absolute path (it may not exist).

    Raises:
        PathRefused: for an absolute path, a ``..`` segment, a NUL byte, a backslash or a symlink leading out.
        NotFound: for a path too long to name any file.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        raise PathRefused(f"path {quote_path(rel)} is not a relative path inside RUNS_DIR")
    p = PurePosixPath(rel)
    if p.is_absolute() or rel.startswith("~") or ".." in p.parts:
        raise PathRefused(f"path {quote_path(rel)} leaves RUNS_DIR; use a path relative to it without '..'")
    if len(rel.encode()) > MAX_PATH or any(len(part.encode()) > NAME_MAX for part in p.parts):
        raise NotFound(f"no run or file {quote_path(rel)} under RUNS_DIR: the path is longer than any file name")
    try:
        full = (root / p).resolve()  # follows symlinks: one pointing outside is caught below
    except (OSError, RuntimeError):  # a symlink loop, or a link whose target is too long
        raise NotFound(f"no file {quote_path(rel)} under RUNS_DIR (a symlink loop?)") from None
    if not full.is_relative_to(root):
        raise PathRefused(f"path {quote_path(rel)} resolves outside RUNS_DIR (a symlink?); it is not served")
    return full


def run_dir(root: Path, run_id: str) -> Path:
    """The directory of run ``run_id`` (its path relative to RUNS_DIR), checked to be a run."""
    path = resolve_inside(root, run_id)
    if not os.path.lexists(path / "config.yaml"):
        raise NotFound(f"no run {quote_path(run_id)} under RUNS_DIR; pick one from the run list")
    return path


def owning_run(root: Path, rel: str) -> Path:
    """The run directory a file under RUNS_DIR belongs to (the nearest folder above it holding a
    config.yaml), or RUNS_DIR itself for a file outside every run: what the file is confined to."""
    parts = PurePosixPath(rel).parts
    for i in range(len(parts) - 1, 0, -1):
        folder = root.joinpath(*parts[:i])
        if os.path.lexists(folder / "config.yaml"):
            return folder
    return root


def run_id(root: Path, path: Path) -> str:
    """A run's id: its directory relative to RUNS_DIR, POSIX style ("." for RUNS_DIR itself)."""
    return path.relative_to(root).as_posix() or "."


def _walk(root: Path) -> list[tuple[Path, list[str]]]:
    """(folder, its file names) for every folder under root down to MAX_DEPTH, without following
    symlinks or entering a run's own sub-folders (a run's folders hold no runs)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        out.append((here, filenames))
        if "config.yaml" in filenames:
            dirnames.clear()
            continue
        depth = len(here.relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".") and depth < MAX_DEPTH)
    return out


def find_runs(root: Path) -> list[Path]:
    """Every run directory (one holding config.yaml) under root, without following symlinks."""
    return sorted(here for here, files in _walk(root) if "config.yaml" in files)


def _short(message: str, root: Path) -> str:
    """An error message with RUNS_DIR's absolute path left out (the run list names runs relative to it)."""
    return message.replace(f"{root}{os.sep}", "")


def _check_plain(value: Any, what: str) -> Any:
    """``value`` itself, checked to be nested at most MAX_NESTING deep and MAX_NODES large.

    Raises:
        safeio.FileRefused: it is not.
    """
    stack, nodes = [(value, 0)], 0  # containers only: scalars are counted by their parent's length
    while stack:
        v, depth = stack.pop()
        items = list(v.values()) if isinstance(v, dict) else v
        nodes += len(items)
        if depth >= MAX_NESTING or nodes > MAX_NODES:
            raise safeio.FileRefused(f"{what} is nested too deeply or too large to be one genmodels wrote")
        stack.extend((x, depth + 1) for x in items if isinstance(x, dict | list))
    return value


def read_record(run: Path, name: str, what: str) -> dict[str, Any]:
    """A run's JSON record (``run.json``, ``eval.json``) as a dict; {} when it is missing.

    Raises:
        safeio.FileRefused: the file leads outside the run, is not a regular file, is too large, or is
            not a JSON object.
    """
    path = run / name
    try:
        data = safeio.read_json(path, run, what=what)
    except FileNotFoundError:
        return {}
    except RecursionError:
        raise safeio.FileRefused(f"{what} {path} is nested too deeply; the file is damaged") from None
    if not isinstance(data, dict):
        raise safeio.FileRefused(f"{what} {path} is not a JSON object; the file is damaged")
    return _check_plain(data, f"{what} {path}")


def read_config_text(run: Path) -> str:
    """A run's ``config.yaml`` as text.

    Raises:
        safeio.FileRefused: it is missing, leads outside the run, or is not a regular UTF-8 file of at
            most ``safeio.SMALL_FILE`` bytes.
    """
    try:
        return safeio.read_text(run / "config.yaml", run, what="run config")
    except FileNotFoundError:
        raise safeio.FileRefused(f"run config {run / 'config.yaml'} is missing (a broken symlink?)") from None


def parse_config(text: str, run: Path) -> dict[str, Any]:
    """A run's config.yaml text as a dict (any mapping: the app shows it, ``load_run`` checks it).

    Raises:
        safeio.FileRefused: it is not a YAML mapping of plain size.
    """
    path = run / "config.yaml"
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader  # libyaml parses ~10x faster
    try:
        cfg = yaml.load(text, Loader=loader)
    except (yaml.YAMLError, RecursionError, ValueError):
        raise safeio.FileRefused(f"run config {path} is not valid YAML; the file is damaged") from None
    if not isinstance(cfg, dict):
        raise safeio.FileRefused(f"run config {path} is not a YAML mapping; the file is damaged")
    return _check_plain(cfg, f"run config {path}")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def checkpoint_steps(path: Path) -> list[int]:
    """The steps of a run's complete checkpoints (those with a state.json and its files), ascending;
    a step saved twice (``step-00000040`` and ``step-00000040.1``) is listed once."""
    return sorted({parse_step_name(d.name)[0] for d in checkpoint_dirs(path / "checkpoints") if is_complete(d)})


def latest_step(path: Path) -> int | None:
    """The step of the checkpoint the run's ``checkpoints/latest`` pointer names, or (without a
    pointer) of its newest complete checkpoint; None before its first checkpoint.

    Raises:
        safeio.FileRefused: the pointer is refused (a symlink out, a FIFO, too large, not UTF-8) or
            names no checkpoint directory.
    """
    ckpt_root = path / "checkpoints"
    pointer = ckpt_root / "latest"
    if not os.path.lexists(pointer):
        steps = checkpoint_steps(path)
        return steps[-1] if steps else None
    try:
        name = safeio.read_text(pointer, ckpt_root, limit=256, what="checkpoint pointer").strip()
    except FileNotFoundError:  # a dangling symlink, or removed since
        return None
    key = parse_step_name(name)
    if key is None:
        raise safeio.FileRefused(f"checkpoint pointer {pointer} names no checkpoint directory; the run is damaged")
    return key[0]


def eval_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an eval.json: FID, KID, precision/recall, the tightest NLL bound, and the
    reconstruction error of models that reconstruct (only the finite numbers: the file may be damaged)."""
    out: dict[str, Any] = {k: report[k] for k in ("fid", "precision", "recall", "coverage") if _finite(report.get(k))}
    if _finite(report.get("reconstruction_mse")):
        out["recon_mse"] = report["reconstruction_mse"]
    kid = report.get("kid")
    if isinstance(kid, dict) and _finite(kid.get("mean")):
        out["kid"] = kid["mean"]
    lik = report.get("likelihood")
    bpd = lik.get("bpd") if isinstance(lik, dict) else None
    bounds = {k: v for k, v in bpd.items() if _finite(v)} if isinstance(bpd, dict) else {}
    if bounds:
        best = min(bounds, key=lambda k: bounds[k])
        out["nll_bpd"] = bounds[best]
        out["nll_bound"] = best
    return out


class RunRecords:
    """What one run directory holds, read once; every file refused or damaged adds a line to ``problems``.

    config.yaml is read (so a refused one is flagged) but parsed only when asked for (``config``): the
    run list needs it only for a run whose run.json lacks the model name, and parsing it for every run
    made the list several times slower.

    Attributes:
        meta: run.json ({} when missing or damaged).
        report: eval.json ({} when missing or damaged).
        latest: the step ``checkpoints/latest`` names (None when there is none or it is damaged).
        problems: one line per damaged file, paths relative to RUNS_DIR.
    """

    def __init__(self, root: Path, path: Path) -> None:
        self.root, self.path = root, path
        self.problems: list[str] = []
        self.meta: dict[str, Any] = self._read(read_record, path, "run.json", "run record") or {}
        self.report: dict[str, Any] = self._read(read_record, path, "eval.json", "evaluation") or {}
        self._config_text: str | None = self._read(read_config_text, path)
        self.latest: int | None = self._read(latest_step, path)

    @functools.cached_property
    def config(self) -> dict[str, Any] | None:
        """config.yaml as a dict (None when refused or damaged)."""
        return self._read(parse_config, self._config_text, self.path) if self._config_text is not None else None

    def _read(self, reader: Any, *args: Any) -> Any:
        try:
            return reader(*args)
        except (safeio.FileRefused, OSError) as e:
            self.problems.append(_short(str(e), self.root))
            return None

    @property
    def damaged(self) -> str | None:
        """Why the run is damaged ("; "-joined), or None."""
        return "; ".join(self.problems) or None

    def summary(self) -> dict[str, Any]:
        """One row of the run list: what was trained on what, for how long, its last and eval metrics,
        and ``damaged`` (None, or why the run cannot be trusted)."""
        meta, report = self.meta, self.report
        ds = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
        last = meta.get("last_metrics") if isinstance(meta.get("last_metrics"), dict) else {}
        model = meta.get("model_name") or (self.config or {}).get("model_name")
        return {
            "id": run_id(self.root, self.path),
            "model_name": model if isinstance(model, str) else None,
            "family": meta.get("family"),
            "dataset": ds.get("name"),
            "steps": meta.get("steps"),
            "wall_time_s": meta.get("wall_time_s"),
            "status": meta.get("status", "unknown"),
            "updated": meta.get("updated") or meta.get("created"),
            "metrics": {k: v for k, v in last.items() if k not in NOT_LOSSES and _finite(v)},
            "eval": eval_summary(report) if report else None,
            "checkpoint": self.latest,
            "damaged": self.damaged,
        }


def run_summary(root: Path, path: Path) -> dict[str, Any]:
    """One row of the run list (see ``RunRecords.summary``)."""
    return RunRecords(root, path).summary()


def run_page(root: Path, path: Path) -> dict[str, Any]:
    """Everything the run page shows: the run list's row, run.json, config.yaml, the loss curves, the
    sample grids and figures, the evaluation, and the checkpoints (``summary.damaged`` says what was refused)."""
    rec = RunRecords(root, path)
    series = rec._read(metric_series, path) or {}
    steps = rec._read(checkpoint_steps, path) or []
    config = rec.config
    report = rec.report
    # A translator's evaluation (translation.json: translations against targets) stands in for eval.json.
    translation = rec._read(read_record, path, "translation.json", "translation evaluation") or {} if not report else {}
    return {
        "series": series,
        "checkpoints": steps,
        "summary": rec.summary(),  # after every read above: it says what was damaged
        "meta": rec.meta,
        "config": config,
        "grids": sample_grids(root, path, rec.meta.get("steps")),
        "figures": figures(root, path),
        "eval": {"summary": eval_summary(report), "lines": _lines(report.get("summary_lines"))}
        if report
        else {"summary": {}, "lines": _lines(translation.get("summary_lines"))}
        if translation
        else None,
        "latest": rec.latest,
    }


def _lines(value: Any) -> list[str]:
    """eval.json's summary lines, as text (the file may have been edited into anything)."""
    return [str(v) for v in value] if isinstance(value, list) else []


def read_metrics_tail(path: Path) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl, at most its last MAX_METRICS_BYTES; torn or damaged lines
    are skipped, a missing log gives [].

    Raises:
        safeio.FileRefused: the log leads outside the run or is not a regular file.
    """
    try:
        fd = safeio.open_regular(path / "metrics.jsonl", path, limit=safeio.LARGE_FILE, what="metrics log")
    except FileNotFoundError:
        return []
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - MAX_METRICS_BYTES)
        chunks, at = [], start
        while at < size:
            chunk = os.pread(fd, min(size - at, 1 << 20), at)
            if not chunk:
                break
            chunks.append(chunk)
            at += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if start:  # the tail begins mid-record: drop the partial first line
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    out = []
    for line in data.split(b"\n"):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def metric_series(path: Path) -> dict[str, list[list[float]]]:
    """Loss curves from metrics.jsonl: {name: [[step, value], ...]}, thinned to MAX_POINTS each."""
    series: dict[str, list[list[float]]] = {}
    for rec in read_metrics_tail(path):
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


def _pngs(folder: Path) -> list[Path]:
    """The regular PNG files directly in ``folder`` (no symlinks, FIFOs or folders), by name."""
    try:
        with os.scandir(folder) as it:
            found = [Path(e.path) for e in it if e.name.endswith(".png") and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(found)


def sample_grids(root: Path, path: Path, steps: int | None) -> list[dict[str, Any]]:
    """The grids saved during training, in step order: [{step, label, file}], ``file`` relative to RUNS_DIR."""
    grids = []
    for f in _pngs(path / "samples"):
        key = parse_step_name(f.stem)
        if key is not None and key[1] == 0:
            grids.append({"step": key[0], "label": f"step {key[0]}"})
        elif f.name == "final.png":
            grids.append({"step": steps if _finite(steps) else math.inf, "label": "final"})
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
    return [{"name": f.stem, "file": run_id(root, f)} for f in _pngs(path)]


def read_file(root: Path, rel: str) -> bytes:
    """The bytes of the file ``rel`` under RUNS_DIR: a regular file of at most MAX_FILE_BYTES,
    confined to the run it belongs to (RUNS_DIR for a file outside every run).

    Raises:
        PathRefused: it leads outside RUNS_DIR or outside its run.
        NotFound: it does not exist, or is not a regular file of at most MAX_FILE_BYTES.
    """
    path = resolve_inside(root, rel)
    home = owning_run(root, rel)
    try:
        safeio.confine(path, home)
    except safeio.FileRefused:
        raise PathRefused(
            f"path {quote_path(rel)} leads outside its run in RUNS_DIR (a symlink?); it is not served"
        ) from None
    try:
        return safeio.read_bytes(path, home, limit=MAX_FILE_BYTES, what="file")
    except FileNotFoundError:
        raise NotFound(f"no file {quote_path(rel)} under RUNS_DIR") from None
    except safeio.FileRefused as e:
        raise NotFound(_short(str(e), root)) from None


def _by_fid(report: dict[str, Any]) -> tuple[int, float]:
    """Sort key: runs with a FID first, lowest first (lower is better); the rest after."""
    fid = report.get("fid")
    return (0, float(fid)) if _finite(fid) else (1, 0.0)


def find_reports(root: Path) -> list[dict[str, Any]]:
    """Every readable eval.json under RUNS_DIR (folders as ``find_runs`` walks them), with ``_dir`` set;
    refused or damaged ones are left out (the run list says why)."""
    out = []
    for here, files in _walk(root):
        if "eval.json" not in files:
            continue
        try:
            rep = read_record(here, "eval.json", "evaluation")
        except (safeio.FileRefused, OSError):
            continue
        if "dataset" in rep:
            rep["_dir"] = str(here)
            out.append(rep)
    return out


def leaderboard(root: Path) -> dict[str, Any]:
    """Every eval.json under RUNS_DIR as leaderboard tables, one per dataset, sorted by FID.

    Returns:
        ``{"columns": [...], "datasets": {name: [{"id": run id, "cells": {column: text}}, ...]}}``.
    """
    from genmodels.eval import leaderboard as lb

    by_ds: dict[str, list[dict[str, Any]]] = {}
    for rep in find_reports(root):
        by_ds.setdefault(str(rep["dataset"]), []).append(rep)
    tables = {}
    for ds in sorted(by_ds):
        rows = []
        for r in sorted(by_ds[ds], key=_by_fid):
            try:
                cells = lb.row(r, root)
            except (TypeError, ValueError, KeyError, AttributeError):  # an eval.json edited into other types
                continue
            where = Path(r["_dir"])
            rows.append({"id": run_id(root, where) if os.path.lexists(where / "config.yaml") else None, "cells": cells})
        tables[ds] = rows
    return {"columns": list(lb.COLUMNS), "datasets": tables}
