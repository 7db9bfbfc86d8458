"""Evaluation benchmarks of issues 3 and 11.

speed    Point 5: features and every metric for n samples of MNIST-sized images (target: under 60 s on
         2 cores for 10,000), split into the one-off reference statistics (cached afterwards) and the
         per-evaluation cost. Real training images stand in for samples (the metrics cannot tell).
compare  Point 6: train `genmodels train vae --max-time MINUTES` on Fashion-MNIST, then the plain conv
         VAE loop of benchmarks/baseline_vae_loop.py for the VAE's whole wall time (its prior fit after
         training included), one after the other, then score both with the same protocol and print
         FID / KID / precision / recall / coverage side by side. The target: the default vae's FID at
         least 1.5x lower than the loop's, and higher recall.
plain    Issue 11, point 3: the wall time of a plain `genmodels evaluate RUN` of each run given (target: about a
         minute on 2 cores for every family), its CPU time (the machine's other load inflates wall time, not
         CPU time) and what it computed: samples (and why fewer than 10,000), the likelihood estimate, whether
         the sample metrics ran. Runs one after the other, each in a fresh process, with a warm reference cache
         (a first evaluation on a dataset also computes the test split's reference statistics, once).

usage:
  python benchmarks/bench_eval.py speed [-n 10000] [--dataset fashion-mnist]
  python benchmarks/bench_eval.py compare [--minutes 5] [--out runs/bench-compare] [-n 10000]
  python benchmarks/bench_eval.py compare --skip-train --out runs/bench-compare   # re-score existing outputs
  python benchmarks/bench_eval.py plain runs/autoencoder runs/vae runs/gan runs/diffusion runs/pixelcnn
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def speed(n: int, dataset: str, threads: int | None) -> dict:
    """Time the reference statistics (cold) and the per-evaluation features and metrics (warm)."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["XDG_CACHE_HOME"] = cache  # a cold cache, whatever the user's holds
        from genmodels.data import load_dataset
        from genmodels.eval.features import load_feature_net
        from genmodels.eval.reference import real_reference, train_nn_distances
        from genmodels.eval.report import sample_metrics

        t = time.perf_counter()
        net = load_feature_net(dataset)
        test, train = load_dataset(dataset, "test"), load_dataset(dataset, "train")
        load_s = time.perf_counter() - t
        samples = torch.from_numpy(train.images[:n])
        t = time.perf_counter()
        ref = real_reference(net, test, n=n)
        train_nn_distances(ref, train.images)
        ref_s = time.perf_counter() - t
        t = time.perf_counter()
        m = sample_metrics(samples, net, ref, train_images=train.images)
        total = time.perf_counter() - t
    print(f"{dataset}: {len(samples)} samples against {ref.n} test images, {torch.get_num_threads()} threads")
    print(f"  loading the feature net and data       {load_s:6.1f} s")
    print(f"  reference statistics (once, cached)    {ref_s:6.1f} s")
    for k, v in m["seconds"].items():
        print(f"    {k:<36} {v:6.1f} s")
    verdict = "meets" if total < 60 else "MISSES"
    print(f"  features + every metric per evaluation {total:6.1f} s  ({verdict} the 60 s target)")
    print(f"  (FID {m['fid']:.3f}, precision {m['precision']:.3f}, recall {m['recall']:.3f} of held-out real images)")
    return {"seconds": total, "reference_seconds": ref_s, "breakdown": m["seconds"], "n": len(samples)}


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") as f:
        r = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    print("  " + (log.read_text().strip().splitlines() or [""])[-1][:200])
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}); see {log}")


