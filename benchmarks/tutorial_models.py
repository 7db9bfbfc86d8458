"""Issue 15: the tutorials' own models beside the tuned family defaults on Fashion-MNIST.

Each model trains for ``--minutes`` wall-clock minutes (``genmodels train NAME --dataset fashion-mnist
--max-time M``) and is scored with the shared protocol (``genmodels evaluate RUN -n 10000``: 10,000 samples
against the 10,000 test images on the Fashion-MNIST feature net). The table gives FID, precision, recall,
the share of the 10 classes covered, the steps the minutes bought, and for the VAEs how far their test codes
are from the N(0, I) they sample from (the norm of the codes' mean and the largest deviation of a code's
standard deviation from 1): the broken objective's lesson in two numbers.

usage:
  python benchmarks/tutorial_models.py [--models keras-gan-1h,tf-gan,tutorial-vae,broken-vae] [--minutes 5]
                                       [--out runs/bench-tutorials] [--n 10000] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

DEFAULT = "keras-gan-1h,tf-gan,tutorial-vae,broken-vae"


def code_fit(run) -> tuple[float, float] | None:
    """(|mean of the test codes|, max |std - 1|) for a model with an encoder, else None."""
    from genmodels.models.base import Encodable

    if not isinstance(run.model, Encodable):
        return None
    test = run.load_data("test")
    x = torch.from_numpy(test.images[:5000]).float().div(255.0)
    with torch.no_grad():
        z = run.model.encode(x)
    return round(z.mean(0).norm().item(), 3), round((z.std(0) - 1).abs().max().item(), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default="runs/bench-tutorials")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args()

    from genmodels.api import load_run, train
    from genmodels.eval import evaluate_run

    rows = []
    for name in a.models.split(","):
        out = Path(a.out) / name
        if not a.skip_train:
            train(name, "fashion-mnist", max_time=a.minutes, out=out, progress=False)
        rep = evaluate_run(out, n=a.n, progress=False)
        run = load_run(out)
        rows.append(
            {
                "model": name,
                "steps": rep["step"],
                "minutes": round(run.meta["wall_time_s"] / 60, 1),
                "fid": round(rep["fid"], 2),
                "precision": round(rep["precision"], 3),
                "recall": round(rep["recall"], 3),
                "classes": rep.get("class_coverage", {}).get("covered"),
                "codes_vs_prior": code_fit(run),
            }
        )
        print(rows[-1], flush=True)
    lines = ["| model | minutes | steps | FID | precision | recall | classes | codes: mean norm, max std dev |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        fit = "" if r["codes_vs_prior"] is None else f"{r['codes_vs_prior'][0]}, {r['codes_vs_prior'][1]}"
        lines.append(
            f"| `{r['model']}` | {r['minutes']} | {r['steps']:,} | {r['fid']} | {r['precision']} | {r['recall']} "
            f"| {r['classes']} | {fit} |"
        )
    print("\n".join(lines))
    Path(a.out, "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
