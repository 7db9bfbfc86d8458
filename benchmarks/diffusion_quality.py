"""Issue 6, point 5: the default `diffusion` config trained for 20 CPU-minutes on Fashion-MNIST, evaluated
with the shared protocol (FID etc. on the feature network), side by side with the default GAN's run.

It trains ``genmodels train diffusion --dataset fashion-mnist --max-time MINUTES`` (wall-clock minutes:
on a quiet 2-core machine 20 minutes of wall time are the issue's 20 CPU-minutes on 2 cores), runs
``genmodels evaluate`` on it (eval.json), writes a grid of samples sorted by the feature network's class
(``classes.png``: one row per class, to judge "recognisable garments of all 10 classes" by eye), and
prints the figures, the pixel statistics among them (issue 11: shares of pixels at 0 and in 1..5 against the
test images', histogram TV and W1). With ``--gan-run`` it reads that run's eval.json and checks the issue's
target: FID(diffusion) <= 1.5 x FID(GAN).

usage:
  python benchmarks/diffusion_quality.py [--minutes 20] [--out runs/bench-diffusion] [--gan-run RUN_DIR]
                                         [--n 10000] [--sampler dpm-solver] [--steps 20] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def class_sheet(run, net, out: Path, per_class: int = 10, draw: int = 1000) -> list[int]:
    """Draw samples, classify them with the feature net and write one row per class; returns class counts."""
    from genmodels.viz import save_grid

    x = run.sample(draw, seed=123)
    cls = net.classify(x)
    k = net.config.num_classes
    rows = []
    for c in range(k):
        mine = x[cls == c][:per_class]
        pad = torch.zeros(per_class - len(mine), *x.shape[1:])  # black where a class has too few samples
        rows.append(torch.cat([mine, pad]))
    save_grid(torch.cat(rows), out, nrow=per_class)
    return torch.bincount(cls, minlength=k).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget (wall-clock minutes)")
    ap.add_argument("--out", default="runs/bench-diffusion")
    ap.add_argument("--gan-run", help="the default GAN's run directory (10 CPU-minutes), evaluated or not")
    ap.add_argument("--n", type=int, default=10000, help="samples and test images for the metrics")
    ap.add_argument("--sampler", default=None, help="default: the config's (dpm-solver)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps; default: the config's (20)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate an existing --out run")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    from genmodels.api import load_run, train
    from genmodels.eval import evaluate_run, load_feature_net

    out = Path(a.out)
    if not a.skip_train:
        t0 = time.perf_counter()
        run = train("diffusion", "fashion-mnist", max_time=a.minutes, out=out, seed=a.seed, progress=False)
        res = run.extra["result"]
        took = time.perf_counter() - t0
        print(f"trained {run.model_name} for {res.step} steps in {res.elapsed:.0f} s ({took:.0f} s)")
    options = {k: v for k, v in (("sampler", a.sampler), ("steps", a.steps)) if v is not None}
    report = evaluate_run(out, n=a.n, options=options)
    run = load_run(out)
    counts = class_sheet(run, load_feature_net("fashion-mnist"), out / "classes.png")

    meta = json.loads((out / "run.json").read_text())
    last = meta.get("last_metrics", {})
    rows = [
        ("steps", report["step"]),
        ("training wall time (s)", meta.get("wall_time_s")),
        ("training images / s", round(last.get("images_per_s", float("nan")), 1)),
        ("FID", round(report.get("fid", float("nan")), 3)),
        ("KID", report.get("kid")),
        ("precision / recall", (report.get("precision"), report.get("recall"))),
        ("density / coverage", (report.get("density"), report.get("coverage"))),
        ("class coverage", report.get("class_coverage")),
        ("classes of 1,000 samples (feature net)", counts),
        ("test NLL bound (bits/dim)", report.get("likelihood", {}).get("bpd")),
        ("sampling s / 1,000", report.get("seconds_per_1000_samples")),
        ("sampling options", report.get("sampling_options")),
        *_pixel_rows(report),
    ]
    print(f"\n{run.model_name} on fashion-mnist, {a.minutes:g} minutes, n = {report['n']}")
    for name, value in rows:
        print(f"  {name:<42} {value}")
    print(f"  sample grid by class: {out / 'classes.png'}; eval: {out / 'eval.json'}")
    if a.gan_run:
        gan_eval = Path(a.gan_run) / "eval.json"
        if not gan_eval.exists():
            evaluate_run(a.gan_run, n=a.n)
        gan = json.loads(gan_eval.read_text())
        ratio = report["fid"] / gan["fid"]
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        print(f"  GAN ({gan['model_name']}, step {gan['step']}): FID {gan['fid']:.3f} (n = {gan['n']})")
        for name, value in _pixel_rows(gan):
            print(f"  GAN {name:<38} {value}")
        print(f"  FID ratio diffusion / GAN = {ratio:.2f}: {verdict} the target <= 1.5")


def _pixel_rows(report: dict) -> list[tuple[str, object]]:
    """Issue 11: the pixel statistics beside the feature-net metrics (black background speckle shows here)."""
    ps = report.get("pixel_stats")
    if not ps:
        return []
    pct = lambda v: round(100 * v, 1)  # noqa: E731
    return [
        ("pixels exactly 0 / in 1..5 (%)", (pct(ps["black_share"]), pct(ps["near_black_share"]))),
        ("  the same of the test images (%)", (pct(ps["real_black_share"]), pct(ps["real_near_black_share"]))),
        ("pixel histogram TV / W1 (gray levels)", (round(ps["pixel_hist_tv"], 4), round(ps["pixel_w1"], 2))),
    ]


if __name__ == "__main__":
    main()
