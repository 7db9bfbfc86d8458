"""Training throughput of every registered model at its default config, with FLOPs per image and
the share of this machine's matrix-multiply peak that a training step reaches.

The peak is measured in the same run (a large fp32 and bf16 matmul), so the share is a ratio of two
numbers taken side by side on the same, possibly noisy, machine.

usage: python benchmarks/bench_models.py [--steps 30] [--batch-size B] [--precision fp32|bf16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from genmodels.data import load_dataset
from genmodels.models import MODELS, make_config, model_spec
from genmodels.nets.linear import linear, onednn_linear
from genmodels.training.batches import images_tensor
from genmodels.training.config import TrainConfig, family_defaults
from genmodels.training.trainer import Trainer


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matmul: the practical peak this process can reach, the faster of torch's
    ``@`` (MKL for fp32) and genmodels' oneDNN linear (what its fp32 Linear layers run on)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

    def rate(f) -> float:
        for _ in range(3):
            f()
        t0 = time.perf_counter()
        for _ in range(reps):
            f()
        return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9

    return max(rate(lambda: a @ b), rate(lambda: linear(a, b)))


def default_config(name: str) -> tuple[dict, dict]:
    """(model overrides, train overrides): the family YAML when this model is its family's pick."""
    spec = model_spec(name)
    fam = family_defaults(spec.family) if spec.family else {}
    if fam.get("model_name") == name:
        return fam.get("model", {}), fam.get("train", {})
    return {}, dict(spec.train_defaults)


def flops_per_image(trainer: Trainer) -> float | None:
    """FLOPs of one training step (forward and backward of every loss it computes) per image; None where
    torch's counter cannot follow the step (WGAN-GP's gradient penalty differentiates a gradient)."""
    amp, trainer.amp_dtype = trainer.amp_dtype, None  # FLOPs are the same in bf16; the counter wants fp32
    try:  # the counter cannot see inside oneDNN's linear op: count the same products through F.linear
        with onednn_linear(False), FlopCounterMode(display=False) as fc:
            before = trainer.batches
            (trainer.adversarial_step if trainer.adversarial else trainer.single_step)()
    except RuntimeError:
        return None
    finally:
        trainer.amp_dtype = amp
    images = (trainer.batches - before) * trainer.config.batch_size
    return fc.get_total_flops() / images


def bench(name: str, ds, steps: int, batch_size: int | None, precision: str | None) -> dict:
    model_over, train_over = default_config(name)
    cfg = make_config(name, {**model_over, "image_shape": list(ds.shape), "num_classes": ds.num_classes})
    torch.manual_seed(0)
    model = model_spec(name).build(cfg)
    tc = {k: v for k, v in train_over.items() if k in TrainConfig.__dataclass_fields__}
    tc.update(steps=steps, progress=False, sample_every=0, ckpt_every=0)
    if batch_size:
        tc["batch_size"] = batch_size
    if precision:
        tc["precision"] = precision
    trainer = Trainer(model, images_tensor(ds.images), torch.from_numpy(ds.labels), TrainConfig(**tc))
    step = trainer.adversarial_step if trainer.adversarial else trainer.single_step
    flops = flops_per_image(trainer)
    for _ in range(3):  # warm-up (allocator, oneDNN primitive caches)
        step()
    b0 = trainer.batches
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    secs = time.perf_counter() - t0
    imgs = (trainer.batches - b0) * trainer.config.batch_size
    return {
        "model": name,
        "family": model_spec(name).family,
        "params": sum(p.numel() for p in model.parameters()),
        "batch_size": trainer.config.batch_size,
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[trainer.amp_dtype],
        "images_per_s": imgs / secs,
        "ms_per_step": 1000 * secs / steps,
        "mflops_per_image": None if flops is None else flops / 1e6,
        "gflops_per_s": None if flops is None else flops * imgs / secs / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--precision", choices=["fp32", "bf16"])
    ap.add_argument("--models", nargs="*", default=sorted(MODELS))
    ap.add_argument("--json")
    a = ap.parse_args()
    ds = load_dataset("digits", "train")
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    rows = [bench(m, ds, a.steps, a.batch_size, a.precision) for m in a.models]
    peak32b, peak16b = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    peaks = {"fp32": (peak32 + peak32b) / 2, "bf16": (peak16 + peak16b) / 2}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; matmul peak measured in this run: "
        f"fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s\n"
    )
    print(
        "| model | family | params | batch | precision | images/s | ms/step | MFLOP/image (train step) | "
        "GFLOP/s | share of matmul peak |"
    )
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        peak = peaks["bf16" if r["precision"] == "bf16" else "fp32"]
        counted = r["gflops_per_s"] is not None
        r["share_of_peak"] = r["gflops_per_s"] / peak if counted else None
        mflops = f"{r['mflops_per_image']:.1f}" if counted else "not countable"
        rate = f"{r['gflops_per_s']:.1f} | {100 * r['share_of_peak']:.0f}%" if counted else "- | -"
        print(
            f"| {r['model']} | {r['family']} | {r['params']:,} | {r['batch_size']} | {r['precision']} | "
            f"{r['images_per_s']:,.0f} | {r['ms_per_step']:.1f} | {mflops} | {rate} |"
        )
    print(
        "\nFLOPs are nominal (2 per multiply-add, forward and backward, counted by torch's FlopCounterMode); the "
        "peak is the faster of MKL's and oneDNN's fp32 matmul (bf16: oneDNN's)."
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"peaks_gflops": peaks, "rows": rows, "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
