"""Issue 4, point 5: the default GAN trained for 10 CPU-minutes against the classic MLP GAN after its full
classic run (2,000 iterations of batch 32), both on Fashion-MNIST, both scored by the one evaluation
protocol (``genmodels evaluate``: FID, precision / recall and class coverage on the Fashion-MNIST
feature net, 10,000 samples against the 10,000 test images).

Targets: FID(default) at least 10x lower than FID(classic), all 10 classes present in the default's
samples, recall above 0.5. Prints both FIDs, precision / recall, class coverage and both wall times,
and writes them to OUT/gan_quality.json.

usage: python benchmarks/gan_quality.py [--out runs/gan-quality] [--minutes 10] [-n 10000] [--eval-only]
Run it on a quiet machine: the default GAN's budget is wall-clock minutes of training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLASSIC = ROOT / "configs" / "gan-mlp-classic.yaml"


def train_runs(out: Path, minutes: float) -> None:
    """The classic run, exactly as configs/gan-mlp-classic.yaml says, and the default ``gan`` for ``minutes``."""
    from genmodels.api import train

    train("gan-mlp", "fashion-mnist", config=str(CLASSIC), out=out / "classic", progress=False)
    train("gan", "fashion-mnist", max_time=minutes, out=out / "default", progress=False)


def evaluate(run_dir: Path, n: int) -> dict:
    """``genmodels evaluate RUN -n N``'s report (eval.json), or an explanation when metrics are missing."""
    from genmodels.eval import evaluate_run

    report = evaluate_run(run_dir, n=n)
    if "fid" not in report:
        why = report.get("sample_metrics_skipped", "no sample metrics in eval.json")
        raise SystemExit(f"error: {run_dir}: {why}")
    return report


def summary(report: dict) -> dict:
    cc = report["class_coverage"]
    return {
        "fid": report["fid"],
        "precision": report["precision"],
        "recall": report["recall"],
        "classes_covered": cc["covered"],
        "classes_present": sum(1 for p in cc["histogram"] if p > 0),
        "class_histogram": cc["histogram"],
        "steps": report["step"],
        "wall_time_s": report["wall_time_s"],
        "weights": report["weights"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gan-quality")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget of the default gan")
    ap.add_argument("-n", type=int, default=10000, help="samples (and test images) per evaluation")
    ap.add_argument("--eval-only", action="store_true", help="evaluate OUT/classic and OUT/default as they are")
    a = ap.parse_args()
    out = Path(a.out)
    if not a.eval_only:
        for sub in ("classic", "default"):
            if (out / sub).exists():
                raise SystemExit(f"error: {out / sub} exists; pick another --out or pass --eval-only")
        train_runs(out, a.minutes)
    rows = {name: summary(evaluate(out / name, a.n)) for name in ("classic", "default")}
    c, d = rows["classic"], rows["default"]
    ratio = c["fid"] / d["fid"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Fashion-MNIST, {a.n} samples each\n")
    print("| run | steps | wall time | FID | precision | recall | classes present | classes covered |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} ({r['weights']} weights) | {r['steps']} | {r['wall_time_s']:.0f} s | {r['fid']:.3f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {r['classes_present']}/10 | "
            f"{100 * r['classes_covered']:.0f}% |"
        )
    checks = {
        "FID at least 10x lower than the classic run's": ratio >= 10.0,
        "all 10 classes present": d["classes_present"] == 10,
        "recall above 0.5": d["recall"] > 0.5,
    }
    print(f"\nFID ratio classic / default: {ratio:.1f}x")
    for what, ok in checks.items():
        print(f"  [{'x' if ok else ' '}] {what}")
    (out / "gan_quality.json").write_text(json.dumps({"runs": rows, "fid_ratio": ratio, "checks": checks}, indent=1))
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
