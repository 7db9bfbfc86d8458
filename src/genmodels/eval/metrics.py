"""Sample-quality metrics on feature vectors: FID, KID, precision / recall, density / coverage, class
coverage and the nearest-training-image memorisation check; and one on pixels, ``pixel_stats``.

Every feature metric takes plain tensors of features (N, D) (any float dtype, any device; moved to the
CPU) and returns Python floats, so they work on any feature space, the shipped feature networks'
or Inception's. k-NN computations run in chunks of rows, so 10,000 x 10,000 distance matrices never
sit in memory at once. ``pixel_stats`` takes the uint8 images themselves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from genmodels.errors import ConfigError

# Rows of a distance block per chunk: a block is chunk x N floats (about 64 MB for N = 10,000).
_BLOCK_FLOATS = 16 * 1024 * 1024


def _as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ConfigError(f"features must be a 2-D array (N, D), got shape {list(t.shape)}")
    return t.detach().cpu().to(dtype)


# ----------------------------------------------------------------------------- FID


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), both float64.

    The covariance divides by N - 1, as pytorch-fid and torchmetrics do.
    """
    f = _as_tensor(features, torch.float64)
    if len(f) < 2:
        raise ConfigError(f"FID needs at least 2 feature vectors per set, got {len(f)}")
    mu = f.mean(0)
    centred = f - mu
    sigma = centred.T @ centred / (len(f) - 1)
    return mu.numpy(), sigma.numpy()


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, Eq. 6), float64.

        d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))

    sigma1 sigma2 is similar to the symmetric PSD matrix L^T sigma2 L, with sigma1 = L L^T (Cholesky),
    so tr((sigma1 sigma2)^(1/2)) is the sum of the square roots of that matrix's eigenvalues: one
    symmetric eigenvalue problem, stable and free of the complex parts a general matrix square root
    (scipy.linalg.sqrtm) can produce. A singular sigma1 (fewer vectors than dimensions) falls back to
    its symmetric square root s1 and the eigenvalues of s1 sigma2 s1.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ConfigError(f"FID statistics differ in dimension: {mu1.shape} vs {mu2.shape}")
    try:
        low = np.linalg.cholesky(sigma1)
        m = low.T @ sigma2 @ low
    except np.linalg.LinAlgError:
        s1 = _sqrt_psd(sigma1)
        m = s1 @ sigma2 @ s1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def fid(real: Any, fake: Any) -> float:
    """FID between two sets of features (N, D) and (M, D), with float64 statistics."""
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


# ----------------------------------------------------------------------------- KID


def _poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y / D + 1)^3, the kernel of Binkowski et al. 2018."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD^2 of two equal-size sets with KID's cubic polynomial kernel (see ``kid``)."""
    m = len(x)
    kxx, kyy, kxy = (_poly_kernel(a, b).double() for a, b in ((x, x), (y, y), (x, y)))
    mmd = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(mmd - 2.0 * kxy.sum() / (m * m))


def kid(real: Any, fake: Any, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 estimate with a cubic
    polynomial kernel, averaged over random subsets.

    Per subset of m real x and m fake y (drawn without replacement):
        MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
                  - 2 sum_{i, j} k(x_i, y_j) / m^2

    Args:
        subset_size: m; capped at half the smaller set's size, so that subsets differ and ``std`` (their
            spread, as torch-fidelity and clean-fid report it) says how much the estimate moves with
            the draw. A cap at the whole set would draw the same two sets every time: std 0 whatever
            the sample size (363 emoji test images gave "+- 0.000").

    Returns:
        ``{"mean": ..., "std": ..., "subsets": ..., "subset_size": ...}`` (the estimate is unbiased, so
        it can be slightly negative when the two distributions match).
    """
    # Kernel values in float32 (the matmuls dominate and run ~4x faster than in float64), summed in
    # float64: the sums of m^2 values are where precision would be lost.
    x, y = _as_tensor(real), _as_tensor(fake)
    m = min(subset_size, min(len(x), len(y)) // 2)
    if m < 2:
        raise ConfigError(f"KID needs at least 4 vectors per set, got {len(x)} and {len(y)}")
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        xs = x[torch.randperm(len(x), generator=g)[:m]]
        ys = y[torch.randperm(len(y), generator=g)[:m]]
        vals.append(mmd2_unbiased(xs, ys))
    v = np.asarray(vals)
    return {"mean": float(v.mean()), "std": float(v.std()), "subsets": subsets, "subset_size": m}


# ----------------------------------------------------------------------------- k-NN geometry


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return x.square().sum(1)


def _distance_block(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (len(a), len(b)) from |a|^2 + |b|^2 - 2 a.b, clamped at 0 before the root."""
    d2 = torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, alpha=-2.0)
    return d2.clamp_(min=0.0).sqrt_()


