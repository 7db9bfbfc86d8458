"""Issue 14, point 2: a VQ-VAE with a learned autoregressive prior over its codes, on Fashion-MNIST.

1. ``genmodels train vq-vae --dataset fashion-mnist`` (the model's defaults, or ``--vq-steps`` / ``--vq-minutes``);
   scored on the test split: reconstruction MSE, codebook usage (share of the codes used by the test images'
   code grids) and perplexity exp(H) of those codes, and samples with every code drawn independently by its
   frequency (the VQ-VAE's own ``sample``: the baseline a prior must beat).
2. For each of ``--priors`` (default ``pixelsnail`` and ``masked-pixelcnn``): ``genmodels train PRIOR --prior-of
   VQ_RUN`` (the model's defaults, or ``--prior-steps`` / ``--prior-minutes``); the prior's exact NLL of the
   test images' code grids in bits per code (against log2(codebook size) for uniform codes and the unigram
   entropy of the training codes), and samples decoded by the VQ-VAE.
3. ``--pixel-runs NAME=RUN_DIR``: pixel-level autoregressive runs (e.g. the PixelCNN default) scored the same way
   for the same table.

Samples: ``--n`` of each, FID, KID, precision and recall against as many test images on the Fashion-MNIST
feature net (``genmodels evaluate RUN -n N``), and the seconds per 1,000 samples of that draw. Writes
``table.md`` and ``table.json`` into ``--out``.

usage:
  python benchmarks/vqvae_quality.py [--out runs/bench-vqvae] [--n 1000] [--priors pixelsnail,masked-pixelcnn]
                                     [--pixel-runs pixelsnail=runs/snail-10min --pixel-runs pixelcnn=runs/pcnn]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from genmodels.api import load_run, train
from genmodels.eval.likelihood import likelihood_report
from genmodels.eval.report import evaluate_run
from genmodels.runs import code_dataset, load_data, read_meta

DATASET = "fashion-mnist"


def limits(steps: int | None, minutes: float | None) -> dict:
    """train() keyword arguments: the model's default step count unless a limit is given."""
    if minutes is not None:
        return {"max_time": minutes, "overrides": {"train.steps": None}}
    return {"steps": steps, "overrides": {}} if steps is not None else {"overrides": {}}


def code_stats(vq_dir: Path) -> dict:
    """Codebook usage and perplexity of the test images' codes, and the unigram entropy of the training codes."""
    run = load_run(vq_dir, device="cpu")
    size = run.config["model"]["codebook_size"]
    out: dict = {"codebook_size": size}
    for split in ("train", "test"):
        # The very code grids a prior trains on (``codes:RUN_DIR``), (N, 1, h, w) uint8.
        codes = torch.from_numpy(code_dataset(str(vq_dir), split).images)[:, 0].long()
        if split == "test":  # decode the codes: the reconstruction's mean squared error, pixels in [0, 1]
            x = torch.from_numpy(run.load_data(split).images).float().div_(255.0)
            recon = torch.cat([run.model.decode_codes(codes[i : i + 1000]) for i in range(0, len(x), 1000)])
            out["reconstruction_mse"] = float((recon - x).pow(2).mean())
        counts = torch.bincount(codes.flatten(), minlength=size).double()
        p = counts / counts.sum()
        entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
        out[split] = {
            "used": int((counts > 0).sum()),
            "usage": float((counts > 0).double().mean()),
            "perplexity": math.exp(entropy),
            "entropy_bits": entropy / math.log(2),
        }
    return out


def score(run_dir: Path, n: int) -> dict:
    rep = evaluate_run(run_dir, n=n, progress=False, cas=False)
    keep = ("fid", "kid", "precision", "recall", "seconds_per_1000_samples", "reconstruction_mse", "wall_time_s")
    return {k: rep[k] for k in keep if k in rep}


def prior_bits_per_code(prior_dir: Path) -> float:
    """The prior's exact NLL of the test images' code grids, in bits per code."""
    run = load_run(prior_dir, device="cpu")
    # Run.load_data gives a prior's VQ-VAE images (what its samples imitate); the codes are its own data.
    codes = load_data(run.data_config, "test")
    x = torch.from_numpy(codes.images).float().div_(255.0)
    return float(likelihood_report(run.model.prior, x, None, seed=0)["bpd"]["exact"])


