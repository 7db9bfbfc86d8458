"""Issue 6, point 6: FID and seconds per 1,000 samples for 1,000 ancestral DDPM steps and for DDIM and
DPM-Solver++(2M) at 10, 20 and 50 steps, all from one trained run, measured side by side in one process.
Issue 11, point 10: beside the feature-net metrics, the pixel statistics of ``genmodels.eval.metrics.pixel_stats``
against the whole test split: share of pixels exactly 0 and in 1..5 (Fashion-MNIST test: 50% and 2.5%),
total-variation distance of the 256-bin intensity histograms and their 1-Wasserstein distance in gray levels.
``--end t0`` reproduces the samplers as they were before issue 11 (ddim and dpm-solver returned x at t = 0,
sigma_0 noise and all), so old and new can be compared on the same weights.

Every row draws the same number of samples from the same seed and scores them with the shared protocol
(``genmodels.eval``: the dataset's feature network, the first n test images as the reference), so the
FIDs are comparable with each other (FID is biased upward at small n: compare rows, not other tables).
Sampling time is wall-clock time of ``Run.sample`` (batches of 500) on this machine, without the metrics.
Targets: dpm-solver at 20 steps within 10% of the 1,000-step FID, and under 52 s per 1,000 samples on
2 cores. The 1,000-step row costs 50 times the 20-step row (about 25 minutes for n = 2,000 on 2 cores);
``--configs`` leaves it out or adds others; an entry is sampler:steps[:spacing] (time | logsnr; default the
run's ``model.spacing``).

usage:
  python benchmarks/diffusion_sampling.py RUN_DIR [--n 2000] [--configs ddpm:1000,ddim:10:logsnr,...] [--end clean|t0]
                                          [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT = "ddpm:1000,ddim:10,ddim:20,ddim:50,dpm-solver:10,dpm-solver:20,dpm-solver:50"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a trained diffusion run directory (e.g. the one diffusion_quality.py wrote)")
    ap.add_argument("--n", type=int, default=2000, help="samples per row (and reference test images)")
    ap.add_argument("--configs", default=DEFAULT, help="comma-separated sampler:steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--save-dir", help="also save each row's samples as uint8 .npz here (for second_opinion.py)")
    ap.add_argument(
        "--end", choices=("clean", "t0"), default="clean", help="t0: ddim / dpm-solver as before issue 11 (x at t = 0)"
    )
    a = ap.parse_args()

    from genmodels.eval import load_feature_net
    from genmodels.eval.metrics import pixel_stats
    from genmodels.eval.reference import real_reference
    from genmodels.eval.report import sample_metrics
    from genmodels.training import load_run
    from genmodels.viz import to_uint8

    run = load_run(a.run)
    test = run.load_data("test")
    net = load_feature_net(test.name)
    ref = real_reference(net, test, n=a.n)
    if a.end == "t0":
        _restore_t0_end()
    real_u8 = torch.from_numpy(test.images)
    real_px = pixel_stats(real_u8, real_u8)
    labels = None
    if getattr(run.model, "conditional", False):
        labels = torch.from_numpy(test.labels[: a.n])
    print(
        f"{run.model_name} step {run.step} ({run.weights} weights), {a.n} samples per row, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'sampler':<12} {'steps':>5} {'spacing':>7} {'FID':>8} {'precision':>9} {'recall':>7} {'s / 1,000':>10} "
        f"{'% 0':>6} {'% 1..5':>7} {'hist TV':>8} {'W1':>6}"
    )
    print(
        f"{'test split':<12} {'':>5} {'':>7} {'':>8} {'':>9} {'':>7} {'':>10} {100 * real_px['black_share']:>6.1f} "
        f"{100 * real_px['near_black_share']:>7.1f} {0.0:>8.3f} {0.0:>6.2f}"
    )
    rows = []
    default_spacing = run.model.config.spacing
    for spec in a.configs.split(","):
        sampler, steps, *rest = spec.split(":")
        spacing = rest[0] if rest else default_spacing
        run.model.config.spacing = spacing
        t0 = time.perf_counter()
        x = run.sample(a.n, seed=a.seed, labels=labels, sampler=sampler, steps=int(steps))
        secs = (time.perf_counter() - t0) * 1000 / a.n
        u8 = torch.from_numpy(to_uint8(x))
        if a.save_dir:
            Path(a.save_dir).mkdir(parents=True, exist_ok=True)
            tag = f"{sampler}-{steps}" + (f"-{spacing}" if sampler != "ddpm" else "") + ("-t0" if a.end == "t0" else "")
            np.savez(Path(a.save_dir) / f"{tag}.npz", images=u8.numpy())
        m = sample_metrics(u8, net, ref, seed=a.seed)
        px = pixel_stats(u8, real_u8)
        row = {
            "sampler": sampler,
            "steps": int(steps),
            "spacing": spacing if sampler != "ddpm" else "-",
            "fid": m["fid"],
            "precision": m["precision"],
            "recall": m["recall"],
            "seconds_per_1000": secs,
            **px,
        }
        rows.append(row)
        print(
            f"{sampler:<12} {steps:>5} {row['spacing']:>7} {m['fid']:>8.3f} {m['precision']:>9.3f} {m['recall']:>7.3f} "
            f"{secs:>10.1f} "
            f"{100 * px['black_share']:>6.1f} {100 * px['near_black_share']:>7.1f} {px['pixel_hist_tv']:>8.3f} "
            f"{px['pixel_w1']:>6.2f}"
        )
    by = {(r["sampler"], r["steps"]): r for r in rows if r["spacing"] in ("-", default_spacing)}
    if ("ddpm", 1000) in by and ("dpm-solver", 20) in by:
        ref_fid, fast = by[("ddpm", 1000)]["fid"], by[("dpm-solver", 20)]
        rel = fast["fid"] / ref_fid - 1.0
        print(f"dpm-solver 20 steps vs ddpm 1000: FID {100 * rel:+.1f}% (target within 10%)")
    if ("dpm-solver", 20) in by:
        s = by[("dpm-solver", 20)]["seconds_per_1000"]
        print(f"dpm-solver 20 steps: {s:.1f} s per 1,000 samples (target under 52 s on 2 cores)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {"run": str(a.run), "step": run.step, "n": a.n, "end": a.end, "test_pixels": real_px, "rows": rows},
                f,
                indent=1,
            )


def _restore_t0_end() -> None:
    """Make ddim and dpm-solver step along ``timestep_grid`` to t = 0 and return x there, as before issue 11."""
    from genmodels.models import samplers
    from genmodels.models.schedules import timestep_grid

    new = samplers.sampling_grid

    def old(schedule, sampler, steps, spacing="time"):
        return new(schedule, sampler, steps, spacing) if sampler == "ddpm" else timestep_grid(schedule, steps, spacing)

    samplers.sampling_grid = old


if __name__ == "__main__":
    main()
