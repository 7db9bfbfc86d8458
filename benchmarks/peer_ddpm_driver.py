"""Runs inside the peer's own venv (see emoji_quality.py): trains lucidrains' denoising-diffusion-pytorch
with its README's defaults on a folder of PNGs for a wall-clock budget, then draws samples with its own
sampler and writes them as uint8 N x C x H x W in an .npz.

Nothing of genmodels is imported here: this file is all the peer's code path. The only changes to the
README's recipe: the image size (64), ``calculate_fid=False`` (its FID would download Inception), a time
limit instead of ``train_num_steps`` (the loop's own condition, read each step), no intermediate sample
grids or checkpoints (``save_and_sample_every`` past the end), so the budget is spent on training, and
what ``--precision`` and ``--sampling-steps`` choose (the README's fp16 autocast runs a training step at
about the fp32 speed on a CPU, bf16 about 2.3x faster; its 250 DDIM steps take hours per 1,000 samples).

usage (peer venv's python):
  peer_ddpm_driver.py FOLDER --minutes M --n N --out SAMPLES.npz [--size 64] [--seed 0] [--sample-batch 64]
                      [--precision fp16|bf16|no] [--sampling-steps 250]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from denoising_diffusion_pytorch import GaussianDiffusion, Trainer, Unet


class TimedTrainer(Trainer):
    """The peer's Trainer, whose loop `while self.step < self.train_num_steps` ends at a deadline."""

    deadline = math.inf

    @property
    def train_num_steps(self) -> int:  # type: ignore[override]
        return self.step if time.monotonic() >= self.deadline else 10**9

    @train_num_steps.setter
    def train_num_steps(self, value: int) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-batch", type=int, default=64)
    ap.add_argument("--results", default="peer-results")
    ap.add_argument(
        "--precision",
        choices=("fp16", "bf16", "no"),
        default="fp16",
        help="the Trainer's mixed_precision_type with amp=True (the README's: fp16), or no for amp=False",
    )
    ap.add_argument(
        "--sampling-steps", type=int, default=250, help="the peer's DDIM steps for the samples (README: 250)"
    )
    a = ap.parse_args()
    torch.manual_seed(a.seed)

    # The README's recipe (denoising-diffusion-pytorch 2.x), image size 64.
    model = Unet(dim=64, dim_mults=(1, 2, 4, 8), flash_attn=True)
    diffusion = GaussianDiffusion(model, image_size=a.size, timesteps=1000, sampling_timesteps=250)
    trainer = TimedTrainer(
        diffusion,
        a.folder,
        train_batch_size=32,
        train_lr=8e-5,
        train_num_steps=700000,
        gradient_accumulate_every=2,
        ema_decay=0.995,
        amp=a.precision != "no",
        mixed_precision_type=a.precision if a.precision != "no" else "fp16",
        calculate_fid=False,
        save_and_sample_every=10**9,
        results_folder=a.results,
    )
    params = sum(p.numel() for p in model.parameters())
    t0 = time.monotonic()
    trainer.deadline = t0 + 60.0 * a.minutes
    trainer.train()
    train_s = time.monotonic() - t0

    ema = trainer.ema.ema_model.eval()
    ema.sampling_timesteps = a.sampling_steps  # read by its ddim_sample
    ema.is_ddim_sampling = a.sampling_steps < ema.num_timesteps
    torch.manual_seed(a.seed + 1)
    t1 = time.monotonic()
    chunks = []
    # Sampling in the training precision (the Trainer samples in fp32; bf16 halves the time on a CPU).
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        for start in range(0, a.n, a.sample_batch):
            b = min(a.sample_batch, a.n - start)
            x = ema.sample(batch_size=b).float()  # in [0, 1] (auto_normalize)
            chunks.append((x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
            print(f"sampled {start + b}/{a.n} in {time.monotonic() - t1:.0f} s", flush=True)
    sample_s = time.monotonic() - t1
    np.savez_compressed(a.out, images=np.concatenate(chunks))
    print(
        "PEER "
        + json.dumps(
            {
                "steps": trainer.step,
                "images_seen": trainer.step * 32 * 2,
                "train_s": round(train_s, 1),
                "sample_s": round(sample_s, 1),
                "seconds_per_1000_samples": round(1000 * sample_s / a.n, 1),
                "parameters": params,
                "mixed_precision": trainer.accelerator.mixed_precision,
                "sampling_steps": a.sampling_steps,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
