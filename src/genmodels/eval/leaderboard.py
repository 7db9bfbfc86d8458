"""The leaderboard: every evaluated run under a directory, one table per dataset sorted by FID, and
one PNG with each run's sample grid side by side.

It only reads what ``genmodels evaluate`` wrote (``eval.json`` and ``eval_samples.png`` in each run),
so it is instant and never re-scores anything. ``n`` is the number of samples each run was scored on
(a plain ``evaluate`` draws fewer than 10,000 of a slow sampler; FIDs of different n are not comparable),
``pixel TV`` the total-variation distance between the samples' and the test images' gray-level histograms.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from genmodels import safeio
from genmodels.errors import GenmodelsError

COLUMNS = (
    "family",
    "model",
    "run",
    "steps",
    "train min",
    "n",
    "FID",
    "KID x1e3",
    "precision",
    "recall",
    "coverage",
    "pixel TV",
    "NLL",
    "s / 1k samples",
)


def find_reports(runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every readable eval.json under runs_dir (recursively), with ``_dir`` set to its folder."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise GenmodelsError(f"{root} is not a directory; pass the folder that holds your run directories")
    out = []
    for path in sorted(root.rglob("eval.json")):
        try:
            rep = safeio.read_json(path, path.parent, what="evaluation report")
        except (OSError, safeio.FileRefused):
            continue
        if isinstance(rep, dict) and "dataset" in rep:
            rep["_dir"] = str(path.parent)
            out.append(rep)
    return out


def _fmt(v: Any, spec: str) -> str:
    """A number formatted, or "-" for a missing, non-finite or (in a hand-edited report) non-numeric value."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return "-"
    return format(round(v) if spec == "d" else v, spec)


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _nll(rep: dict[str, Any]) -> str:
    lik = rep.get("likelihood")
    if not lik or not lik.get("nats"):
        return "-"
    best = min(lik["nats"], key=lambda k: lik["nats"][k])  # the tightest bound the model reports
    data = "bin" if lik.get("data") == "binarized" else "8-bit"
    return f"{lik['nats'][best]:.1f} nats ({lik['bpd'][best]:.3f} bpd, {data}, {best})"


def row(rep: dict[str, Any], root: Path) -> dict[str, str]:
    """One leaderboard row of formatted cells."""
    wall = rep.get("wall_time_s")
    kid = _dict(rep.get("kid"))
    pixels = _dict(rep.get("pixel_stats"))
    try:
        run = str(Path(rep["_dir"]).relative_to(root))
    except ValueError:
        run = rep["_dir"]
    return {
        "family": str(rep.get("family", "-")),
        "model": str(rep.get("model_name", "-")),
        "run": run if run != "." else Path(rep["_dir"]).name,
        "steps": _fmt(rep.get("step"), "d"),
        "train min": _fmt(wall / 60 if isinstance(wall, int | float) else None, ".1f"),
        "n": _fmt(rep.get("n"), "d"),
        "FID": _fmt(rep.get("fid"), ".2f"),
        "KID x1e3": _fmt(kid["mean"] * 1000 if isinstance(kid.get("mean"), int | float) else None, ".2f"),
        "precision": _fmt(rep.get("precision"), ".3f"),
        "recall": _fmt(rep.get("recall"), ".3f"),
        "coverage": _fmt(rep.get("coverage"), ".3f"),
        "pixel TV": _fmt(pixels.get("pixel_hist_tv"), ".4f"),
        "NLL": _nll(rep),
        "s / 1k samples": _fmt(rep.get("seconds_per_1000_samples"), ".2f"),
    }


def _markdown(rows: list[dict[str, str]]) -> list[str]:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    head = "| " + " | ".join(c.ljust(widths[c]) for c in COLUMNS) + " |"
    rule = "|" + "|".join("-" * (widths[c] + 2) for c in COLUMNS) + "|"
    body = ["| " + " | ".join(r[c].ljust(widths[c]) for c in COLUMNS) + " |" for r in rows]
    return [head, rule, *body]


def _by_fid(rep: dict[str, Any]) -> tuple[int, float]:
    f = rep.get("fid")
    return (0, f) if isinstance(f, int | float) and math.isfinite(f) else (1, 0.0)


def leaderboard(runs_dir: str | os.PathLike, *, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Collect every evaluated run under runs_dir; write leaderboard.md, .json and .png.

    Args:
        runs_dir: the folder searched (recursively) for eval.json files.
        out: where to write the three files (default: runs_dir/leaderboard.*; a path's suffix is dropped).

    Returns:
        ``{"datasets": {name: [row, ...] sorted by FID}, "text": the printed tables, "files": [...]}``.
    """
    root = Path(runs_dir)
    reports = find_reports(root)
    if not reports:
        raise GenmodelsError(f"no evaluated runs under {root}; run genmodels evaluate RUN on your runs first")
    by_ds: dict[str, list[dict[str, Any]]] = {}
    for rep in reports:
        by_ds.setdefault(rep["dataset"], []).append(rep)
    text: list[str] = []
    tables: dict[str, list[dict[str, str]]] = {}
    for ds in sorted(by_ds):
        reps = sorted(by_ds[ds], key=_by_fid)
        by_ds[ds] = reps
        tables[ds] = [row(r, root) for r in reps]
        n = {r.get("n") for r in reps}
        text += [f"## {ds} (test split; {', '.join(str(v) for v in sorted(n, key=str))} samples per run)", ""]
        text += [*_markdown(tables[ds]), ""]
    base = Path(out).with_suffix("") if out is not None else root / "leaderboard"
    base.parent.mkdir(parents=True, exist_ok=True)
    md = ["# Leaderboard", "", "Sorted by FID on each dataset's feature network (lower is better).", "", *text]
    base.with_suffix(".md").write_text("\n".join(md))
    base.with_suffix(".json").write_text(json.dumps(tables, indent=1))
    files = [str(base.with_suffix(".md")), str(base.with_suffix(".json"))]
    png = base.with_suffix(".png")
    if _sample_sheet(by_ds, png):
        files.append(str(png))
    return {"datasets": tables, "text": "\n".join(text), "files": files}


def _sample_sheet(by_ds: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """One figure: a row per dataset, each run's sample grid side by side in FID order."""
    from PIL import Image

    cells = [[(r, Path(r["_dir"]) / "eval_samples.png") for r in reps] for reps in by_ds.values()]
    cells = [[(r, p) for r, p in row_ if p.exists()] for row_ in cells]
    cells = [row_ for row_ in cells if row_]
    if not cells:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncol = max(len(row_) for row_ in cells)
    fig, axes = plt.subplots(len(cells), ncol, figsize=(2.6 * ncol, 3.0 * len(cells)), squeeze=False)
    for i, row_ in enumerate(cells):
        for j in range(ncol):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(row_):
                continue
            rep, p = row_[j]
            with Image.open(p) as im:
                ax.imshow(im.convert("L") if im.mode in ("L", "LA", "I") else im.convert("RGB"), cmap="gray")
            fid = rep.get("fid")
            ax.set_title(
                f"{rep.get('model_name')} ({Path(rep['_dir']).name})\n{rep['dataset']}: FID {fid:.2f}"
                if isinstance(fid, int | float)
                else f"{rep.get('model_name')}\n{rep['dataset']}",
                fontsize=8,
            )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


__all__ = ["find_reports", "leaderboard"]
