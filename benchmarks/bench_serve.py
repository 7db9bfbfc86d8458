"""How fast the web app answers: "generate 16 images" (issue 8: under 1 s on 2 cores for a small model),
and one explorer point, measured end to end through a real `genmodels serve` process over HTTP.

It trains each family's recommended model (its tuned config from genmodels/configs/<family>.yaml) for a
few steps on the bundled digits, since latency does not depend on how trained the weights are, plus the
classic 2-D MLP autoencoder for the explorer; starts `genmodels serve` on a free port; and for every run
times the first request (it loads the model) and then --repeats warm requests with fresh seeds. Beside
each, the same sampling called in this process (Run.sample) is timed, so the ratio shows what HTTP and
PNG encoding add, measured side by side on the same, possibly busy, machine.

usage: python benchmarks/bench_serve.py [--families autoencoder vae gan pixelcnn diffusion] [--repeats 20]
                                        [--runs DIR] [--json FILE]
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
import urllib.request
from pathlib import Path

import torch

SRC = str(Path(__file__).resolve().parents[1] / "src")
TARGET_S = 1.0  # issue 8: 16 images from a small model in under 1 s


def train_runs(root: Path, families: list[str], steps: int) -> list[str]:
    """Each family's recommended model trained ``steps`` steps on digits, and a 2-D MLP autoencoder."""
    from genmodels.api import train

    # Small batches and no grids: only the checkpoint matters here, and the model's size is the family's own.
    quiet = {"train.sample_every": 0, "train.grid": 0, "train.ckpt_every": 0, "train.batch_size": 16}
    names = []
    for fam in families:
        train(fam, "digits", steps=steps, out=root / fam, overrides=quiet, progress=False)
        names.append(fam)
    train("mlp-ae", "digits", steps=steps, out=root / "mlp-ae-2d", overrides=quiet, progress=False)
    return [*names, "mlp-ae-2d"]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genmodels", "serve", str(root), "--port", "0", "--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if " at http" not in line:
        proc.kill()
        raise SystemExit(f"genmodels serve did not start: {line!r}")
    return proc, line.split(" at ")[1].split()[0].rstrip("/")


def fetch(url: str) -> tuple[float, float]:
    """(client seconds, server-reported compute seconds) of one GET."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        r.read()
        server_ms = float(r.headers.get("X-Elapsed-Ms", "nan"))
    return time.perf_counter() - t0, server_ms / 1000


def timed(fn, repeats: int, budget_s: float) -> list[float]:
    """Seconds of up to ``repeats`` calls fn(i), stopping early once ``budget_s`` is spent (slow samplers)."""
    out: list[float] = []
    t_end = time.perf_counter() + budget_s
    for i in range(repeats):
        out.append(fn(i))
        if time.perf_counter() > t_end:
            break
    return out


def bench_run(base: str, root: Path, name: str, n: int, repeats: int, budget_s: float) -> dict:
    from genmodels.models.base import default_labels, has_latent
    from genmodels.runs import load_run

    run = load_run(root / name, device="cpu")
    labels = default_labels(run.model, n)
    q = f"{base}/api/generate.png?run={name}&n={n}"
    cold, _ = fetch(f"{q}&seed=0")
    warm = timed(lambda i: fetch(f"{q}&seed={i + 1}")[0], repeats, budget_s)
    direct = timed(lambda i: _direct(run, n, i + 1, labels), repeats, budget_s)
    row = {
        "run": name,
        "model": run.model_name,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "cold_s": cold,
        "warm_median_s": statistics.median(warm),
        "warm_max_s": max(warm),
        "requests": len(warm),
        "direct_median_s": statistics.median(direct),
    }
    row["http_over_direct"] = row["warm_median_s"] / row["direct_median_s"]
    if has_latent(run.model) and int(run.model.latent_dim) == 2:
        fetch(f"{base}/api/latent?run={name}")
        pts = timed(lambda i: fetch(f"{base}/api/decode.png?run={name}&z={i / 50:.3f},{-i / 50:.3f}")[0], 50, 30)
        row["explorer_point_median_s"] = statistics.median(pts)
    return row


def _direct(run, n: int, seed: int, labels) -> float:
    t0 = time.perf_counter()
    run.sample(n, seed=seed, labels=labels)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["autoencoder", "vae", "gan", "pixelcnn", "diffusion"])
    p.add_argument("--steps", type=int, default=5, help="training steps per run (latency does not depend on it)")
    p.add_argument("--runs", help="measure the runs in this folder instead of training fresh ones")
    p.add_argument("-n", type=int, default=16, help="images per generate request (default 16)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--budget", type=float, default=60.0, help="seconds of warm requests per run at most")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(a.runs).resolve() if a.runs else Path(tmp)
        if a.runs:
            from genmodels.serve.runs import find_runs, run_id

            names = [run_id(root, d) for d in find_runs(root)]
        else:
            t0 = time.perf_counter()
            names = train_runs(root, a.families, a.steps)
            print(f"trained {len(names)} runs for {a.steps} steps each in {time.perf_counter() - t0:.0f} s")
        proc, base = start_server(root)
        try:
            rows = [bench_run(base, root, name, a.n, a.repeats, a.budget) for name in names]
            listing = timed(lambda i: fetch(f"{base}/api/runs")[0], 20, 30)
            pages = timed(lambda i: fetch(f"{base}/api/run?run={names[i % len(names)]}")[0], 20, 30)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    print(f"\ngenerate {a.n} images through `genmodels serve` (HTTP + PNG), {torch.get_num_threads()} threads")
    print(
        f"{'run':<14} {'model':<16} {'params':>9} {'first':>8} {'median':>8} {'max':>8} {'direct':>8} "
        f"{'http/direct':>11}  under {TARGET_S:g} s"
    )
    for r in rows:
        ok = "yes" if r["warm_median_s"] < TARGET_S else "NO"
        print(
            f"{r['run']:<14} {r['model']:<16} {r['parameters']:>9,} {r['cold_s']:>7.3f}s {r['warm_median_s']:>7.3f}s "
            f"{r['warm_max_s']:>7.3f}s {r['direct_median_s']:>7.3f}s {r['http_over_direct']:>10.2f}x  {ok}"
        )
    for r in rows:
        if "explorer_point_median_s" in r:
            print(
                f"explorer: one decoded point of {r['run']} answers in {1000 * r['explorer_point_median_s']:.1f} ms "
                "(median of 50, client wall time)"
            )
    print(
        "first = the first request (loads the model); median/max = warm requests with new seeds; "
        "direct = Run.sample in this process"
    )
    print(
        f"run list of {len(names)} runs: {1000 * statistics.median(listing):.1f} ms; one run's page: "
        f"{1000 * statistics.median(pages):.1f} ms (medians, every file read through safeio)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
