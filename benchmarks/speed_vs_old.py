"""Every family's recommended default, trained for the same minutes by this tree and by an older commit,
side by side in one run: images per second and quality after equal CPU-minutes.

For each family, ``genmodels train FAMILY --dataset D --max-time M`` runs once with the old commit's ``src``
(exported with ``git archive``) and once with this tree, one after the other in separate processes (which
goes first alternates between families), nothing else running; then ``genmodels evaluate RUN -n N`` scores
both with this tree's evaluation. Reported per family:

* images/s over the whole run: steps x batch / wall time, with the step probe and any compile inside it;
* images/s in steady state: the median of the logged windows (``metrics.jsonl``) after the first 20% of steps;
* FLOPs per image of a training step (torch's counter, this tree) and the share of the fp32 and the bf16
  matmul peaks measured in the same run (``bench_models.matmul_peak``), at the steady-state rate;
* the family's quality after the same minutes: FID (and the test NLL where the model has one);
* how this tree ran the step (``run.json`` ``training_step``: precision, layout, compiled, and why).

usage: python benchmarks/speed_vs_old.py --against REV [--minutes 3] [--families autoencoder vae ...]
       [--n 1000] [--out DIR] [--json FILE]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

FAMILIES = {  # family -> dataset its default is measured on
    "autoencoder": "fashion-mnist",
    "vae": "fashion-mnist",
    "gan": "fashion-mnist",
    "pixelcnn": "fashion-mnist",
    "diffusion": "fashion-mnist",
    "translation": "edges:fashion-mnist",
}


def genmodels(src: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "genmodels", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def read_run(run: Path) -> dict:
    meta = json.loads((run / "run.json").read_text())
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rates = [r["images_per_s"] for r in recs if "images_per_s" in r]
    steps = int(meta["steps"])
    late = [r["images_per_s"] for r in recs if "images_per_s" in r and r["step"] > 0.2 * steps]
    cfg = (run / "config.yaml").read_text()
    import yaml

    batch = int(yaml.safe_load(cfg)["train"]["batch_size"])
    return {
        "steps": steps,
        "batch_size": batch,
        "wall_s": float(meta["wall_time_s"]),
        "images_per_s_run": steps * batch / float(meta["wall_time_s"]),
        "images_per_s_steady": statistics.median(late or rates) if (late or rates) else None,
        "training_step": meta.get("training_step"),
    }


def quality(run: Path) -> dict:
    path = run / "eval.json"
    if not path.exists():  # a translator's evaluation: translation.json, the FID of its translations
        tr = run / "translation.json"
        if not tr.exists():
            return {}
        import re

        for line in json.loads(tr.read_text()).get("summary_lines", []):
            if m := re.search(r", translated: FID ([0-9.]+)", line):
                return {"fid": float(m.group(1))}
        return {}
    rep = json.loads(path.read_text())
    out = {}

    def find(d, key):
        if isinstance(d, dict):
            if key in d and isinstance(d[key], int | float):
                return d[key]
            for v in d.values():
                got = find(v, key)
                if got is not None:
                    return got
        return None

    for key in ("fid", "bits_per_dim", "nll_bits_per_dim"):
        v = find(rep, key)
        if v is not None:
            out[key] = v
    return out


def flops_per_image(family: str, dataset: str) -> float | None:
    """FLOPs of one training step of the family default per image (this tree), or None where not countable."""
    if dataset != "fashion-mnist":
        return None
    from bench_models import flops_per_image as count

    from genmodels.data import load_dataset
    from genmodels.models import make_config, model_spec
    from genmodels.training.batches import images_tensor
    from genmodels.training.config import TrainConfig, family_defaults
    from genmodels.training.trainer import Trainer

    fam = family_defaults(family)
    ds = load_dataset(dataset, "test")
    cfg = make_config(fam["model_name"], {**fam.get("model", {}), "image_shape": list(ds.shape), "num_classes": 10})
    model = model_spec(fam["model_name"]).build(cfg)
    tc = {k: v for k, v in fam.get("train", {}).items() if k in TrainConfig.__dataclass_fields__}
    tc.update(steps=1, max_time=None, progress=False, sample_every=0, ckpt_every=0)
    trainer = Trainer(model, images_tensor(ds.images[:512]), torch.from_numpy(ds.labels[:512]), TrainConfig(**tc))
    return count(trainer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", required=True, help="the older commit (e.g. the one before the speed work)")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--n", type=int, default=1000, help="samples per evaluation")
    ap.add_argument("--out", default="runs/speed-vs-old")
    ap.add_argument("--json")
    a = ap.parse_args()
    from bench_models import matmul_peak

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        old_src = export(a.against, Path(tmp))
        sides = {"old": old_src, "new": ROOT / "src"}
        for i, family in enumerate(a.families):
            dataset = FAMILIES[family]
            row: dict = {"family": family, "dataset": dataset}
            order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
            for side in order:
                run = out / f"{family}-{side}"
                if run.exists():
                    raise SystemExit(f"{run} exists: choose another --out")
                t0 = time.perf_counter()
                args = ["train", family, "--dataset", dataset, "--max-time", str(a.minutes), "--out", str(run)]
                res = genmodels(sides[side], *args, "--no-progress", timeout=60 * a.minutes * 3 + 600)
                if res.returncode != 0:
                    raise SystemExit(f"{side} {family}: {res.stderr.strip().splitlines()[-1]}")
                row[side] = {**read_run(run), "process_s": time.perf_counter() - t0}
            for side in ("old", "new"):
                run = out / f"{family}-{side}"
                res = genmodels(ROOT / "src", "evaluate", str(run), "-n", str(a.n), timeout=3600)
                row[side]["quality"] = quality(run) if res.returncode == 0 else {"error": res.stderr.strip()[-300:]}
            row["flops_per_image"] = flops_per_image(family, dataset)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; matmul peaks measured in this run: "
        f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s; {a.minutes:g} minutes per run\n"
    )
    print(
        "| family | old images/s (run / steady) | new images/s (run / steady) | speed-up (run / steady) | "
        "MFLOP/image | new share of fp32 / bf16 peak | old FID | new FID | new step |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        o, n = r["old"], r["new"]
        f = r["flops_per_image"]
        share = "-"
        if f and n["images_per_s_steady"]:
            g = f * n["images_per_s_steady"] / 1e9
            share = f"{100 * g / peaks['fp32']:.0f}% / {100 * g / peaks['bf16']:.0f}%"
        sp_run = n["images_per_s_run"] / o["images_per_s_run"]
        sp_st = (n["images_per_s_steady"] or 0) / (o["images_per_s_steady"] or float("inf"))
        step = (n.get("training_step") or {}).get("plan", "-")
        print(
            f"| {r['family']} | {o['images_per_s_run']:,.0f} / {o['images_per_s_steady'] or 0:,.0f} | "
            f"{n['images_per_s_run']:,.0f} / {n['images_per_s_steady'] or 0:,.0f} | {sp_run:.2f}x / {sp_st:.2f}x | "
            f"{f / 1e6 if f else float('nan'):.1f} | {share} | {o['quality'].get('fid', float('nan')):.2f} | "
            f"{n['quality'].get('fid', float('nan')):.2f} | {step} |"
        )
    if a.json:
        Path(a.json).write_text(json.dumps({"peaks_gflops": peaks, "rows": rows, "against": a.against}, indent=1))


if __name__ == "__main__":
    main()