def row(name: str, training: str, r: dict, extra: str = "") -> str:
    kid = r.get("kid") or {}
    cells = [
        name,
        training,
        f"{r['reconstruction_mse']:.4f}" if "reconstruction_mse" in r else "",
        extra,
        f"{r['fid']:.2f}",
        f"{1000 * kid.get('mean', float('nan')):.1f} ± {1000 * kid.get('std', float('nan')):.1f}",
        f"{r['precision']:.3f}",
        f"{r['recall']:.3f}",
        f"{r['seconds_per_1000_samples']:.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-vqvae")
    ap.add_argument("--n", type=int, default=1000, help="samples per model, and test images they are scored on")
    ap.add_argument("--vq-steps", type=int)
    ap.add_argument("--vq-minutes", type=float)
    ap.add_argument("--priors", default="pixelsnail,masked-pixelcnn")
    ap.add_argument("--prior-steps", type=int)
    ap.add_argument("--prior-minutes", type=float)
    ap.add_argument("--pixel-runs", action="append", default=[], metavar="NAME=RUN_DIR")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    vq_dir = out / "vq-vae"
    if not (vq_dir / "run.json").exists():
        lim = limits(a.vq_steps, a.vq_minutes)
        train("vq-vae", DATASET, out=vq_dir, seed=a.seed, progress=False, **lim)
    meta = read_meta(vq_dir)
    stats = code_stats(vq_dir)
    results["vq-vae"] = {
        "reconstruction_mse": stats["reconstruction_mse"],
        "steps": meta["steps"],
        "minutes": meta["wall_time_s"] / 60,
        "codes": stats,
        **score(vq_dir, a.n),
    }
    print(json.dumps(results["vq-vae"]), flush=True)
    for prior in [p for p in a.priors.split(",") if p]:
        pdir = out / f"prior-{prior}"
        if not (pdir / "run.json").exists():
            lim = limits(a.prior_steps, a.prior_minutes)
            train(prior, "codes:" + str(vq_dir), out=pdir, seed=a.seed, progress=False, **lim)
        pmeta = read_meta(pdir)
        t0 = time.time()
        bits = prior_bits_per_code(pdir)
        results[f"prior-{prior}"] = {
            "steps": pmeta["steps"],
            "minutes": pmeta["wall_time_s"] / 60,
            "bits_per_code": bits,
            "nll_seconds": round(time.time() - t0, 1),
            **score(pdir, a.n),
        }
        print(json.dumps(results[f"prior-{prior}"]), flush=True)
    for spec in a.pixel_runs:
        name, _, path = spec.partition("=")
        pmeta = read_meta(Path(path))
        results[f"pixel-{name}"] = {
            "steps": pmeta["steps"],
            "minutes": pmeta["wall_time_s"] / 60,
            **score(Path(path), a.n),
        }
        print(json.dumps(results[f"pixel-{name}"]), flush=True)

    size = stats["codebook_size"]
    test = stats["test"]
    lines = [
        f"VQ-VAE and priors on {DATASET}: {a.n} samples each against {a.n} test images (the fashion-mnist net); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "",
        f"Codebook: {test['used']} of {size} codes used by the test images (perplexity {test['perplexity']:.1f}); "
        f"uniform codes {math.log2(size):.2f} bits, unigram entropy of the training codes "
        f"{stats['train']['entropy_bits']:.2f} bits per code",
        "",
        "| model | training | reconstruction MSE | prior NLL (bits / code) | FID | KID x1e3 | precision | recall "
        "| s / 1,000 samples |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def training(r: dict) -> str:
        return f"{r['minutes']:.1f} min, {r['steps']:,} steps"

    v = results["vq-vae"]
    lines.append(row("vq-vae, codes drawn independently by frequency", training(v), v))
    for key, r in results.items():
        if key.startswith("prior-"):
            name = f"vq-vae + {key[len('prior-') :]} prior"
            lines.append(row(name, f"vq-vae + {training(r)}", r, f"{r['bits_per_code']:.3f}"))
        elif key.startswith("pixel-"):
            lines.append(row(f"{key[len('pixel-') :]} on pixels", training(r), r))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(results, indent=1, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
