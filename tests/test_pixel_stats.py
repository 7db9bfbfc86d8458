"""pixel_stats: the pixel-level check beside the feature-net metrics, on real digits and by-hand histograms."""

from __future__ import annotations

import time

import pytest
import torch

from genmodels.errors import ConfigError
from genmodels.eval.metrics import pixel_stats
from helpers import digits_images


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    return digits_images()[0]


def speckle(images: torch.Tensor, high: int = 5, seed: int = 0) -> torch.Tensor:
    """Lift every black pixel to a random level in 0..high, as a sampler's residual noise does."""
    g = torch.Generator().manual_seed(seed)
    lift = torch.randint(0, high + 1, images.shape, generator=g, dtype=torch.uint8)
    return torch.where(images == 0, lift, images)


def test_identical_sets_are_at_distance_zero_and_shares_match(real):
    s = pixel_stats(real, real.clone())
    assert s["pixel_hist_tv"] == 0.0 and s["pixel_w1"] == 0.0
    assert s["black_share"] == s["real_black_share"] == pytest.approx(float((real == 0).double().mean()))
    near = float(((real >= 1) & (real <= 5)).double().mean())
    assert s["near_black_share"] == s["real_near_black_share"] == pytest.approx(near)
    assert s["real_black_share"] > 0.3  # digits are mostly black background: the test is about that


def test_speckled_black_is_far_from_the_real_images_and_a_clean_copy_is_not(real):
    half = len(real) // 2
    a, b = real[:half], real[half:]
    clean = pixel_stats(a, b)
    spk = pixel_stats(speckle(a), b)
    assert clean["pixel_hist_tv"] < 0.05
    assert spk["pixel_hist_tv"] > 5 * clean["pixel_hist_tv"] and spk["pixel_hist_tv"] > 0.2
    assert spk["pixel_w1"] > 5 * clean["pixel_w1"]
    assert spk["black_share"] < 0.3 * spk["real_black_share"]
    assert spk["near_black_share"] > 0.25


def test_w1_of_a_uniform_shift_is_the_shift(real):
    low = (real // 2).to(torch.uint8)  # 0..127, room to shift without clipping
    for k in (1, 3, 40):
        s = pixel_stats(low + k, low)
        assert s["pixel_w1"] == pytest.approx(k, abs=1e-9)
        assert s["black_share"] == 0.0


def test_values_by_hand_on_tiny_histograms():
    # Samples: levels {0, 0, 2, 10}; real: {0, 0, 0, 10}. p - q = (-1/4 at 0, +1/4 at 2): tv = 1/4;
    # the cumulative shares differ by 1/4 on levels 0..1: w1 = 2 * 1/4 gray levels.
    samples = torch.tensor([0, 0, 2, 10], dtype=torch.uint8).view(1, 1, 2, 2)
    real = torch.tensor([0, 0, 0, 10], dtype=torch.uint8).view(1, 1, 2, 2)
    s = pixel_stats(samples, real)
    assert s["pixel_hist_tv"] == pytest.approx(0.25)
    assert s["pixel_w1"] == pytest.approx(0.5)
    assert s["black_share"] == 0.5 and s["real_black_share"] == 0.75
    assert s["near_black_share"] == 0.25 and s["real_near_black_share"] == 0.0
    # Disjoint supports: tv 1, w1 the distance between the two levels.
    s = pixel_stats(torch.full((3, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(5, 1, 2, 2, dtype=torch.uint8))
    assert s["pixel_hist_tv"] == 1.0 and s["pixel_w1"] == 255.0


def test_colour_images_pool_channels_and_bad_inputs_are_clear_errors():
    rgb = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert pixel_stats(rgb, rgb)["pixel_hist_tv"] == 0.0
    with pytest.raises(ConfigError, match="uint8"):
        pixel_stats(rgb.float() / 255, rgb)
    with pytest.raises(ConfigError, match="one image shape"):
        pixel_stats(rgb, rgb[:, :1])


def test_ten_thousand_fashion_mnist_sized_images_take_well_under_a_second():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (10000, 1, 28, 28), generator=g, dtype=torch.uint8)
    b = torch.randint(0, 256, (10000, 1, 28, 28), generator=g, dtype=torch.uint8)
    pixel_stats(a[:10], b[:10])
    t0 = time.perf_counter()
    pixel_stats(a, b)
    assert time.perf_counter() - t0 < 1.0
