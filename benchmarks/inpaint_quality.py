"""Issue 13, point 1: how well each family inpaints held-out images, against the trivial baseline.

The last ``--n`` test images (disjoint from the first ``--n``, which are the FID reference) get a mask
(``--masks``: ``center`` hides the middle square of half the side, ``bottom`` the lower half, ...); each
trained run (``--runs family=RUN_DIR,...``) fills them once with its method (``genmodels inpaint``:
diffusion by RePaint, vae / autoencoder by the latent fit, pixelcnn / pixelsnail by sampling the bottom
rows; an autoregressive run skips masks that are not a raster suffix). Per method and mask:

* the mean squared error on the hidden pixels (grey levels in [0, 1]), against the originals;
* the FID of the completed images against the first ``--n`` test images on the dataset's feature net
  (``genmodels evaluate --samples``' protocol), with KID, precision and recall;
* seconds per 1,000 images.

Baselines: the mean training image pasted into the hole, and the originals themselves (the real-vs-real
floor of the FID at this n).

usage:
  python benchmarks/inpaint_quality.py --runs diffusion=runs/ddpm,vae=runs/vae,autoencoder=runs/ae,pixelcnn=runs/pcnn
                                       [--dataset fashion-mnist] [--n 1000] [--masks center,bottom]
                                       [--out runs/bench-inpaint] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def score(name: str, mask: str, fills: torch.Tensor, originals: torch.Tensor, hidden: torch.Tensor, a, secs):
    from genmodels.eval.report import evaluate_samples

    mse = (fills - originals).square()[hidden.expand_as(originals)].mean().item()
    out = Path(a.out) / f"{name}-{mask}"
    rep = evaluate_samples(fills, a.dataset, out=out, n=len(fills), name=f"{name} ({mask})", progress=False)
    return {
        "method": name,
        "mask": mask,
        "hidden_mse": round(mse, 5),
        "fid": rep.get("fid"),
        "kid": rep.get("kid", {}).get("mean"),
        "precision": rep.get("precision"),
        "recall": rep.get("recall"),
        "s_per_1000": None if secs is None else round(1000 * secs / len(fills), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="family=RUN_DIR,... (any name: it labels the row)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--masks", default="center,bottom")
    ap.add_argument("--out", default="runs/bench-inpaint")
    ap.add_argument("--set", action="append", default=[], metavar="RUN:KEY=VALUE", help="an inpainting option")
    a = ap.parse_args()

    from genmodels.data import load_dataset
    from genmodels.errors import ConfigError
    from genmodels.runs import load_run
    from genmodels.viz import save_grid
    from genmodels.viz.inpainting import inpaint_images, inpaint_sheet, named_mask

    test = load_dataset(a.dataset, "test")
    train = load_dataset(a.dataset, "train")
    x = torch.from_numpy(test.images[-a.n :]).float().div(255.0)
    mean = torch.from_numpy(train.images).float().div(255.0).mean(0, keepdim=True)
    h, w = x.shape[2:]
    runs = dict(item.split("=", 1) for item in a.runs.split(",") if item)
    options: dict[str, dict[str, str]] = {}
    for item in a.set:
        who, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        options.setdefault(who, {})[key] = value
    rows = []
    for mask in a.masks.split(","):
        keep = named_mask(mask, len(x), h, w, torch.Generator().manual_seed(0))
        hidden = ~keep.bool()
        rows.append(score("originals (floor)", mask, x, x, hidden, a, None))
        rows.append(score("mean image pasted", mask, torch.where(hidden, mean, x), x, hidden, a, None))
        for name, path in runs.items():
            run = load_run(path)
            y = torch.from_numpy(test.labels[-a.n :]) if run.model.conditional and test.labels is not None else None
            g = torch.Generator(device=run.device).manual_seed(0)
            t0 = time.perf_counter()
            try:
                res = inpaint_images(run.model, x, keep, samples=1, generator=g, labels=y, **options.get(name, {}))
            except ConfigError as e:
                print(f"{name} {mask}: {e}", flush=True)
                continue
            secs = time.perf_counter() - t0
            save_grid(inpaint_sheet(res._replace(images=res.images[:8], keep=res.keep[:8], fills=res.fills[:8])),
                      Path(a.out) / f"{name}-{mask}.png", nrow=3)  # fmt: skip
            rows.append(score(name, mask, res.fills[:, 0], x, hidden, a, secs))
            print(json.dumps(rows[-1]), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "inpaint.json").write_text(json.dumps(rows, indent=1))
    print("| method | mask | MSE on hidden pixels | FID | KID x1e3 | precision | recall | s / 1,000 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        kid = "" if r["kid"] is None else f"{1000 * r['kid']:.1f}"
        secs = "" if r["s_per_1000"] is None else f"{r['s_per_1000']:.1f}"
        print(
            f"| {r['method']} | {r['mask']} | {r['hidden_mse']:.4f} | {r['fid']:.2f} | {kid} "
            f"| {r['precision']:.3f} | {r['recall']:.3f} | {secs} |"
        )


if __name__ == "__main__":
    main()
