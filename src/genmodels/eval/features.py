"""Feature networks: small CNN classifiers per dataset whose penultimate layer replaces Inception.

Inception-v3 features are meaningless on 28x28 grey images and need weights that cannot be fetched
offline, so genmodels ships one small classifier per dataset (``eval/weights/<dataset>.safetensors``,
trained by ``scripts/train_feature_net.py`` on the real training split) and computes every
sample-quality metric on its penultimate layer: ``feature_dim`` = 128 numbers per image, the fully
connected layer before the classifier (after BatchNorm and ReLU). The same network's class predictions
serve class coverage and mode-collapse monitors.

Each weights file has a JSON card beside it (test accuracy, the data that trained it, its SHA-256);
the SHA-256 is checked at every load, and it is the network's version in reference-statistics
cache keys. Nothing is downloaded: datasets without shipped weights get a clear error, and users
can train their own into the cache (``scripts/train_feature_net.py --dataset kmnist``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, GenmodelsError
from genmodels.nets.linear import Linear
from genmodels.safeio import sha256_file

#: Datasets whose horizontal mirror image is still an image of the same class (clothes, objects),
#: so training may flip them; digits and characters are not mirror-symmetric.
FLIP_DATASETS = ("fashion-mnist", "cifar10", "emoji")


@dataclass
class FeatureNetConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) the network was trained on
    num_classes: int = 10
    widths: tuple[int, int, int] = (32, 64, 128)  # conv widths of the three stages
    feature_dim: int = 128  # width of the penultimate (fully connected) layer: the feature space
    dropout: float = 0.2  # before the classifier layer, training only

    def __post_init__(self) -> None:
        self.image_shape = tuple(int(v) for v in self.image_shape)  # type: ignore[assignment]
        self.widths = tuple(int(v) for v in self.widths)  # type: ignore[assignment]
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ConfigError(f"feature net image_shape must be (C, H, W), got {list(self.image_shape)}")
        if self.image_shape[1] < 8 or self.image_shape[2] < 8:
            raise ConfigError(f"feature nets need images of at least 8x8 pixels, got {list(self.image_shape)}")
        if self.feature_dim < 1:
            raise ConfigError(f"feature net feature_dim must be >= 1, got {self.feature_dim}")
        if self.num_classes < 2:
            raise ConfigError(f"a feature net is a classifier and needs >= 2 classes, got {self.num_classes}")
        if len(self.widths) != 3 or min(self.widths) < 1:
            raise ConfigError(f"feature net widths must be three positive ints, got {list(self.widths)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"feature net dropout must be in [0, 1), got {self.dropout}")


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class FeatureNet(nn.Module):
    """A small VGG-style classifier; its penultimate layer is the feature space of the metrics.

    conv(C->w0) pool | conv(w0->w1) conv(w1->w1) pool | conv(w1->w2) pool | linear -> BN -> ReLU: the
    (B, feature_dim) features -> dropout -> linear -> (B, num_classes) logits. Convs are 3x3 with
    BatchNorm and ReLU; the three 2x2 max-pools take 28x28 to 3x3, whose layout the fully connected
    layer keeps (a global average pool loses it and costs several points of accuracy on
    Fashion-MNIST's shirts and coats). Images enter in [0, 1] and are centred to [-1, 1].

    Args:
        config: the FeatureNetConfig.
    """

    def __init__(self, config: FeatureNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.image_shape[0]
        w0, w1, w2 = config.widths
        self.body = nn.Sequential(
            *_conv_bn(c, w0),
            nn.MaxPool2d(2),
            *_conv_bn(w0, w1),
            *_conv_bn(w1, w1),
            nn.MaxPool2d(2),
            *_conv_bn(w1, w2),
            nn.MaxPool2d(2),
            nn.Flatten(),
            Linear(w2 * (config.image_shape[1] // 8) * (config.image_shape[2] // 8), config.feature_dim, bias=False),
            nn.BatchNorm1d(config.feature_dim),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = Linear(config.feature_dim, config.num_classes)
        self.dataset = ""  # set by load_feature_net
        self.sha256 = ""  # of the weights file; the network's version in cache keys
        self.card: dict[str, Any] = {}

    @property
    def feature_dim(self) -> int:
        """Dimension of the penultimate-layer features."""
        return self.config.feature_dim

    @property
    def device(self) -> torch.device:
        return self.classifier.weight.device

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of a batch, with gradients: (B, C, H, W) in [0, 1] -> (B, feature_dim)."""
        return self.body(x * 2.0 - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits: (B, C, H, W) in [0, 1] -> (B, num_classes)."""
        return self.classifier(self.dropout(self.embed(x)))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.config.image_shape:
            name = f" for {self.dataset}" if self.dataset else ""
            raise ConfigError(
                f"the feature net{name} takes images of shape {list(self.config.image_shape)}, got "
                f"{list(x.shape[1:])}; evaluate at the dataset's native size (no data.image_size override)"
            )

    @torch.no_grad()
    def _batched(self, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], batch: int) -> torch.Tensor:
        self._check(x)
        was_training = self.training
        self.eval()
        try:
            out = [fn(_prepare(x[i : i + batch], self.device)).float().cpu() for i in range(0, len(x), batch)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.feature_dim)

    def features(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Penultimate-layer features, in eval mode, without gradients.

        Args:
            x: images (N, C, H, W), float in [0, 1] or uint8 in 0..255, on any device.

        Returns:
            float32 (N, feature_dim) on the CPU.
        """
        return self._batched(x, self.embed, batch)

    def logits(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Class logits (N, num_classes), float32 on the CPU, in eval mode; x as ``features`` takes."""
        return self._batched(x, self.forward, batch)

    def classify(self, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
        """Predicted classes (N,) int64 on the CPU; x as ``features`` takes."""
        return self.logits(x, batch).argmax(1)

    @torch.no_grad()
    def features_and_classes(self, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, feature_dim) and predicted classes (N,) in one pass over x."""
        self._check(x)
        was_training = self.training
        self.eval()
        feats, classes = [], []
        try:
            for i in range(0, len(x), batch):
                h = self.embed(_prepare(x[i : i + batch], self.device))
                feats.append(h.float().cpu())
                classes.append(self.classifier(h).argmax(1).cpu())
        finally:
            self.train(was_training)
        if not feats:
            return torch.empty(0, self.feature_dim), torch.empty(0, dtype=torch.long)
        return torch.cat(feats), torch.cat(classes)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 [0, 1]; float stays as it is (assumed in [0, 1])."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    # channels_last lets oneDNN pick its fast direct convolutions on the CPU: about 1.6x here.
    return _as_float(x).to(device).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- training


def _shift(x: torch.Tensor, max_shift: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random integer translations of up to ``max_shift`` pixels (zero fill), and random mirror images."""
    b, _, h, w = x.shape
    if max_shift > 0:
        p = max_shift
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=g)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=g)
        rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (B, H)
        cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (B, W)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        m = (torch.rand(b, generator=g) < 0.5).to(x.device)
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    epochs: float = 10.0,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    max_shift: int = 1,
    flip: bool = False,
    widths: Sequence[int] = (32, 64, 128),
    feature_dim: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    precision: str = "auto",
    log: Callable[[str], None] | None = None,
) -> FeatureNet:
    """Train a FeatureNet classifier (AdamW, one-cycle cosine schedule, label smoothing 0.1).

    Also the classifier of the classification accuracy score: same architecture, other data.

    Args:
        images: (N, C, H, W), uint8 0..255 or float in [0, 1].
        labels: (N,) int64 in 0..num_classes-1.
        epochs: passes over the data (fractional allowed); the schedule spans them.
        max_shift: random translation augmentation in pixels; flip: random mirror images.
        precision: "fp32", "bf16" (autocast), or "auto" (bf16 where it runs natively).

    Returns:
        the trained FeatureNet in eval mode, on ``device``.
    """
    from genmodels.device import bf16_is_fast, pick_device

    if len(images) != len(labels) or len(images) == 0:
        raise ConfigError(f"need as many labels as images (> 0), got {len(images)} images, {len(labels)} labels")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ConfigError(f"labels must be in 0..{num_classes - 1}")
    dev = pick_device(str(device))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = FeatureNet(FeatureNetConfig(tuple(images.shape[1:]), num_classes, tuple(widths), feature_dim)).to(dev)
    x_all, y_all = images, labels.long()
    steps = max(1, math.ceil(epochs * len(x_all) / batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    amp = precision == "bf16" or (precision == "auto" and bf16_is_fast(dev))
    net.train()
    perm = torch.randperm(len(x_all), generator=g)
    pos, t0 = 0, time.perf_counter()
    for step in range(steps):
        if pos + batch_size > len(perm):
            perm, pos = torch.randperm(len(x_all), generator=g), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        xb = _shift(_as_float(x_all[idx]), max_shift, flip, g).to(dev)
        yb = y_all[idx].to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(xb).float(), yb, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step + 1) % max(1, steps // 20) == 0:
            log(f"step {step + 1}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    return net.eval()


def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of images whose predicted class is the label."""
    return float((net.classify(images) == labels.cpu()).double().mean())


# ----------------------------------------------------------------------------- shipped weights


def weights_dirs() -> list[Path]:
    """Where feature-net weights are looked up: the package's own, then the user cache."""
    from genmodels.data import cache_dir

    pkg = Path(str(resources.files("genmodels").joinpath("eval", "weights")))
    return [pkg, cache_dir() / "feature-nets"]


def _file_stem(dataset: str) -> str:
    return dataset.replace(":", "-").replace("/", "_")


def file_sha256(path: Path) -> str:
    """The SHA-256 of a weights file (``safeio.sha256_file``)."""
    return sha256_file(path)


def shipped_feature_nets() -> dict[str, dict[str, Any]]:
    """Every available feature net's card (dataset name -> card), package weights first."""
    cards: dict[str, dict[str, Any]] = {}
    for d in reversed(weights_dirs()):  # the package's own win over same-named cache entries
        for card_path in sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                card = json.loads(card_path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(card, dict) and "dataset" in card and card_path.with_suffix(".safetensors").exists():
                cards[card["dataset"]] = {**card, "path": str(card_path.with_suffix(".safetensors"))}
    return cards


def save_feature_net(net: FeatureNet, path: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``path`` (.safetensors) and its JSON card beside it; returns the card with its sha256.

    Args:
        card: what to record (dataset, data used, test accuracy, ...); the config and the
            weights' SHA-256 are added here.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}
    save_file(state, str(path), metadata={"config": json.dumps(asdict(net.config))})
    card = {
        **card,
        "config": asdict(net.config),
        "feature_dim": net.feature_dim,
        "feature_layer": "the fully connected layer before the classifier, after BatchNorm and ReLU (penultimate)",
        "parameters": sum(p.numel() for p in net.parameters()),
        "file_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def load_feature_net(dataset_name: str, device: str | torch.device = "cpu") -> FeatureNet:
    """The shipped (or user-trained) feature network of a dataset, SHA-256 checked, in eval mode.

    Args:
        dataset_name: a catalog name ("fashion-mnist", "mnist", "digits", ...).
        device: where to put it ("auto" picks CUDA when present).

    Raises:
        GenmodelsError: no weights for this dataset, or a weights file that fails its checksum.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from genmodels.device import pick_device

    cards = shipped_feature_nets()
    if dataset_name not in cards:
        have = ", ".join(sorted(cards)) or "none"
        raise GenmodelsError(
            f"no feature network for dataset '{dataset_name}' (available: {have}); train one with "
            f"'python scripts/train_feature_net.py --dataset {dataset_name}' (it writes to "
            f"{weights_dirs()[1]}), or evaluate likelihoods only"
        )
    card = cards[dataset_name]
    path = Path(card["path"])
    sha = file_sha256(path)
    if sha != card.get("sha256"):
        raise GenmodelsError(
            f"feature-net weights {path} fail their SHA-256 check (got {sha[:12]}..., the card says "
            f"{str(card.get('sha256'))[:12]}...); reinstall genmodels or retrain them with scripts/train_feature_net.py"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise GenmodelsError(f"cannot read feature-net weights {path}: {e}; reinstall genmodels") from None
    cfg = card["config"]
    net = FeatureNet(
        FeatureNetConfig(tuple(cfg["image_shape"]), cfg["num_classes"], tuple(cfg["widths"]), cfg["feature_dim"])
    )
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise GenmodelsError(f"feature-net weights {path} do not fit its card's architecture; retrain them")
    net.dataset, net.sha256, net.card = dataset_name, sha, card
    return net.to(pick_device(str(device))).eval()


def image_digest(images: np.ndarray) -> list[str]:
    """SHA-1 of every image's bytes, for checking that two splits share no image."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]


__all__ = [
    "FeatureNet",
    "FeatureNetConfig",
    "accuracy",
    "image_digest",
    "load_feature_net",
    "save_feature_net",
    "shipped_feature_nets",
    "train_classifier",
]
