"""The plain conv VAE of the tutorials, as the baseline genmodels' default `vae` must beat (issue 3, point 6).

Two strided convs down, two transposed convs up, latent 16, Bernoulli decoder (cross-entropy on grey
levels), Adam 1e-3, batch 128, prior N(0, I); trained for a wall-clock budget, then 10,000 samples
(decoder means) are written as uint8 N x C x H x W under 'images', like `genmodels sample -o FILE.npz`.

usage: python benchmarks/baseline_vae_loop.py --minutes 5 --out baseline/samples.npz
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genmodels.data import load_dataset


class ConvVAE(nn.Module):
    def __init__(self, z_dim: int = 16) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.Linear(64 * 7 * 7, 2 * z_dim)
        self.fc = nn.Linear(z_dim, 64 * 7 * 7)
        self.dec = nn.Sequential(
            nn.ReLU(), nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1),
        )  # fmt: skip

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.head(self.enc(x)).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.dec(self.fc(z)), x, reduction="sum")
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum()
        return (rec + kl) / len(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--steps", type=int, help="stop after this many steps instead (for experiments)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--out", default="baseline/samples.npz")
    p.add_argument("-n", type=int, default=10000, help="samples written after training")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    x_all = torch.from_numpy(load_dataset(a.dataset, "train").images).float() / 255
    model, step, t0 = ConvVAE(), 0, time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    while time.perf_counter() - t0 < 60 * a.minutes and step != a.steps:
        for idx in torch.randperm(len(x_all)).split(128):
            loss = model.loss(x_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if time.perf_counter() - t0 >= 60 * a.minutes or step == a.steps:
                break
    secs = time.perf_counter() - t0
    with torch.no_grad():
        images = torch.sigmoid(model.dec(model.fc(torch.randn(a.n, 16)))).mul(255).round().to(torch.uint8)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, images=images.numpy())
    meta = {"family": "baseline", "step": step, "wall_time_s": round(secs, 1), "last_loss": round(loss.item(), 2)}
    Path(a.out).with_suffix(".json").write_text(json.dumps(meta))
    print(f"baseline: {step} steps in {secs:.0f} s, last loss {loss.item():.1f}; wrote {a.n} samples to {a.out}")


if __name__ == "__main__":
    main()
