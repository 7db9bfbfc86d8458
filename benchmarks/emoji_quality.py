"""Issue 12, point 4: quality per CPU-minute on colour. Every family's recommended default trained on
``emoji`` at 64 px for a fixed number of wall-clock minutes (``genmodels train FAMILY --dataset emoji
--max-time M``: on a quiet 2-core machine those are CPU-minutes), evaluated with the shared protocol
(``genmodels evaluate``: the emoji feature net, all 363 test images as the reference, the memorisation
check against the 3,292 training images), beside

* the peer a user would pick for DDPM, lucidrains' ``denoising-diffusion-pytorch``, installed by this
  script in its own venv (``--peer-venv``; torch 2.14.1 + torchvision 0.29.1, which pip takes from this
  disk) and trained by ``peer_ddpm_driver.py`` with its README's recipe at 64 px on the same 3,292 training
  images written as PNGs, for ``--peer-minutes``; its samples are scored by ``genmodels evaluate --samples``;
* the real-vs-real floor: 363 training images (seeded draw) scored as if they were samples.

Each run also gets ``groups.png``: 1,000 samples sorted by the feature net's class, one row of 10 per
emoji group (black where a group has fewer), to judge by eye which groups a model makes recognisably.

On CIFAR-10 (``--dataset cifar10``): put the official binary archive where ``genmodels datasets`` looks,
train its feature net once (``python scripts/train_feature_net.py --dataset cifar10``), and the same table
comes out at 32 px against the 10,000 test images (the peer's ``--peer-n`` samples take hours on a CPU).

usage:
  python benchmarks/emoji_quality.py [--dataset emoji] [--families diffusion,gan,vae,autoencoder,pixelcnn]
                                     [--minutes 20] [--out runs/bench-emoji] [--peer] [--peer-minutes 60]
                                     [--peer-precision bf16] [--peer-sampling-steps 25] [--skip-train]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PEER_PACKAGES = ["torch==2.14.1", "torchvision==0.29.1", "denoising-diffusion-pytorch==2.3.4"]


def group_sheet(samples: torch.Tensor, net, out: Path, per_class: int = 10) -> list[int]:
    """uint8 samples sorted by the feature net's class, one row per class; returns the class counts."""
    from genmodels.viz import save_grid

    cls = net.classify(samples.float().div(255.0))
    k = net.config.num_classes
    rows = []
    for c in range(k):
        mine = samples[cls == c][:per_class]
        rows.append(torch.cat([mine, torch.zeros(per_class - len(mine), *samples.shape[1:], dtype=torch.uint8)]))
    save_grid(torch.cat(rows).numpy(), out, nrow=per_class)
    return torch.bincount(cls, minlength=k).tolist()


def row_of(name: str, report: dict, minutes: float | None, steps: int | None, counts: list[int]) -> dict:
    mem = report.get("memorisation", {})
    return {
        "model": name,
        "minutes": minutes,
        "steps": steps,
        "n": report.get("n_samples"),
        "fid": report.get("fid"),
        "kid": report.get("kid", {}).get("mean"),
        "kid_std": report.get("kid", {}).get("std"),
        "precision": report.get("precision"),
        "recall": report.get("recall"),
        "coverage": report.get("coverage"),
        "groups_covered": report.get("class_coverage", {}).get("covered"),
        "groups_in_1000": sum(c >= 5 for c in counts),
        "memorisation_ratio": mem.get("ratio"),
        "near_copies": mem.get("near_copies"),
        "s_per_1000_samples": report.get("seconds_per_1000_samples"),
    }


def train_family(family: str, dataset: str, minutes: float, out: Path, skip: bool, sheet_n: int = 1000) -> dict:
    from genmodels.api import load_run, train
    from genmodels.eval import evaluate_run, load_feature_net
    from genmodels.viz import to_uint8

    if not skip:
        run = train(family, dataset, max_time=minutes, out=out, progress=False)
        res = run.extra["result"]
        print(f"{family}: {res.step} steps in {res.elapsed:.0f} s", flush=True)
    report = evaluate_run(out, progress=False)
    run = load_run(out)
    samples = torch.from_numpy(to_uint8(run.sample(sheet_n, seed=123)))
    counts = group_sheet(samples, load_feature_net(dataset), out / "groups.png")
    meta = json.loads((out / "run.json").read_text())
    return row_of(run.model_name, report, round(meta["wall_time_s"] / 60, 1), report["step"], counts)


