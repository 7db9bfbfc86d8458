"""Issue 13, point 3: image-to-image translation measured, Google's emoji to Twitter's.

Each translator trains for ``--minutes`` wall-clock minutes (``genmodels train NAME --max-time M``) at
``--size`` px:

* ``pix2pix`` on ``pair:emoji,twemoji`` (each emoji beside its own twin, by code point);
* ``cyclegan`` on ``unpaired:emoji,twemoji`` (the same two sets with the pairs broken: it never sees which
  Twitter emoji belongs to which Google one);
* ``cyclegan-resnet``: the same with the paper's ResNet generator (``model.generator=resnet``) in place of
  the U-Net;
* ``cyclegan-noid``: the U-Net CycleGAN without the identity loss (``model.identity_weight=0``);
* ``l1-unet``, the regression baseline: pix2pix's U-Net on the L1 loss alone, on the pairs;

all three with the translation family's training settings (batch 16, Adam 2e-4 / 0.5 for the GANs, bf16
autocast where this CPU has it).

Each is scored on the test split of ``pair:emoji,twemoji`` (``genmodels.eval.translation``): the FID, KID,
precision and recall of the translated test emoji against Twitter's drawings of them (feature space: the
emoji net), and the mean absolute pixel error to each one's own twin (L1, grey levels in [0, 1]). The
``input`` row scores the untranslated Google emoji the same way (doing nothing). Writes ``table.md``,
``table.json`` and ``sheet.png`` (10 test emoji: Google's, each model's translation, Twitter's).

usage:
  python benchmarks/translation_quality.py [--minutes 10] [--size 64] [--out runs/bench-translate]
                                           [--models pix2pix,cyclegan,cyclegan-noid,l1-unet] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

PAIRS = "pair:emoji,twemoji"
DATA = {"pix2pix": PAIRS, "cyclegan": "unpaired:emoji,twemoji", "l1-unet": PAIRS}
# Variants measured under their own names: (registered model, overrides).
VARIANTS = {
    "cyclegan-resnet": ("cyclegan", {"model.generator": "resnet"}),
    "cyclegan-noid": ("cyclegan", {"model.identity_weight": 0.0}),  # no identity loss: free to leave the input
}
# The translation family's recommended training settings (configs/translation.yaml), for all three alike.
RECIPE = {"train.batch_size": 16, "train.precision": "auto", "train.sample_every": 500, "train.ckpt_every": 1000}


def row(name: str, r: dict, minutes: float | None = None, steps: int | None = None) -> str:
    kid = r["kid"]
    cells = [
        name,
        f"{minutes:.1f}" if minutes is not None else "",
        f"{steps:,}" if steps is not None else "",
        f"{r['fid']:.2f}",
        f"{1000 * kid['mean']:.1f} ± {1000 * kid['std']:.1f}",
        f"{r['precision']:.3f}",
        f"{r['recall']:.3f}",
        f"{r['l1']:.4f}" if "l1" in r else "",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--models", default="pix2pix,cyclegan,l1-unet")
    ap.add_argument("--out", default="runs/bench-translate")
    ap.add_argument("--skip-train", action="store_true", help="score the runs already in --out")
    a = ap.parse_args()

    from genmodels.api import load_run, train
    from genmodels.eval.translation import evaluate_translation
    from genmodels.viz import save_grid
    from genmodels.viz.translation import split_pairs, translate_images

    out = Path(a.out)
    models = [m for m in a.models.split(",") if m]
    lines = [
        f"Google's emoji to Twitter's, {a.size} px: test split of {PAIRS}, scored against Twitter's drawings",
        "",
        "| model | minutes | steps | FID | KID x1e-3 | precision | recall | L1 to the twin |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    results: dict[str, dict] = {}
    baseline = None
    for name in models:
        run_dir = out / name
        if not a.skip_train:
            model, extra = VARIANTS.get(name, (name, {}))
            train(
                model,
                DATA[model],
                max_time=a.minutes,
                out=run_dir,
                progress=False,
                overrides={**RECIPE, "data.image_size": a.size, **extra},
            )
        meta = json.loads((run_dir / "run.json").read_text())
        rep = evaluate_translation(run_dir, dataset=PAIRS, out=run_dir / "translation-pairs.json")
        fwd = rep["directions"]["forward"]
        results[name] = {"minutes": meta["wall_time_s"] / 60, "steps": meta["steps"], **fwd}
        baseline = fwd["input"]
        print(row(name, fwd["translated"], meta["wall_time_s"] / 60, meta["steps"]), flush=True)
    if baseline is not None:
        lines.append(row("input (untranslated Google emoji)", baseline))
    for name in models:
        r = results[name]
        lines.append(row(name, r["translated"], r["minutes"], r["steps"]))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))
    if models:
        from dataclasses import replace

        from genmodels.runs import load_data

        run = load_run(out / models[0])
        ds = load_data(replace(run.data_config, dataset=PAIRS, limit=None), "test")
        pick = torch.linspace(0, len(ds) - 1, 10).long()
        a_img, b_img = split_pairs(torch.from_numpy(ds.images[pick.numpy()]).float() / 255)
        rows = [a_img] + [translate_images(load_run(out / m).model, a_img) for m in models] + [b_img]
        save_grid(torch.cat(rows), out / "sheet.png", nrow=10)
        print(f"sheet: rows Google, {', '.join(models)}, Twitter -> {out / 'sheet.png'}")


if __name__ == "__main__":
    main()
