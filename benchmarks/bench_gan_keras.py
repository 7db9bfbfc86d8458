"""The classic MLP GAN, genmodels against the tutorial's own Keras code, side by side in one run; and the
default GAN's training throughput with its share of the matrix-multiply peak.

1. Parity: the Keras reference's G and D are loaded with genmodels' weights and must give the same
   outputs on the same inputs, in training and inference mode, and move BatchNorm's moving statistics
   the same way (every max |difference| at most ``PARITY_TOL``): the "same architecture" of the speed
   comparison. A difference above it exits 1 before any timing; without TensorFlow the script exits 2
   unless ``--no-keras`` says to time genmodels alone (then parity is not checked, and says so).
2. Seconds per classic iteration at batch 32 (median over iterations after 20 warm-up ones, as the
   peer script measures): genmodels' Trainer step and the Keras peer (in a subprocess) alternated,
   g k g k g with ``--rounds 2``; each side's figure is the median of its runs, so a drift in machine
   load reaches both and shows in the runs listed.
3. Training images per second of the default ``gan`` config at its batch size, with FLOPs per image and
   the share of the fp32 / bf16 matmul peak measured in this run (``bench_models.py``'s method).

usage: python benchmarks/bench_gan_keras.py [--iters 300] [--keras-iters 300] [--rounds 2] [--no-keras] [--bf16]
       [--parity-only] [--json FILE]
needs for the Keras side: pip install tensorflow-cpu (never a genmodels dependency)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import bench, flops_per_image, matmul_peak

from genmodels.data import load_dataset
from genmodels.models import FAMILIES, make_config, model_spec
from genmodels.seeding import derive_seed
from genmodels.training.batches import images_tensor
from genmodels.training.config import TrainConfig, resolve_run_config
from genmodels.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "classic_gan_keras.py"
CLASSIC = ROOT / "configs" / "gan-mlp-classic.yaml"
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
# fp32 rounding of the same sums in another order: ~1e-6 measured (README: 2.7e-6); a wrong layer, momentum,
# epsilon or activation gives differences of 1e-2 and more.
PARITY_TOL = 1e-5


def classic_trainer(ds, batch_size: int, precision: str = "fp32") -> Trainer:
    """A Trainer for the classic run's exact config (configs/gan-mlp-classic.yaml); ``precision`` bf16
    autocasts the same architecture (the classic run itself is fp32, as the Keras code is)."""
    cfg = resolve_run_config("gan-mlp", config_file=str(CLASSIC), flags={"train": {"batch_size": batch_size}})
    model_cfg = make_config("gan-mlp", {**cfg["model"], "image_shape": list(ds.shape), "num_classes": 10})
    torch.manual_seed(0)
    model = model_spec("gan-mlp").build(model_cfg)
    train = {**cfg["train"], "progress": False, "sample_every": 0, "ckpt_every": 0, "precision": precision}
    return Trainer(model, images_tensor(ds.images), torch.from_numpy(ds.labels), TrainConfig(**train))


def genmodels_seconds_per_iter(ds, iters: int, batch_size: int, precision: str = "fp32") -> float:
    """Median seconds of one Trainer iteration (reseed, 2 D steps, 1 G step) after 20 warm-up ones."""
    t = classic_trainer(ds, batch_size, precision)
    t.model.train()
    times = []
    for i in range(iters + 20):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(0, i, 0))  # what Trainer.fit does before every step
        t.measure_norms = i % t.config.log_every == 0  # as fit: gradient norms once per logging window
        t.adversarial_step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[20:])


def keras_seconds_per_iter(iters: int, batch_size: int) -> float:
    """The peer script's own measurement, in a subprocess (its TensorFlow uses this machine's cores)."""
    out = subprocess.run(
        [sys.executable, str(PEER), str(FASHION), str(iters + 20), str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"seconds_per_iter=([0-9.]+)", out).group(1))


def keras_parity(batch_size: int = 32) -> dict[str, float]:
    """Max |difference| between genmodels' classic G / D and the Keras reference given the same weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    spec = importlib.util.spec_from_file_location("classic_gan_keras", PEER)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    ref = peer.GAN()
    ds = load_dataset("fashion-mnist", "train", limit=batch_size)
    ours = classic_trainer(ds, batch_size).model
    g_seq = next(x for x in ref.generator.layers if isinstance(x, keras.Sequential))
    d_seq = next(x for x in ref.discriminator.layers if isinstance(x, keras.Sequential))
    k_dense = [x for x in g_seq.layers if isinstance(x, keras.layers.Dense)]
    k_bn = [x for x in g_seq.layers if isinstance(x, keras.layers.BatchNormalization)]
    t_lin = [x for x in ours.generator if isinstance(x, torch.nn.Linear)]
    t_bn = [x for x in ours.generator if isinstance(x, torch.nn.BatchNorm1d)]
    for k, t in zip(k_dense, t_lin, strict=True):
        k.set_weights([t.weight.detach().T.numpy(), t.bias.detach().numpy()])
    for k, t in zip(k_bn, t_bn, strict=True):
        k.set_weights([x.detach().numpy() for x in (t.weight, t.bias, t.running_mean, t.running_var)])
    t_d = [x for x in ours.discriminator.body if isinstance(x, torch.nn.Linear)] + [ours.discriminator.head]
    for k, t in zip([x for x in d_seq.layers if isinstance(x, keras.layers.Dense)], t_d, strict=True):
        k.set_weights([t.weight.detach().T.numpy(), t.bias.detach().numpy()])
    assert all(
        k.epsilon == t.eps and abs(k.momentum - (1 - t.momentum)) < 1e-9 for k, t in zip(k_bn, t_bn, strict=True)
    )

    z = np.random.default_rng(0).normal(size=(batch_size, 100)).astype(np.float32)
    zt = torch.from_numpy(z)
    out: dict[str, float] = {}
    with torch.no_grad():
        ours.generator.eval()
        out["G inference mode (moving statistics)"] = _maxdiff(ref.generator(z, training=False), ours.generator(zt))
        ours.generator.train()
        g_train = ours.generator(zt)  # one training forward: batch statistics, and the moving ones move
        out["G training mode (batch statistics)"] = _maxdiff(ref.generator(z, training=True), g_train)
        moved = max(
            max(
                np.abs(k.moving_mean.numpy() - t.running_mean.numpy()).max(),
                np.abs(k.moving_variance.numpy() - t.running_var.numpy()).max(),
            )
            for k, t in zip(k_bn, t_bn, strict=True)
        )
        out["BatchNorm moving statistics after one training call"] = float(moved)
        x = ds.images[:batch_size].astype(np.float32) / 127.5 - 1.0  # the tutorial's scaling
        d_keras = ref.discriminator(np.transpose(x, (0, 2, 3, 1)), training=False)
        d_ours = torch.sigmoid(ours.discriminator(torch.from_numpy(x)))
        out["D(real) probabilities"] = _maxdiff(d_keras[:, 0], d_ours)
    return out