def _chunk_rows(n_cols: int) -> int:
    return max(1, _BLOCK_FLOATS // max(1, n_cols))


def knn_radii(x: Any, ks: tuple[int, ...] = (3,)) -> dict[int, torch.Tensor]:
    """Distance from each row of x (N, D) to its k-th nearest other row, for each k in ks.

    The point itself (distance 0) is the first neighbour and is skipped, as in Kynkaanniemi et al.
    2019 and the reference implementation of Naeem et al. 2020.

    Returns:
        ``{k: (N,) float32 distances}``.
    """
    x = _as_tensor(x)
    kmax = max(ks)
    if len(x) <= kmax:
        raise ConfigError(f"k-NN with k={kmax} needs more than {kmax} vectors, got {len(x)}")
    sq = _sq_norms(x)
    step = _chunk_rows(len(x))
    out = torch.empty(len(x), kmax + 1)
    for i in range(0, len(x), step):
        d = _distance_block(x[i : i + step], sq[i : i + step], x, sq)
        out[i : i + step] = d.topk(kmax + 1, dim=1, largest=False).values
    return {k: out[:, k].clone() for k in ks}


def prdc(
    real: Any,
    fake: Any,
    *,
    k_pr: int = 3,
    k_dc: int = 5,
    real_radii: dict[int, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Precision and recall (Kynkaanniemi et al. 2019, k = k_pr) and density and coverage (Naeem et
    al. 2020, k = k_dc) of fake features against real ones.

    With B(x, r) the ball around x of radius r and NND_k(x) the distance from x to its k-th nearest
    neighbour within its own set:
        precision = share of fakes inside some real ball B(x_i, NND_k(x_i))
        recall    = share of reals inside some fake ball B(y_j, NND_k(y_j))
        density   = (1 / (k M)) sum_j sum_i 1[y_j in B(x_i, NND_k(x_i))]      (Naeem Eq. 5)
        coverage  = (1 / N) sum_i 1[some y_j in B(x_i, NND_k(x_i))]           (Naeem Eq. 6)
    "Inside" is strict (distance < radius), as in the reference implementation (clovaai/generative-evaluation-prdc).

    Args:
        real: (N, D) features; fake: (M, D) features.
        real_radii: precomputed ``knn_radii(real, (k_pr, k_dc))`` (the reference cache keeps them).

    Returns:
        ``{"precision", "recall", "density", "coverage", "k_pr", "k_dc"}``.
    """
    x, y = _as_tensor(real), _as_tensor(fake)
    if x.shape[1] != y.shape[1]:
        raise ConfigError(f"real and fake features differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    radii = real_radii if real_radii is not None and {k_pr, k_dc} <= set(real_radii) else knn_radii(x, (k_pr, k_dc))
    r_pr, r_dc = radii[k_pr].float(), radii[k_dc].float()
    r_fake = knn_radii(y, (k_pr,))[k_pr]
    x_sq, y_sq = _sq_norms(x), _sq_norms(y)
    in_real_pr = torch.zeros(len(y), dtype=torch.bool)
    density_count = torch.zeros(len(y), dtype=torch.float64)
    recall_hit = torch.zeros(len(x), dtype=torch.bool)
    nearest_fake = torch.full((len(x),), math.inf)
    step = _chunk_rows(len(x))
    for j in range(0, len(y), step):
        d = _distance_block(y[j : j + step], y_sq[j : j + step], x, x_sq)  # (chunk of fakes, N reals)
        in_real_pr[j : j + step] = (d < r_pr[None, :]).any(1)
        density_count[j : j + step] = (d < r_dc[None, :]).sum(1).double()
        recall_hit |= (d < r_fake[j : j + step, None]).any(0)
        nearest_fake = torch.minimum(nearest_fake, d.min(0).values)
    return {
        "precision": float(in_real_pr.double().mean()),
        "recall": float(recall_hit.double().mean()),
        "density": float(density_count.mean() / k_dc),
        "coverage": float((nearest_fake < r_dc).double().mean()),
        "k_pr": k_pr,
        "k_dc": k_dc,
    }


def nearest_distances(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance from each row of a (N, D) to its nearest row of b (M, D), and that row's index.

    Returns:
        (N,) float32 distances and (N,) int64 indices into b.
    """
    a, b = _as_tensor(a), _as_tensor(b)
    a_sq, b_sq = _sq_norms(a), _sq_norms(b)
    step = _chunk_rows(len(b))
    dist, idx = torch.empty(len(a)), torch.empty(len(a), dtype=torch.long)
    for i in range(0, len(a), step):
        d2 = torch.addmm(b_sq[None, :], a[i : i + step], b.T, alpha=-2.0)  # |a|^2 is constant per row
        v, ix = d2.min(1)
        dist[i : i + step] = (v + a_sq[i : i + step]).clamp_(min=0.0).sqrt_()
        idx[i : i + step] = ix
    return dist, idx


# ----------------------------------------------------------------------------- classes and copies


def class_coverage(sample_classes: Any, data_classes: Any, num_classes: int, *, min_share: float = 0.25) -> dict:
    """How the feature net's class predictions on samples compare with its predictions on real data.

    Predictions on both sides (rather than true labels on the data side) make the classifier's own
    confusions cancel.

    Args:
        sample_classes: (M,) predicted classes of the samples.
        data_classes: (N,) predicted classes of real test images.
        min_share: a class counts as covered when its share among the samples is at least this
            fraction of its share in the data (0.25: a class may be under-produced 4x and still count).

    Returns:
        ``{"covered": share of classes covered, "kl": KL(p_samples || p_data) in nats,
        "histogram": p_samples, "data_histogram": p_data}``. The KL is 0 for a matching histogram
        and log(num_classes) for samples of one class when the data are balanced.
    """
    s = torch.bincount(torch.as_tensor(sample_classes).long().cpu(), minlength=num_classes).double()
    d = torch.bincount(torch.as_tensor(data_classes).long().cpu(), minlength=num_classes).double()
    if s.sum() == 0 or d.sum() == 0:
        raise ConfigError("class coverage needs at least one sample and one real image")
    ps, pd = s / s.sum(), d / d.sum()
    present = pd > 0
    covered = (ps[present] >= min_share * pd[present]).double().mean()
    # Classes the data never shows cannot be matched: smooth the data histogram by half a count.
    pd_s = (d + 0.5) / (d.sum() + 0.5 * num_classes)
    nz = ps > 0
    kl = (ps[nz] * (ps[nz] / pd_s[nz]).log()).sum()
    return {
        "covered": float(covered),
        "kl": float(kl),
        "min_share": min_share,
        "histogram": [round(float(v), 5) for v in ps],
        "data_histogram": [round(float(v), 5) for v in pd],
    }


def memorisation(sample_nn: torch.Tensor, test_nn: torch.Tensor, *, quantile: float = 0.01) -> dict[str, float]:
    """Compare the distance from each sample to its nearest training image with the same distance for
    real test images (which the model never saw).

    Args:
        sample_nn: (M,) nearest-training-image distances of samples (pixels in [0, 1]).
        test_nn: (N,) the same for real test images.
        quantile: a sample counts as a near copy when it is closer to a training image than this
            quantile of the test images' distances.

    Returns:
        ``{"sample_nn_mean", "test_nn_mean", "ratio"}`` (ratio < 1: samples sit closer to training
        images than fresh data does, a sign of copying; about 1 is healthy; > 1 samples lie off the
        data) and ``near_copies``, the share of samples under the test quantile (about ``quantile``
        for a model that generalises, near 1 for one that replays its training set).
    """
    s, t = torch.as_tensor(sample_nn).double(), torch.as_tensor(test_nn).double()
    thresh = float(torch.quantile(t, quantile))
    return {
        "sample_nn_mean": float(s.mean()),
        "sample_nn_median": float(s.median()),
        "test_nn_mean": float(t.mean()),
        "test_nn_median": float(t.median()),
        "ratio": float(s.mean() / t.mean()) if float(t.mean()) > 0 else math.nan,
        "near_copies": float((s < thresh).double().mean()),
        "quantile": quantile,
    }


# ----------------------------------------------------------------------------- pixel intensities


def _intensity_histogram(images: torch.Tensor, name: str) -> torch.Tensor:
    """The share of pixels at each of the 256 gray levels of uint8 images, all channels pooled; float64 (256,)."""
    t = torch.as_tensor(images)
    if t.dtype != torch.uint8:
        raise ConfigError(f"pixel_stats takes uint8 images (N, C, H, W); {name} is {t.dtype}")
    if t.numel() == 0:
        raise ConfigError(f"pixel_stats needs at least one pixel; {name} is empty")
    counts = torch.bincount(t.detach().cpu().reshape(-1).long(), minlength=256)
    return counts.double() / t.numel()


def pixel_stats(samples: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """How far the samples' pixel intensities lie from the real images', a check the feature networks are
    blind to: speckle of a gray level or two on a black background barely moves their features (and FID)
    but shows here as black pixels lifted to levels 1..5.

    With p and q the 256-bin intensity histograms (shares) of samples and real images:
        pixel_hist_tv = 0.5 sum_k |p_k - q_k|, the total-variation distance, in [0, 1];
        pixel_w1      = sum_k |P_k - Q_k| over the cumulative shares P, Q: the 1-Wasserstein (earth mover's)
                        distance between the two intensity distributions, in gray levels (a shift of every
                        pixel by +k gray levels gives k).

    Args:
        samples: (N, C, H, W) uint8.
        real: (M, C, H, W) uint8, the same C, H, W.

    Returns:
        ``pixel_hist_tv``, ``pixel_w1``, ``black_share`` / ``real_black_share`` (share of pixels exactly 0)
        and ``near_black_share`` / ``real_near_black_share`` (share in 1..5), Python floats.
    """
    s, r = torch.as_tensor(samples), torch.as_tensor(real)
    if s.ndim != 4 or r.ndim != 4 or s.shape[1:] != r.shape[1:]:
        raise ConfigError(
            f"pixel_stats takes two image sets (N, C, H, W) of one image shape, got {list(s.shape)} and {list(r.shape)}"
        )
    p, q = _intensity_histogram(s, "samples"), _intensity_histogram(r, "real")
    return {
        "pixel_hist_tv": float(0.5 * (p - q).abs().sum()),
        "pixel_w1": float((p.cumsum(0) - q.cumsum(0)).abs().sum()),
        "black_share": float(p[0]),
        "real_black_share": float(q[0]),
        "near_black_share": float(p[1:6].sum()),
        "real_near_black_share": float(q[1:6].sum()),
    }


__all__ = [
    "class_coverage",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "kid",
    "knn_radii",
    "memorisation",
    "nearest_distances",
    "pixel_stats",
    "prdc",
]
