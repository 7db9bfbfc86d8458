"""Seconds per 1,000 PixelCNN samples: the naive sampler (one full network pass per pixel and colour)
against the fast ones (Gated PixelCNN: cached vertical rows and horizontal pixels; masked PixelCNN: the
network run on the receptive-field rows only), side by side in one process.

Both samplers cost the same for every pixel of a row, and the naive one costs the same for every
pixel of the image, so each is timed on a completion of the last ``--rows`` image rows (n images at
once) and scaled to whole images: seconds per 1,000 = t * (H / rows) * (1000 / n). The fast sampler is
also timed drawing ``--full`` whole images, which checks the scaling (its first rows are cheaper, the
vertical stack's rows are included). Timings do not depend on the weights; pass --run to time a
trained run's model instead of the default config with fresh weights.

``--against REV`` times whole-image sampling (``--full`` images in batches of ``--batch``) of the
working tree and of git revision REV side by side instead: each in its own process (the revision's
``src`` exported with ``git archive``), alternating ``--repeats`` times, the same models and seeds; it
reports the median seconds per 1,000 samples of each, the ratio, and whether both drew the same images.

usage: python benchmarks/pixelcnn_sampling.py [--n 100] [--rows 1] [--full 1000] [--run RUN_DIR]
       python benchmarks/pixelcnn_sampling.py --against REV [--full 1000] [--batch 500] [--repeats 3]
                                              [--models pixelcnn gated-pixelcnn pixelsnail]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from old_tree import export

from genmodels.models import make_config, model_spec
from genmodels.training.config import family_defaults


def build(name: str) -> tuple[str, torch.nn.Module]:
    """``pixelcnn``: the family default (configs/pixelcnn.yaml); a model name: its registry defaults."""
    values: dict = {}
    if name == "pixelcnn":
        fam = family_defaults("pixelcnn")
        name, values = fam["model_name"], dict(fam.get("model", {}))
    cfg = make_config(name, {**values, "image_shape": [1, 28, 28]})
    torch.manual_seed(0)
    label = f"{name} ({cfg.channels} channels, {cfg.layers} layers, {cfg.output})"
    return label, model_spec(name).build(cfg).eval()


def time_rows(model: torch.nn.Module, n: int, rows: int, sampler: str) -> float:
    """Seconds to complete the last ``rows`` rows of n images."""
    c, h, w = model.config.image_shape
    x = torch.zeros(n, c, h, w)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model.complete(x, h - rows, generator=g, sampler=sampler)
    return time.perf_counter() - t0


# Run in a fresh process with one genmodels on its path: build a model as ``build`` does, draw whole images.
TIMER = """
import hashlib, json, sys, time, torch
from genmodels.models import make_config, model_spec
from genmodels.training.config import family_defaults
name, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
values = {}
if name == "pixelcnn":
    fam = family_defaults("pixelcnn")
    name, values = fam["model_name"], dict(fam.get("model", {}))
torch.manual_seed(0)
model = model_spec(name).build(make_config(name, {**values, "image_shape": [1, 28, 28]})).eval()
model.sample(2, generator=torch.Generator().manual_seed(1))  # warm-up
g = torch.Generator().manual_seed(0)
t0 = time.perf_counter()
out = [model.sample(min(batch, n - i), generator=g) for i in range(0, n, batch)]
secs = time.perf_counter() - t0
digest = hashlib.sha256(torch.cat(out).mul(255).round().to(torch.uint8).numpy().tobytes()).hexdigest()
print(json.dumps({"s_per_1000": secs * 1000 / n, "sha256": digest}))
"""


def against(rev: str, models: list[str], n: int, batch: int, repeats: int) -> None:
    """Whole-image sampling of the working tree against revision ``rev``, alternating processes."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"new": repo / "src", rev: export(rev, Path(tmp))}
        print(f"torch {torch.__version__}; {n} images in batches of {batch}; median of {repeats} alternating runs\n")
        print(f"| model | {rev}: s / 1,000 | working tree: s / 1,000 | speed-up | same images |")
        print("|---|---:|---:|---:|---|")
        for name in models:
            times: dict[str, list[float]] = {k: [] for k in trees}
            digests: dict[str, str] = {}
            for _ in range(repeats):
                for key, src in trees.items():
                    env = {**os.environ, "PYTHONPATH": str(src)}
                    cmd = [sys.executable, "-c", TIMER, name, str(n), str(batch)]
                    res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
                    times[key].append(res["s_per_1000"])
                    digests[key] = res["sha256"]
            old, new = statistics.median(times[rev]), statistics.median(times["new"])
            same = "yes" if digests[rev] == digests["new"] else "no"
            print(f"| {name} | {old:,.1f} | {new:,.1f} | {old / new:.1f}x | {same} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="images per timed completion")
    ap.add_argument("--rows", type=int, default=1, help="image rows per timed completion")
    ap.add_argument("--full", type=int, default=1000, help="whole images drawn by the fast sampler (0 = skip)")
    ap.add_argument("--batch", type=int, default=500, help="batch of the whole-image draw (as genmodels sample)")
    ap.add_argument("--run", help="time this run's model instead of fresh default weights")
    ap.add_argument("--against", metavar="REV", help="time whole-image sampling against this git revision")
    ap.add_argument("--repeats", type=int, default=3, help="--against: alternating runs of each side")
    ap.add_argument(
        "--models", nargs="*", default=["pixelcnn", "gated-pixelcnn"], help="pixelcnn = the family default config"
    )
    a = ap.parse_args()
    if a.against:
        against(a.against, a.models, a.full or 1000, a.batch, a.repeats)
        return
    if a.run:
        from genmodels.training import load_run

        run = load_run(a.run, device="cpu")
        models = [(run.model_name, run.model)]
    else:
        models = [build(m) for m in a.models]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | sampler | seconds per 1,000 samples | speed-up | measured on |")
    print("|---|---|---:|---:|---|")
    for name, model in models:
        h = model.config.image_shape[1]
        scale = (h / a.rows) * (1000 / a.n)
        time_rows(model, 2, 1, "fast")  # warm-up
        naive = time_rows(model, a.n, a.rows, "naive") * scale
        fast = time_rows(model, a.n, a.rows, "fast") * scale
        on = f"{a.n} images x {a.rows} row(s), scaled"
        print(f"| {name} | naive (full pass per pixel) | {naive:,.1f} | 1.0x | {on} |")
        print(f"| {name} | fast | {fast:,.1f} | {naive / fast:.1f}x | {on} |")
        if a.full:
            g = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            for i in range(0, a.full, a.batch):
                model.sample(min(a.batch, a.full - i), generator=g)
            whole = (time.perf_counter() - t0) * 1000 / a.full
            print(f"| {name} | fast | {whole:,.1f} | {naive / whole:.1f}x | {a.full} whole images |")


if __name__ == "__main__":
    main()
