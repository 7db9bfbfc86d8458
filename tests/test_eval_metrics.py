"""The sample-quality metrics against independent implementations and known values.

FID is checked against torchmetrics' implementation and pytorch-fid's formula (scipy's matrix square
root); precision / recall / density / coverage against the reference package of Naeem et al. (prdc)
on identical features, and against that package's published Gaussian example.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from genmodels.errors import ConfigError
from genmodels.eval.metrics import (
    class_coverage,
    feature_statistics,
    fid,
    frechet_distance,
    kid,
    knn_radii,
    memorisation,
    mmd2_unbiased,
    nearest_distances,
    prdc,
)


def correlated(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """Features with a non-trivial covariance (so the matrix square root matters)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(99)) / math.sqrt(d)
    return (torch.randn(n, d, generator=g) * scale) @ (torch.eye(d) + mix) + shift


def pytorch_fid_formula(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance: scipy.linalg.sqrtm of the covariance product."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))  # pytorch-fid passes disp=False, deprecated in SciPy 1.18
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("shift,scale", [(0.3, 1.0), (0.0, 1.3), (0.05, 0.9)])
def test_fid_matches_pytorch_fid_formula_and_torchmetrics(shift, scale):
    from torchmetrics.image.fid import FrechetInceptionDistance

    a = correlated(3000, 64, seed=1)
    b = correlated(2500, 64, seed=2, shift=shift, scale=scale)
    ours = fid(a, b)
    ref = pytorch_fid_formula(*feature_statistics(a), *feature_statistics(b))
    assert ours == pytest.approx(ref, rel=1e-6)

    class Identity(torch.nn.Module):  # torchmetrics' FID on our features: a pass-through "feature extractor"
        num_features = 64

        def forward(self, x):
            return x.double()

    tm = FrechetInceptionDistance(feature=Identity())
    tm.update(a.double(), real=True)
    tm.update(b.double(), real=False)
    assert ours == pytest.approx(float(tm.compute()), rel=1e-6)
    assert ours > 0


def test_fid_statistics_are_float64_and_fid_is_zero_for_identical_sets():
    a = correlated(500, 16, seed=3).float()
    mu, sigma = feature_statistics(a)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(a.double().numpy(), rowvar=False), rtol=1e-10)
    assert abs(fid(a, a)) < 1e-8
    # Moving the mean by v adds exactly |v|^2.
    v = torch.full((16,), 0.5)
    assert fid(a, a + v) == pytest.approx(16 * 0.25, rel=1e-9)
    # Two Gaussians with known statistics: d^2 = |mu|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    expect = 1.0 + (1 + 9 - 2 * 3) + (4 + 1 - 2 * 2)
    assert frechet_distance(np.array([1.0, 0.0]), s1, np.zeros(2), s2) == pytest.approx(expect, rel=1e-12)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_a_shift():
    a, b = correlated(4000, 32, seed=4), correlated(4000, 32, seed=5)
    same = kid(a, b, subsets=50, subset_size=500)
    # Unbiased: the subset mean scatters around 0 within a few standard errors.
    assert abs(same["mean"]) < 4 * same["std"] / math.sqrt(50) + 1e-6
    shifted = [kid(a, b + s, subsets=50, subset_size=500)["mean"] for s in (0.1, 0.3, 0.6)]
    assert same["mean"] < shifted[0] < shifted[1] < shifted[2]
    assert kid(a, b, subset_size=10**6)["subset_size"] == 2000


def test_kid_on_small_sets_draws_different_subsets():
    # 363 emoji test images against 363 samples: a subset of the whole set drew the same two sets every
    # time and reported a spread of 0. Half-size subsets differ, so the spread is real.
    a, b = correlated(363, 32, seed=8), correlated(363, 32, seed=9, shift=0.3)
    r = kid(a, b)
    assert r["subset_size"] == 181
    assert r["std"] > 0.05 * abs(r["mean"]) > 0
    with pytest.raises(ConfigError, match="at least 4"):
        kid(a[:3], b)


