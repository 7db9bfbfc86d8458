"""Seconds per 1,000 samples, this tree against an older commit, side by side in one run, on the same weights.

For each trained run given (``--runs FAMILY=RUN_DIR``; a run both trees can load, e.g. one the older commit
trained: ``benchmarks/speed_vs_old.py`` leaves ``FAMILY-old`` runs), a fresh interpreter draws ``--n``
samples with the run's own sampler settings (diffusion: its DPM-Solver++ 20 steps; PixelCNN: its cached
sampler), ``Run.sample`` with seed 0 in batches of 500, once with the old commit's ``src`` (``git archive``)
and once with this tree, alternating which goes first, ``--repeats`` times each; nothing else running.
Reported per run: each side's median seconds per 1,000 samples (the whole draw, model loaded beforehand),
this tree's first draw with an empty fast-path cache (its sampling-layout probe included) and the layout it
chose, the speed-up, and how far the two sides' images are apart (share of uint8 pixels that differ, largest
difference in grey levels): the same seed draws the same images, up to float rounding.

usage: python benchmarks/sampling_vs_old.py --against REV --runs gan=runs/speed-vs-old/gan-old ...
       [--n 1000] [--repeats 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from old_tree import export

ROOT = Path(__file__).resolve().parents[1]

# Runs in either tree (PYTHONPATH): loads the run, draws n samples, saves them as uint8, prints the timing.
CHILD = """
import json, sys, time
import numpy as np, torch
from genmodels.training import load_run
from genmodels.viz import to_uint8
run = load_run(sys.argv[1])
n = int(sys.argv[2])
t0 = time.perf_counter()
x = run.sample(n, seed=0)
secs = time.perf_counter() - t0
np.savez(sys.argv[3], images=to_uint8(x))
layout = run.sampling_layout() if hasattr(run, "sampling_layout") else None
print(json.dumps({"seconds": secs, "threads": torch.get_num_threads(), "layout": layout}))
"""


def draw(src: Path, run: str, n: int, out: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "XDG_CACHE_HOME": str(cache)}
    res = subprocess.run(
        [sys.executable, "-c", CHILD, run, str(n), str(out)], env=env, capture_output=True, text=True, timeout=7200
    )
    if res.returncode != 0:
        raise SystemExit(f"{src} on {run}: {(res.stderr.strip().splitlines() or ['failed'])[-1]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="the older commit")
    ap.add_argument("--runs", nargs="+", required=True, help="FAMILY=RUN_DIR, a trained run per family")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        sides = {"old": export(a.against, tmp_path / "old"), "new": ROOT / "src"}
        for i, spec in enumerate(a.runs):
            family, run = spec.split("=", 1)
            cache = tmp_path / f"cache-{i}"  # empty: this tree's first draw times its layout, later ones reuse it
            times: dict[str, list[float]] = {"old": [], "new": []}
            first_new = layout = None
            for r in range(a.repeats):
                for side in ("old", "new") if (i + r) % 2 == 0 else ("new", "old"):
                    got = draw(sides[side], run, a.n, tmp_path / f"{side}-{i}.npz", cache)
                    if side == "new" and first_new is None:
                        first_new, layout = got["seconds"], got["layout"]
                    else:
                        times[side].append(got["seconds"])
            old_img, new_img = (np.load(tmp_path / f"{s}-{i}.npz")["images"].astype(int) for s in ("old", "new"))
            diff = np.abs(old_img - new_img)
            row = {
                "family": family,
                "run": run,
                "n": a.n,
                "old_s_per_1000": 1000 * statistics.median(times["old"]) / a.n,
                "new_s_per_1000": 1000 * statistics.median(times["new"]) / a.n,
                "new_first_s_per_1000": 1000 * first_new / a.n,
                "old_runs_s": times["old"],
                "new_runs_s": times["new"],
                "layout": layout,
                "pixels_differing": float((diff > 0).mean()),
                "max_grey_difference": int(diff.max()),
            }
            row["speed_up"] = row["old_s_per_1000"] / row["new_s_per_1000"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {a.n} samples, against {a.against}\n")
    print(
        "| family | old s / 1,000 | new s / 1,000 | speed-up | new, first draw (layout timed) | layout "
        "| pixels differing |"
    )
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        lay = ("channels_last" if r["layout"][0] else "contiguous") if r["layout"] else "-"
        print(
            f"| {r['family']} | {r['old_s_per_1000']:.2f} | {r['new_s_per_1000']:.2f} | {r['speed_up']:.2f}x | "
            f"{r['new_first_s_per_1000']:.2f} | {lay} | {100 * r['pixels_differing']:.3f}% "
            f"(max {r['max_grey_difference']}) |"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"against": a.against, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