def peer_venv(path: Path) -> Path:
    python = path / "bin" / "python"
    probe = [str(python), "-c", "import denoising_diffusion_pytorch, torchvision"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def write_pngs(dataset: str, folder: Path) -> tuple[int, int]:
    """The training split as PNG files (the peer reads a folder); returns (count, image size)."""
    from PIL import Image

    from genmodels.data import load_dataset

    ds = load_dataset(dataset, "train")
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(ds.images):
        f = folder / f"{i:05d}.png"
        if not f.exists():
            rgb = np.ascontiguousarray(im.transpose(1, 2, 0))
            Image.fromarray(rgb[..., 0] if rgb.shape[2] == 1 else rgb).save(f)
    return len(ds.images), ds.images.shape[-1]


def run_peer(a: argparse.Namespace, out: Path) -> dict:
    from genmodels.eval import load_feature_net
    from genmodels.eval.report import evaluate_samples, load_samples_file

    out.mkdir(parents=True, exist_ok=True)
    npz = out / "samples.npz"
    log = out / "peer.log"
    if not a.skip_train:
        python = peer_venv(Path(a.peer_venv))
        n, size = write_pngs(a.dataset, out / "train")
        print(f"peer: {n} training PNGs, training {a.peer_minutes} min", flush=True)
        cmd = [str(python), str(HERE / "peer_ddpm_driver.py"), str(out / "train"), "--minutes", str(a.peer_minutes)]
        cmd += ["--n", str(a.peer_n), "--size", str(size), "--out", str(npz), "--results", str(out / "results")]
        cmd += ["--precision", a.peer_precision, "--sampling-steps", str(a.peer_sampling_steps)]
        with log.open("w") as f:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    facts = json.loads(next(ln for ln in log.read_text().splitlines() if ln.startswith("PEER "))[5:])
    report = evaluate_samples(npz, a.dataset, name="denoising-diffusion-pytorch", progress=False, meta={"peer": facts})
    images, _ = load_samples_file(npz)
    counts = group_sheet(images, load_feature_net(a.dataset), out / "groups.png")
    report["seconds_per_1000_samples"] = facts["seconds_per_1000_samples"]
    return row_of("denoising-diffusion-pytorch", report, round(facts["train_s"] / 60, 1), facts["steps"], counts)


def floor_row(dataset: str, out: Path) -> dict:
    """Real training images scored as samples: as many as the test split has (at most 10,000)."""
    from genmodels.data import load_dataset
    from genmodels.eval import load_feature_net
    from genmodels.eval.report import evaluate_samples

    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    n = min(len(test.images), len(train.images), 10_000)
    pick = np.random.default_rng(0).choice(len(train.images), n, replace=False)
    images = torch.from_numpy(train.images[np.sort(pick)])
    report = evaluate_samples(images, dataset, out=out, name="real training images", progress=False)
    counts = group_sheet(images, load_feature_net(dataset), out / "groups.png")
    return row_of(f"floor: {n:,} training images", report, None, None, counts)


def table(rows: list[dict]) -> str:
    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    lines = [
        "| model | minutes | steps | FID | KID (x1e-3) | precision | recall | coverage | groups | memorisation "
        "| s / 1,000 samples |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kid = "" if r["kid"] is None else f"{1000 * r['kid']:.1f} ± {1000 * r['kid_std']:.1f}"
        groups = "" if r["groups_covered"] is None else f"{round(9 * r['groups_covered'])}/9"
        lines.append(
            f"| {r['model']} | {f(r['minutes'], '.1f')} | {f(r['steps'], ',')} | {f(r['fid'], '.2f')} | {kid} "
            f"| {f(r['precision'], '.3f')} | {f(r['recall'], '.3f')} | {f(r['coverage'], '.3f')} | {groups} "
            f"| {f(r['memorisation_ratio'], '.3f')} | {f(r['s_per_1000_samples'], '.1f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="diffusion,gan,vae,autoencoder,pixelcnn", help="comma-separated; '' for none")
    ap.add_argument("--dataset", default="emoji", help="emoji (default), twemoji, cifar10, ...")
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget per family (wall-clock minutes)")
    ap.add_argument("--out", default="runs/bench-emoji")
    ap.add_argument("--peer", action="store_true", help="also train and score denoising-diffusion-pytorch")
    ap.add_argument("--peer-minutes", type=float, default=60.0)
    ap.add_argument("--peer-venv", default=str(Path.home() / ".cache" / "genmodels" / "peer-venv"))
    ap.add_argument("--peer-precision", choices=("fp16", "bf16", "no"), default="bf16")
    ap.add_argument("--peer-sampling-steps", type=int, default=25)
    ap.add_argument("--peer-n", type=int, default=363, help="peer samples to draw and score (the emoji test split)")
    ap.add_argument("--sheet-n", type=int, default=1000, help="samples sorted into the per-group sheet")
    ap.add_argument("--skip-train", action="store_true", help="score existing runs under --out again")
    a = ap.parse_args()

    out = Path(a.out)
    rows = [floor_row(a.dataset, out / "floor")]
    for family in [f for f in a.families.split(",") if f]:
        t0 = time.perf_counter()
        rows.append(train_family(family, a.dataset, a.minutes, out / family, a.skip_train, a.sheet_n))
        print(f"{family}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.peer:
        rows.append(run_peer(a, out / "peer"))
    md = table(rows)
    print(md)
    (out / "table.md").write_text(md + "\n")
    (out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