def test_kid_matches_the_estimator_computed_by_hand():
    x, y = correlated(40, 8, seed=6), correlated(40, 8, seed=7, shift=0.2)
    d = x.shape[1]
    k = lambda a, b: (a.double() @ b.double().T / d + 1) ** 3  # noqa: E731
    m = 40
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    by_hand = (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean()
    assert mmd2_unbiased(x, y) == pytest.approx(float(by_hand), rel=1e-5)
    # kid averages that estimator over random half-size subsets: close to the whole-set value here.
    r = kid(x, y, subsets=200)
    assert r["subset_size"] == 20
    assert abs(r["mean"] - float(by_hand)) < 4 * r["std"] / math.sqrt(200)


def test_prdc_matches_the_reference_package_on_identical_features():
    import prdc as prdc_ref

    real = correlated(1200, 24, seed=8).numpy()
    fake = correlated(900, 24, seed=9, shift=0.15, scale=1.2).numpy()
    for k in (3, 5):
        ref = prdc_ref.compute_prdc(real, fake, nearest_k=k)
        ours = prdc(torch.from_numpy(real), torch.from_numpy(fake), k_pr=k, k_dc=k)
        for key in ("precision", "recall", "density", "coverage"):
            assert ours[key] == pytest.approx(float(ref[key]), abs=2e-3), (k, key)


def test_prdc_reproduces_the_reference_gaussian_example():
    """prdc's README: real and fake ~ N(0, I), 10,000 x 1,000, k = 5 -> precision 0.4772, recall 0.4705,
    density 1.0555, coverage 0.9735 (one unseeded draw). Over seeds the four move by about +-0.015,
    +-0.015, +-0.06 and +-0.005 (measured here), so the tolerances cover the draw, not the formula,
    which the test above pins exactly."""
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.standard_normal((10000, 1000), dtype=np.float32))
    fake = torch.from_numpy(rng.standard_normal((10000, 1000), dtype=np.float32))
    m = prdc(real, fake, k_pr=5, k_dc=5)
    assert m["precision"] == pytest.approx(0.4772, abs=0.025)
    assert m["recall"] == pytest.approx(0.4705, abs=0.025)
    assert m["density"] == pytest.approx(1.0555, abs=0.1)
    assert m["coverage"] == pytest.approx(0.9735, abs=0.01)


def test_knn_radii_skip_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    r = knn_radii(x, (1, 2))
    assert r[1].tolist() == pytest.approx([1.0, 1.0, 2.0, 4.0])
    assert r[2].tolist() == pytest.approx([3.0, 2.0, 3.0, 6.0])


def test_a_collapsed_generator_has_no_recall_or_coverage_but_can_look_precise():
    real = correlated(2000, 16, seed=10)
    fake = real[7:8].repeat(2000, 1)  # one real point, repeated
    m = prdc(real, fake)
    assert m["recall"] < 0.01 and m["coverage"] < 0.01
    assert m["precision"] == 1.0  # the one image is a perfectly "realistic" one


def test_chunked_nearest_distances_equal_brute_force(monkeypatch):
    import genmodels.eval.metrics as metrics

    monkeypatch.setattr(metrics, "_BLOCK_FLOATS", 300)  # force many chunks
    a, b = correlated(97, 12, seed=11), correlated(151, 12, seed=12)
    dist, idx = nearest_distances(a, b)
    full = torch.cdist(a.double(), b.double())
    torch.testing.assert_close(dist.double(), full.min(1).values, rtol=1e-4, atol=1e-4)
    assert (idx == full.argmin(1)).float().mean() > 0.98  # ties aside, the same neighbours
    r = knn_radii(a, (3,))[3]
    torch.testing.assert_close(r.double(), torch.cdist(a.double(), a.double()).sort(1).values[:, 3], atol=1e-4, rtol=0)


def test_class_coverage_counts_classes_and_kl():
    data = torch.arange(1000) % 10  # balanced
    assert class_coverage(data, data, 10)["kl"] == pytest.approx(0.0, abs=1e-3)
    assert class_coverage(data, data, 10)["covered"] == 1.0
    one = torch.full((500,), 3)
    c = class_coverage(one, data, 10)
    assert c["covered"] == pytest.approx(0.1)
    assert c["kl"] == pytest.approx(math.log(10), rel=1e-3)  # KL of a point mass from uniform
    # Half the classes missing, the rest balanced: coverage 0.5, KL log 2.
    half = torch.arange(1000) % 5
    c = class_coverage(half, data, 10)
    assert c["covered"] == 0.5 and c["kl"] == pytest.approx(math.log(2), rel=1e-3)


def test_memorisation_flags_copies_of_training_images():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(500, 50, generator=g)
    test = torch.rand(200, 50, generator=g)  # fresh draws of the same distribution
    test_nn = nearest_distances(test, train)[0]
    fresh = memorisation(nearest_distances(torch.rand(200, 50, generator=g), train)[0], test_nn)
    copies = memorisation(nearest_distances(train[:200] + 1e-3, train)[0], test_nn)
    assert 0.9 < fresh["ratio"] < 1.1 and fresh["near_copies"] < 0.05
    assert copies["ratio"] < 0.01 and copies["near_copies"] == 1.0


def test_fid_of_a_singular_covariance_falls_back_and_still_matches():
    a = correlated(40, 64, seed=13)  # 40 vectors in 64 dimensions: a singular covariance
    b = correlated(500, 64, seed=14, shift=0.2)
    assert fid(a, b) == pytest.approx(pytorch_fid_formula(*feature_statistics(a), *feature_statistics(b)), rel=1e-5)
