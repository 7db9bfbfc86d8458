"""Issue 11, point 10: score sample files in a second, independent feature space, so a ranking that only
genmodels' own feature network sees can be told apart from a real one.

The second network is not genmodels' FeatureNet: a small residual network (a 3x3 stem, four pre-activation
residual blocks with GroupNorm at widths 32-64-128-128, two of them strided, global average pooling: a
128-number feature layer; no BatchNorm, no fully connected feature layer), trained with plain SGD + momentum,
a different seed, other augmentation (random crops of a 2-px padded image, no mirror images) and another data
order. Its weights are cached in ``~/.cache/genmodels/second-opinion/<dataset>-e<epochs>-s<seed>.pt``
(trained once) and its test accuracy is printed.

Each file's FID, precision and recall are computed against the first n test images in this space with
genmodels' metric code (``genmodels.eval.metrics``: the formulas are tested against torchmetrics and prdc;
only the feature space differs).

usage:
  python benchmarks/second_opinion.py --dataset fashion-mnist A.npz B.npz ... [--n 1000] [--json FILE]
  (sample files: ``genmodels sample RUN -n 1000 -o A.npz``, or diffusion_sampling.py --save-dir)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, stride, 1)
        self.n2, self.c2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.relu(self.n1(x)))
        return self.skip(x) + self.c2(F.relu(self.n2(h)))


class SecondNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.stem = nn.Conv2d(channels, w0, 3, 1, 1)
        self.body = nn.Sequential(Block(w0, w0, 1), Block(w0, w1, 2), Block(w1, w2, 2), Block(w2, w2, 1))
        self.norm = nn.GroupNorm(8, w2)
        self.head = nn.Linear(w2, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.stem(x * 2 - 1))
        return F.relu(self.norm(h)).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_float(u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(u8)).float() / 255.0


def train_net(dataset: str, epochs: float, seed: int) -> tuple[SecondNet, float]:
    from genmodels.data import load_dataset

    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    torch.manual_seed(seed)
    net = SecondNet(train.shape[0], train.num_classes)
    x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    steps = int(epochs * len(x) / 128)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    g = torch.Generator().manual_seed(seed + 7)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(x), (128,), generator=g)
        xb = F.pad(to_float(x[idx]), (2, 2, 2, 2))
        i, j = torch.randint(5, (2,), generator=g).tolist()
        xb = xb[:, :, i : i + train.shape[1], j : j + train.shape[2]]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(xb).float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(f"  step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(test.images), 1000):
            xb = to_float(test.images[s : s + 1000])
            correct += int((net(xb).argmax(1) == torch.from_numpy(test.labels[s : s + 1000])).sum())
    return net, correct / len(test.images)


def load_or_train(dataset: str, epochs: float, seed: int) -> tuple[SecondNet, float]:
    from genmodels.data.dataset import cache_dir

    path = cache_dir() / "second-opinion" / f"{dataset}-e{epochs:g}-s{seed}.pt"
    if path.is_file():
        blob = torch.load(path, weights_only=True)
        net = SecondNet(blob["channels"], blob["classes"])
        net.load_state_dict(blob["state"])
        return net.eval(), blob["accuracy"]
    print(f"training the second-opinion network on {dataset} ({epochs:g} epochs) ...", flush=True)
    net, acc = train_net(dataset, epochs, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = net.stem.in_channels
    torch.save({"state": net.state_dict(), "channels": first, "classes": net.head.out_features, "accuracy": acc}, path)
    return net, acc


@torch.no_grad()
def features(net: SecondNet, u8: np.ndarray) -> torch.Tensor:
    return torch.cat([net.features(to_float(u8[s : s + 500])) for s in range(0, len(u8), 500)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help=".npz sample files (key 'images', uint8 N x C x H x W)")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--n", type=int, default=1000, help="samples per file and reference test images")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    a = ap.parse_args()

    from genmodels.data import load_dataset
    from genmodels.eval.metrics import fid, prdc

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    net, acc = load_or_train(a.dataset, a.epochs, a.seed)
    test = load_dataset(a.dataset, "test")
    real = features(net, test.images[: a.n])
    print(f"second-opinion net: test accuracy {100 * acc:.2f}%; reference: first {a.n} test images")
    floor_split = load_dataset(a.dataset, "train").images[: a.n]
    rows = []
    for name, u8 in [("(real train images)", floor_split)] + [
        (Path(f).stem, np.load(f, allow_pickle=False)["images"][: a.n]) for f in a.files
    ]:
        f = features(net, u8)
        pr = prdc(real, f)
        rows.append({"name": name, "fid": fid(real, f), "precision": pr["precision"], "recall": pr["recall"]})
        print(f"{name:<40} FID {rows[-1]['fid']:8.3f}  precision {pr['precision']:.3f}  recall {pr['recall']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"dataset": a.dataset, "n": a.n, "accuracy": acc, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
