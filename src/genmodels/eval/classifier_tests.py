"""Classifier-based tests of class-conditional generators.

- Classification accuracy score (CAS, Ravuri and Vinyals 2019): train a classifier of the feature
  network's architecture only on generated, labelled samples and report its accuracy on the real
  test split, beside the accuracy of the same classifier trained on as many real training images.
- The augmentation experiment the tutorials promise ("generate more training data to improve
  generalisation"): test accuracy of a classifier trained on a small real subset, with and without
  the generated samples added, for the same number of updates.

A sampler here is any ``sample_fn(labels) -> images``: labels (N,) int64 in, images (N, C, H, W)
float in [0, 1] (or uint8) out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from genmodels.eval.features import FLIP_DATASETS, accuracy, train_classifier

SampleFn = Callable[[torch.Tensor], torch.Tensor]


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """n labels, every class equally often (the first n % K classes once more)."""
    return torch.arange(n) % num_classes


def balanced_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of ``per_class`` images of every class, chosen at random with a seed."""
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    # Generated images are quantised like saved samples, so CAS sees exactly what a file would hold.
    return x if x.dtype == torch.uint8 else (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def classifier_tests(
    sample_fn: SampleFn,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    dataset: str = "",
    n_generated: int = 10000,
    small_per_class: int = 100,
    epochs: float = 5.0,
    seed: int = 0,
    device: str = "auto",
    generated: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """CAS and the augmentation experiment for one conditional generator.

    Args:
        sample_fn: the generator; called once with ``n_generated`` balanced labels.
        train_images, train_labels: the real training split (uint8 (N, C, H, W), (N,)).
        test_images, test_labels: the real test split the accuracies are measured on.
        n_generated: generated images for CAS (and added in the augmentation experiment).
        small_per_class: real images per class in the augmentation experiment's small subset.
        epochs: passes over n_generated images; every classifier takes that many updates.
        generated: (images, labels) to use instead of calling sample_fn (e.g. already drawn).
        progress: called with the number of the four classifiers trained so far.

    Returns:
        ``{"cas": accuracy trained on generated only, "real": accuracy trained on n_generated
        real training images, "small_real": trained on the small real subset, "small_real_plus_generated":
        on that subset plus the generated images, "augmentation_gain": the difference of the last two,
        ...sizes, "seconds"}``, accuracies in [0, 1] on the real test split.
    """
    t0 = time.perf_counter()
    steps_epochs = epochs
    common = {
        "num_classes": num_classes,
        "flip": dataset in FLIP_DATASETS,
        "seed": seed,
        "device": device,
    }
    if generated is None:
        y_gen = balanced_labels(n_generated, num_classes)
        x_gen = _to_uint8(sample_fn(y_gen))
    else:
        x_gen, y_gen = _to_uint8(generated[0]), generated[1].long()
    n_gen = len(x_gen)
    x_test, y_test = torch.from_numpy(test_images), torch.from_numpy(test_labels)

    fitted = 0

    def fit(x: torch.Tensor, y: torch.Tensor) -> float:
        nonlocal fitted
        # Every classifier takes the same number of updates: epochs over n_gen images.
        ep = steps_epochs * n_gen / len(x)
        acc = accuracy(train_classifier(x, y, epochs=ep, **common), x_test, y_test)
        fitted += 1
        if progress is not None:
            progress(fitted)
        return acc

    cas = fit(x_gen, y_gen)
    real_idx = balanced_subset(train_labels, math.ceil(n_gen / num_classes), seed)[:n_gen]
    real = fit(torch.from_numpy(train_images[real_idx]), torch.from_numpy(train_labels[real_idx]))
    small_idx = balanced_subset(train_labels, small_per_class, seed + 1)
    x_small, y_small = torch.from_numpy(train_images[small_idx]), torch.from_numpy(train_labels[small_idx])
    small = fit(x_small, y_small)
    mixed = fit(torch.cat([x_small, x_gen]), torch.cat([y_small, y_gen]))
    return {
        "cas": cas,
        "real": real,
        "small_real": small,
        "small_real_plus_generated": mixed,
        "augmentation_gain": mixed - small,
        "n_generated": n_gen,
        "n_real": len(real_idx),
        "n_small_real": len(small_idx),
        "updates": math.ceil(steps_epochs * n_gen / 128),
        "seconds": round(time.perf_counter() - t0, 1),
    }


__all__ = ["balanced_labels", "balanced_subset", "classifier_tests"]
