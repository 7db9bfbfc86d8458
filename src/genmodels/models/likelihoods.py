"""Per-pixel observation models shared by the likelihood-based families (VAE, PixelCNN).

Each function returns ``log p(x | params)`` summed over all pixels of each image, in nats, shape (B,).
Images come in [0, 1] as the data boundary defines them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Bern(x; sigmoid(logits)) summed per image; x in {0, 1} (or [0, 1] for the cross-entropy)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def discretized_logistic_log_prob(
    mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """log P(x) under a logistic discretised into ``bins`` levels, summed per image.

    The PixelCNN++ observation model (Salimans et al. 2017, Eq. 2) with one component: the mass of
    bin k is the logistic CDF between the bin edges, the two end bins take the tails, so the masses
    of all bins sum to one and the result is an exact log-probability of 8-bit data.

    Args:
        mean: (B, C, H, W) logistic location in [-1, 1] units.
        log_scale: (B, C, H, W) log of the logistic scale.
        x: (B, C, H, W) in [0, 1], multiples of 1 / (bins - 1).
    """
    return discretized_logistic_log_prob_each(mean, log_scale, x, bins).flatten(1).sum(1)


def discretized_logistic_log_prob_each(
    mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """log P(x) of each element under a discretised logistic (not summed); shapes broadcast.

    Args:
        mean: logistic location in [-1, 1] units.
        log_scale: log of the logistic scale (clamped at -7, as PixelCNN++ does).
        x: values in [0, 1], multiples of 1 / (bins - 1).

    Returns:
        the broadcast shape of the inputs, log-probabilities in nats (<= 0).
    """
    x = x * 2.0 - 1.0
    half_bin = 1.0 / (bins - 1)
    log_scale = log_scale.clamp(min=-7.0)
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    plus_in = inv_s * (centered + half_bin)
    min_in = inv_s * (centered - half_bin)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), for the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # log (1 - sigmoid(min_in)), for the highest bin
    # Above the mean both CDFs are near 1: subtract the complements instead (no cancellation).
    upper = centered > 0
    cdf_delta = torch.where(
        upper, torch.sigmoid(-min_in) - torch.sigmoid(-plus_in), torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    )
    mid_in = inv_s * centered
    # When the bin mass underflows, approximate it by density * bin width (width 2 / (bins - 1)).
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in) - math.log((bins - 1) / 2.0)
    # PixelCNN++ switches below 1e-5, for float32; float64 keeps the exact mass down to 1e-30.
    floor = 1e-30 if cdf_delta.dtype == torch.float64 else 1e-5
    log_mid = torch.where(cdf_delta > floor, torch.log(cdf_delta.clamp(min=floor)), log_pdf_mid)
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_mid))


def discretized_logistic_mixture_log_prob(
    logit_probs: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """log P(x) under a mixture of K discretised logistics per pixel and channel, summed per image.

    PixelCNN++ (Salimans et al. 2017, Eq. 2): P(x) = sum_k pi_k [sigma((x + 1/255 - mu_k) / s_k) -
    sigma((x - 1/255 - mu_k) / s_k)], with the edge bins taking the tails. Each colour channel has its
    own mixture (its dependence on earlier channels comes from the network's channel masking).

    Args:
        logit_probs: (B, C, K, H, W) unnormalised log mixture weights.
        mean: (B, C, K, H, W) component locations in [-1, 1] units.
        log_scale: (B, C, K, H, W) component log-scales.
        x: (B, C, H, W) in [0, 1], multiples of 1 / (bins - 1).

    Returns:
        (B,) log-probabilities in nats.
    """
    lp = discretized_logistic_log_prob_each(mean, log_scale, x.unsqueeze(2), bins)
    return torch.logsumexp(lp + F.log_softmax(logit_probs, dim=2), dim=2).flatten(1).sum(1)


def gaussian_log_prob(mean: torch.Tensor, log_sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, exp(log_sigma)^2) summed per image (a density, not a probability)."""
    var_term = 2.0 * log_sigma
    lp = -0.5 * ((x - mean).square() * torch.exp(-var_term) + var_term + math.log(2 * math.pi))
    return lp.flatten(1).sum(1)


def dequantize(x: torch.Tensor, bins: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of 8-bit data: (k + u) / bins for x = k / (bins - 1), u ~ U(0, 1).

    A continuous density p on [0, 1] then bounds the discrete likelihood (Theis et al. 2016):
    log P(k) >= E_u[log p((k + u) / bins)] - D log(bins).
    """
    k = torch.round(x * (bins - 1))
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (k + u) / bins


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Convert a per-image NLL in nats to bits per dimension."""
    return nats / (dims * math.log(2.0))
