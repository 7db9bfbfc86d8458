"""Issue 13, point 2: how well editing works, measured on held-out images.

* SDEdit (``--sdedit RUN``, a diffusion run): the last ``--n`` test images edited at each strength of
  ``--strengths``. Faithfulness: the mean squared pixel distance to the input (grey levels in [0, 1]) and
  the share of edits the feature net gives the input's class. Realism: the FID of the edits against the
  first ``--n`` test images. Strength 0 is the inputs themselves (the floor), strength 1 a fresh sample.
* Class-guided editing (``--guided RUN``, a conditional diffusion run, at each of ``--guided-strength``
  with classifier-free guidance ``--guidance``) and latent arithmetic (``--latent RUN``, repeatable: a
  VAE or autoencoder run, or a GAN run through generator inversion): the test images of ``--from-class``
  among the last ``--n`` edited towards ``--to-class`` (Fashion-MNIST: 0 T-shirt/top to 3 dress).
  Measured: the share the feature net calls the target class, the pixel distance to the input, and the FID
  against the target class's test images.

usage:
  python benchmarks/edit_quality.py --sdedit runs/ddpm [--guided runs/cddpm] [--latent runs/vae]
                                    [--latent runs/gan] [--dataset fashion-mnist] [--n 1000]
                                    [--strengths 0.2,0.4,0.6,0.8,1.0] [--from-class 0] [--to-class 3]
                                    [--guided-strength 0.4,0.6,0.8,1.0] [--guidance 1.0]
                                    [--out runs/bench-edit]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def fid_of(images: torch.Tensor, reference: torch.Tensor, net) -> float:
    from genmodels.eval.metrics import fid

    return fid(net.features(reference), net.features(images))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdedit")
    ap.add_argument("--guided")
    ap.add_argument("--latent", action="append", default=[])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--strengths", default="0.2,0.4,0.6,0.8,1.0")
    ap.add_argument("--from-class", type=int, default=0)
    ap.add_argument("--to-class", type=int, default=3)
    ap.add_argument("--guided-strength", default="0.4,0.6,0.8,1.0")
    ap.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the run's)")
    ap.add_argument("--out", default="runs/bench-edit")
    a = ap.parse_args()

    from genmodels.data import load_dataset
    from genmodels.eval import load_feature_net
    from genmodels.runs import load_run
    from genmodels.viz import save_grid
    from genmodels.viz.editing import class_codes, edit_sheet, latent_edit_images, sdedit_images

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    test = load_dataset(a.dataset, "test")
    net = load_feature_net(a.dataset)
    x = torch.from_numpy(test.images[-a.n :]).float().div(255.0)
    y = torch.from_numpy(test.labels[-a.n :]).long()
    ref = torch.from_numpy(test.images[: a.n]).float().div(255.0)
    rows: list[dict] = []

    if a.sdedit:
        run = load_run(a.sdedit)
        rows.append({"method": "inputs (strength 0)", "mse": 0.0, "same_class": 1.0, "fid": fid_of(x, ref, net)})
        for s in (float(v) for v in a.strengths.split(",")):
            t0 = time.perf_counter()
            g = torch.Generator(device=run.device).manual_seed(0)
            edits = torch.cat(
                [sdedit_images(run.model, x[i : i + 250], s, samples=1, generator=g).edits[:, 0]
                 for i in range(0, len(x), 250)]
            )  # fmt: skip
            secs = time.perf_counter() - t0
            row = {
                "method": f"SDEdit {s:g}",
                "t": run.model.edit_timestep(s),
                "mse": round((edits - x).square().mean().item(), 5),
                "same_class": round((net.classify(edits) == y).float().mean().item(), 4),
                "fid": round(fid_of(edits, ref, net), 3),
                "s_per_1000": round(1000 * secs / len(x), 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            save_grid(torch.stack([x[:8], edits[:8]], 1).flatten(0, 1), out / f"sdedit-{s:g}.png", nrow=2)

    src = x[y == a.from_class]
    tgt_ref = torch.from_numpy(test.images[test.labels == a.to_class]).float().div(255.0)
    if a.guided or a.latent:
        rows.append(
            {
                "method": f"inputs: class {a.from_class} as they are",
                "target_class": round((net.classify(src) == a.to_class).float().mean().item(), 4),
                "mse": 0.0,
                "fid_vs_target": round(fid_of(src, tgt_ref, net), 3),
            }
        )
    if a.guided:
        run = load_run(a.guided)
        labels = torch.full((len(src),), a.to_class)
        for strength in (float(v) for v in a.guided_strength.split(",")):
            g = torch.Generator(device=run.device).manual_seed(0)
            t0 = time.perf_counter()
            res = sdedit_images(run.model, src, strength, samples=1, generator=g, labels=labels, guidance=a.guidance)
            secs = time.perf_counter() - t0
            edits = res.edits[:, 0]
            guide = f", guidance {a.guidance:g}" if a.guidance is not None else ""
            rows.append(
                {
                    "method": f"class-guided SDEdit {strength:g}{guide} to class {a.to_class}",
                    "target_class": round((net.classify(edits) == a.to_class).float().mean().item(), 4),
                    "mse": round((edits - src).square().mean().item(), 5),
                    "fid_vs_target": round(fid_of(edits, tgt_ref, net), 3),
                    "s_per_1000": round(1000 * secs / len(src), 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            sheet = edit_sheet(res._replace(images=res.images[:8], edits=res.edits[:8]))
            save_grid(sheet, out / f"guided-{strength:g}.png", nrow=2)
    train = load_dataset(a.dataset, "train") if a.latent else None
    for path in a.latent:
        run = load_run(path)
        g = torch.Generator(device=run.device).manual_seed(0)
        t0 = time.perf_counter()
        codes = (
            None
            if run.model.conditional
            else class_codes(run.model, train.images, train.labels, 10, classes=[a.from_class, a.to_class], generator=g)
        )
        s_, t_ = torch.full((len(src),), a.from_class), torch.full((len(src),), a.to_class)
        t1 = time.perf_counter()
        res = latent_edit_images(run.model, src, s_, t_, codes, generator=g)
        secs = time.perf_counter() - t1
        edits = res.edits[:, 0]
        rows.append(
            {
                "method": f"{run.model_name} latent arithmetic to class {a.to_class}",
                "target_class": round((net.classify(edits) == a.to_class).float().mean().item(), 4),
                "mse": round((edits - src).square().mean().item(), 5),
                "fid_vs_target": round(fid_of(edits, tgt_ref, net), 3),
                "s_per_1000": round(1000 * secs / len(src), 1),
                "directions_s": round(t1 - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        sheet = edit_sheet(res._replace(images=res.images[:8], edits=res.edits[:8]))
        save_grid(sheet, out / f"latent-{run.model_name}.png", nrow=2)
    (out / "edit.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(" | ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
