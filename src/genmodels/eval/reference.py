"""Reference statistics of real data, computed once and cached on disk.

For a dataset split, a feature network and a sample count n, the reference holds the first n
images' features, their predicted classes, the float64 FID statistics and the k-NN radii of
precision / recall / density / coverage; a second cache entry holds each of those images' distance
to its nearest training image (the memorisation baseline). Files live in
``genmodels.data.cache_dir() / "eval-reference"`` as safetensors (no pickles), named by dataset,
split, n and the feature network's SHA-256, so retraining the network or changing n never reuses a
stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.eval.features import FeatureNet
from genmodels.eval.metrics import feature_statistics, knn_radii, nearest_distances

KS = (3, 5)  # the k of precision / recall and of density / coverage
CACHE_VERSION = 1  # bump when what an entry holds changes
# Images per feature / nearest-neighbour call, with a progress update after each: a multiple of the
# feature nets' batches (500, Inception's 100), so a network sees the same batches as in one call.
CHUNK = 1000

Progress = Callable[[int], None]  # called with the number of images done


@dataclass
class Reference:
    """Cached statistics of n real images of one split in one feature network's space."""

    dataset: str
    split: str
    n: int
    net_sha256: str
    features: torch.Tensor  # (n, D) float32
    classes: torch.Tensor | None  # (n,) int64: the feature net's predictions (None for Inception features)
    labels: torch.Tensor | None  # (n,) int64 true labels, when the split has them
    mu: np.ndarray  # (D,) float64
    sigma: np.ndarray  # (D, D) float64
    radii: dict[int, torch.Tensor] = field(default_factory=dict)  # k -> (n,) k-NN radii in feature space
    images: torch.Tensor | None = None  # (n, C, H, W) uint8, not cached (reloaded from the dataset)


def reference_dir() -> Path:
    from genmodels.data import cache_dir

    return cache_dir() / "eval-reference"


def _slug(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40]
    if clean == name:
        return clean
    return f"{clean}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)


def _try_load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """A cache entry, or None when it is missing or unreadable (then it is recomputed)."""
    from safetensors import safe_open

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118 (safe_open has no __iter__)
    except Exception:  # a truncated or foreign file: recompute rather than fail
        return None


def real_reference(
    net: FeatureNet,
    dataset: Any,
    *,
    n: int | None = None,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> Reference:
    """Features, FID statistics and k-NN radii of the first n images of a dataset split.

    Args:
        net: the feature network (its SHA-256 keys the cache; an unsaved network is never cached).
        dataset: an ImageDataset (``genmodels.load_dataset(name, split)``).
        n: how many images (the first n); None = all.
        progress: called with the number of images whose features are done (not called on a cache hit).
    """
    n = len(dataset) if n is None else min(n, len(dataset))
    images = torch.from_numpy(dataset.images[:n])
    labels = torch.from_numpy(dataset.labels[:n]) if dataset.labels is not None else None
    key = f"{_slug(dataset.name)}-{dataset.split}-n{n}-{net.sha256[:16]}-v{CACHE_VERSION}.safetensors"
    path = reference_dir() / key
    cached = _try_load(path) if use_cache and net.sha256 else None
    if cached is not None and cached[1].get("dataset") == dataset.name:
        t = cached[0]
        radii = {k: t[f"radius_{k}"] for k in KS}
        mu, sigma = t["mu"].numpy(), t["sigma"].numpy()
        classes = t["classes"] if len(t["classes"]) else None
        return Reference(dataset.name, dataset.split, n, net.sha256, t["features"], classes, labels, mu, sigma,
                         radii, images)  # fmt: skip
    feats, classes = features_and_classes(net, images, progress)
    mu, sigma = feature_statistics(feats)
    radii = knn_radii(feats, KS)
    ref = Reference(dataset.name, dataset.split, n, net.sha256, feats, classes, labels, mu, sigma, radii, images)
    if use_cache and net.sha256:
        tensors = {
            "features": feats,
            "classes": classes if classes is not None else torch.empty(0, dtype=torch.long),
            "mu": torch.from_numpy(mu),
            "sigma": torch.from_numpy(sigma),
            **{f"radius_{k}": radii[k] for k in KS},
        }
        _atomic_save(tensors, path, {"dataset": dataset.name, "split": dataset.split, "n": n, "net": net.sha256})
    return ref


def train_nn_distances(
    ref: Reference, train_images: np.ndarray, *, use_cache: bool = True, progress: Progress | None = None
) -> torch.Tensor:
    """Pixel-space distance from each reference image to its nearest training image (pixels in [0, 1]).

    Cached per (dataset, split, n, number of training images), since runs trained on a limited
    training set compare with that set.
    """
    assert ref.images is not None
    key = f"{_slug(ref.dataset)}-{ref.split}-n{ref.n}-train{len(train_images)}-nn-v{CACHE_VERSION}.safetensors"
    path = reference_dir() / key
    cached = _try_load(path) if use_cache else None
    if cached is not None and cached[1].get("dataset") == ref.dataset:
        return cached[0]["distance"]
    dist = pixel_nn_distances(ref.images, train_images, progress=progress)
    if use_cache:
        _atomic_save({"distance": dist}, path, {"dataset": ref.dataset, "split": ref.split, "n": ref.n})
    return dist


def features_and_classes(
    net: FeatureNet, images: torch.Tensor, progress: Progress | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``net.features_and_classes`` of images (N, C, H, W) in chunks of CHUNK, reporting progress."""
    if len(images) <= CHUNK:
        out = net.features_and_classes(images)
        if progress is not None:
            progress(len(images))
        return out
    feats, classes = [], []
    for i in range(0, len(images), CHUNK):
        f, c = net.features_and_classes(images[i : i + CHUNK])
        feats.append(f)
        classes.append(c)
        if progress is not None:
            progress(min(i + CHUNK, len(images)))
    return torch.cat(feats), (torch.cat(classes) if classes[0] is not None else None)


def pixel_nn_distances(
    images: torch.Tensor, train_images: np.ndarray | torch.Tensor, *, progress: Progress | None = None
) -> torch.Tensor:
    """Euclidean distance (pixels in [0, 1]) from each image (N, C, H, W) to its nearest training image.

    In chunks of CHUNK images (the same with and without ``progress``, so the floats are too).
    """
    b = _flat01(torch.as_tensor(train_images))
    out = []
    for i in range(0, len(images), CHUNK):
        out.append(nearest_distances(_flat01(images[i : i + CHUNK]), b)[0])
        if progress is not None:
            progress(min(i + CHUNK, len(images)))
    return torch.cat(out) if out else torch.empty(0)


def _flat01(x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(len(x), -1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


__all__ = [
    "Reference",
    "features_and_classes",
    "pixel_nn_distances",
    "real_reference",
    "reference_dir",
    "train_nn_distances",
]