def parity_failures(parity: dict[str, float], tol: float = PARITY_TOL) -> list[str]:
    """The parity figures above ``tol`` (or not finite), one line each; empty when parity holds."""
    return [f"{k}: {v:.2e} > {tol:.0e}" for k, v in parity.items() if not v <= tol]


def _maxdiff(keras_out, torch_out: torch.Tensor) -> float:
    a = np.asarray(keras_out).reshape(len(torch_out), -1)
    return float(np.abs(a - torch_out.detach().numpy().reshape(len(torch_out), -1)).max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=300, help="timed genmodels iterations (after 20 warm-up)")
    ap.add_argument("--keras-iters", type=int, default=300, help="timed Keras iterations (after 20 warm-up)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--default-steps", type=int, default=30, help="timed steps of the default gan")
    ap.add_argument("--rounds", type=int, default=2, help="Keras runs, each between two genmodels runs")
    ap.add_argument("--no-keras", action="store_true", help="skip the Keras side (no TensorFlow here)")
    ap.add_argument("--bf16", action="store_true", help="also time the classic architecture with bf16 autocast")
    ap.add_argument("--parity-only", action="store_true", help="check parity with the Keras code, time nothing")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.no_keras and a.parity_only:
        ap.error("--parity-only needs the Keras side; drop --no-keras")
    have_tf = not a.no_keras
    if have_tf and importlib.util.find_spec("tensorflow") is None:
        print(
            "error: the Keras side needs TensorFlow: pip install tensorflow-cpu, or pass --no-keras to time "
            "genmodels alone (parity with the Keras code is then not checked)",
            file=sys.stderr,
        )
        return 2
    ds = load_dataset("fashion-mnist", "train")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; Fashion-MNIST train ({len(ds)} images)\n")
    result: dict = {"batch_size": a.batch_size}

    if have_tf:
        parity = keras_parity(a.batch_size)
        result["parity_max_abs_diff"] = parity
        print(f"Parity with the Keras reference given the same weights (max |difference|, at most {PARITY_TOL:.0e}):")
        for k, v in parity.items():
            print(f"  {k:55s} {v:.2e}")
        failures = parity_failures(parity)
        if failures:
            print(
                "error: genmodels' classic GAN no longer matches the Keras code:", "; ".join(failures), file=sys.stderr
            )
            return 1
        print("  parity holds\n")
        if a.parity_only:
            return 0
    else:
        print("Parity with the Keras code NOT checked (--no-keras)\n")

    # Alternate the two (g k g k ... g) so that a drift in machine load reaches both; each side's figure
    # is the median of its runs' medians.
    ours_runs = [genmodels_seconds_per_iter(ds, a.iters, a.batch_size)]
    keras_runs: list[float] = []
    for _ in range(max(1, a.rounds) if have_tf else 0):
        keras_runs.append(keras_seconds_per_iter(a.keras_iters, a.batch_size))
        ours_runs.append(genmodels_seconds_per_iter(ds, a.iters, a.batch_size))
    ours = statistics.median(ours_runs)
    keras_s = statistics.median(keras_runs) if keras_runs else None
    bf16 = genmodels_seconds_per_iter(ds, a.iters, a.batch_size, "bf16") if a.bf16 else None
    result.update(genmodels_s_per_iter=ours_runs, keras_s_per_iter=keras_runs, genmodels_bf16_s_per_iter=bf16)
    print(f"| classic MLP GAN, batch {a.batch_size} | runs (median s/iteration each) | median |")
    print("|---|---|---:|")
    print(f"| genmodels (Trainer step, fp32) | {', '.join(f'{t:.4f}' for t in ours_runs)} | {ours:.4f} |")
    if bf16 is not None:
        print(f"| genmodels, same architecture with bf16 autocast (not the classic fp32) | {bf16:.4f} | {bf16:.4f} |")
    if keras_s is not None:
        print(f"| Keras peer ({PEER.name}) | {', '.join(f'{t:.4f}' for t in keras_runs)} | {keras_s:.4f} |")
        print(f"\ngenmodels is {keras_s / ours:.1f}x faster per iteration in fp32 (target: at least 8x)")
        result["speedup"] = keras_s / ours
        if bf16 is not None:
            print(f"genmodels with bf16 autocast is {keras_s / bf16:.1f}x faster per iteration")
            result["speedup_bf16"] = keras_s / bf16
    else:
        print("\n(Keras side skipped: --no-keras)")

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    # How much of this machine's arithmetic a classic iteration uses: it bounds what any speed-up can reach here.
    counted = classic_trainer(ds, a.batch_size)
    iter_flops = flops_per_image(counted) * counted.batches * a.batch_size  # one iteration, all its batches
    result.update(classic_mflop_per_iter=iter_flops / 1e6, fp32_peak_gflops=peak32)
    print(
        f"\nclassic iteration: {iter_flops / 1e6:.0f} MFLOP (G and D forward and backward, counted by torch); "
        f"genmodels {iter_flops / ours / 1e9:.1f} GFLOP/s = {100 * iter_flops / ours / 1e9 / peak32:.0f}% of this "
        f"run's fp32 matmul peak ({peak32:.0f} GFLOP/s)"
        + (f", Keras {iter_flops / keras_s / 1e9:.1f} GFLOP/s" if keras_s is not None else "")
    )
    name = FAMILIES["gan"]
    row = bench(name, ds, a.default_steps, None, None)
    peak32b, peak16b = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    peak = (peak16 + peak16b) / 2 if row["precision"] == "bf16" else (peak32 + peak32b) / 2
    row["share_of_peak"] = row["gflops_per_s"] / peak
    result["default_gan"] = row
    print(
        f"\ndefault gan ({name}, family config): batch {row['batch_size']}, {row['precision']}: "
        f"{row['images_per_s']:,.0f} training images/s, {row['ms_per_step']:.1f} ms/step, "
        f"{row['mflops_per_image']:.1f} MFLOP/image, {row['gflops_per_s']:.1f} GFLOP/s = "
        f"{100 * row['share_of_peak']:.0f}% of the {row['precision']} matmul peak ({peak:.0f} GFLOP/s, this run)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