def compare(minutes: float, out: Path, n: int, skip_train: bool) -> dict:
    """Train both for the same minutes, evaluate both with the same code, print side by side."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    base_npz, run = out / "baseline" / "samples.npz", out / "vae"
    if not skip_train:
        if run.exists():
            raise SystemExit(f"{run} exists; pass another --out or --skip-train to re-score it")
        py = sys.executable
        _run([py, "-m", "genmodels", "train", "vae", "--dataset", "fashion-mnist", "--max-time", str(minutes),
              "--out", str(run), "--no-progress"], out / "vae-train.log")  # fmt: skip
        # The same wall-clock for both: the loop gets the VAE's whole time, its prior fit after training included.
        vae_minutes = json.loads((run / "run.json").read_text())["wall_time_s"] / 60
        _run([py, "benchmarks/baseline_vae_loop.py", "--minutes", f"{vae_minutes:.3f}", "--out", str(base_npz),
              "-n", str(n)], out / "baseline.log")  # fmt: skip
    from genmodels.eval.report import evaluate_run, evaluate_samples

    meta = json.loads(base_npz.with_suffix(".json").read_text())
    b = evaluate_samples(base_npz, "fashion-mnist", n=n, name="baseline-loop", meta=meta)
    v = evaluate_run(run, n=n, k=100, nll_n=1000)
    rows = [
        ("steps", "step", "d"),
        ("train wall time (s)", "wall_time_s", ".0f"),
        ("FID", "fid", ".3f"),
        ("KID x 1e3", None, ".3f"),
        ("precision (k=3)", "precision", ".3f"),
        ("recall (k=3)", "recall", ".3f"),
        ("density (k=5)", "density", ".3f"),
        ("coverage (k=5)", "coverage", ".3f"),
        ("classes covered", None, ".2f"),
    ]
    print(f"\nFashion-MNIST, {minutes} min of training for the VAE and its whole wall time for the loop; "
          f"{n} samples vs {n} test images")  # fmt: skip
    print(f"{'':<22}{'baseline loop':>16}{'genmodels vae':>16}")
    for label, key, spec in rows:
        vals = []
        for r in (b, v):
            if label.startswith("KID"):
                x = 1000 * r["kid"]["mean"]
            elif label == "classes covered":
                x = r["class_coverage"]["covered"]
            else:
                x = r.get(key)
            vals.append("-" if x is None else format(x, spec))
        print(f"{label:<22}{vals[0]:>16}{vals[1]:>16}")
    ratio = b["fid"] / v["fid"]
    ok_fid, ok_rec = ratio >= 1.5, v["recall"] > b["recall"]
    print(f"\nFID ratio baseline / vae = {ratio:.2f} (target >= 1.5: {'met' if ok_fid else 'NOT met'}); "
          f"recall {v['recall']:.3f} vs {b['recall']:.3f} ({'higher: met' if ok_rec else 'NOT higher'})")  # fmt: skip
    return {"fid_ratio": ratio, "baseline": b["fid"], "vae": v["fid"], "met": ok_fid and ok_rec}


def plain(run_dirs: list[Path], warm: bool) -> list[dict]:
    """Time `genmodels evaluate RUN` (no flags but --no-progress) for each run; print one table row each."""
    rows = []
    if warm and run_dirs:  # fill the reference cache of each dataset with the same code, untimed
        for run in run_dirs:
            _evaluate(run)
    print(f"{'family':<12}{'model':<18}{'wall s':>8}{'CPU s':>8}{'load':>6}  computed")
    for run in run_dirs:
        load0 = os.getloadavg()[0]
        wall, cpu = _evaluate(run)
        rep = json.loads((run / "eval.json").read_text())
        lik = rep.get("likelihood")
        what = [f"{rep['n']} samples" + (" (auto: fewer than 10,000)" if rep["n"] < 10000 else "")]
        what.append("FID/KID/PRDC" if "fid" in rep else "no sample metrics (sampling too slow)")
        what.append("pixel stats" if "pixel_stats" in rep else "no pixel stats")
        if lik:
            name = ", ".join(f"{k}={v}" for k, v in lik["options"].items())
            what.append(f"NLL ({'/'.join(lik['nats'])}{', ' + name if name else ''}) on {lik['n']} images")
        if "reconstruction_mse" in rep:
            what.append(f"reconstruction MSE on {rep.get('reconstruction_n')}")
        load = (load0 + os.getloadavg()[0]) / 2
        print(f"{rep['family']:<12}{rep['model_name']:<18}{wall:>8.1f}{cpu:>8.1f}{load:>6.1f}  {'; '.join(what)}")
        rows.append({"run": str(run), "wall_s": wall, "cpu_s": cpu, "load": load, "computed": what})
    return rows


def _evaluate(run: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m genmodels evaluate RUN --no-progress` in a fresh process."""
    import resource

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "genmodels", "evaluate", str(run), "--no-progress"], env=env,
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"evaluate {run} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("-n", type=int, default=10000)
    s.add_argument("--dataset", default="fashion-mnist")
    s.add_argument("--threads", type=int)
    c = sub.add_parser("compare")
    c.add_argument("--minutes", type=float, default=5.0)
    c.add_argument("--out", default="runs/bench-compare")
    c.add_argument("-n", type=int, default=10000)
    c.add_argument("--skip-train", action="store_true")
    pl = sub.add_parser("plain")
    pl.add_argument("runs", nargs="+", type=Path)
    pl.add_argument("--cold", action="store_true", help="skip the untimed first pass that fills the reference cache")
    a = p.parse_args()
    if a.what == "speed":
        speed(a.n, a.dataset, a.threads)
    elif a.what == "plain":
        plain(a.runs, warm=not a.cold)
    else:
        compare(a.minutes, Path(a.out), a.n, a.skip_train)


if __name__ == "__main__":
    main()
