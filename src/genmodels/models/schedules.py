"""Noise schedules of the diffusion family, computed in float64 and free of any network.

Indexing follows the code of Ho et al. (2020) and diffusers: timestep ``t`` in ``0 .. T-1`` here is
step ``t + 1`` of the paper, so ``alphas_cumprod[0]`` is the paper's alpha-bar_1 (nearly clean) and
``alphas_cumprod[T-1]`` its alpha-bar_T (nearly pure noise). The forward process is

    q(x_t | x0) = N(sqrt(alphas_cumprod[t]) * x0, (1 - alphas_cumprod[t]) * I)        (Ho et al. Eq. 4)

and we write alpha_t = sqrt(alphas_cumprod[t]), sigma_t = sqrt(1 - alphas_cumprod[t]) and the
half log signal-to-noise ratio lambda_t = log(alpha_t / sigma_t) as Lu et al. (2022) do.
"""

from __future__ import annotations

import math

import torch

from genmodels.errors import ConfigError, unknown

SCHEDULES = ("linear", "cosine")


def linear_betas(timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Ho et al. (2020): betas linear from 1e-4 to 0.02 over T = 1000, rescaled by 1000 / T for other T
    (as Nichol and Dhariwal 2021 do) so that the total noise added stays the same; clipped to
    ``max_beta`` for very small T. float64 (T,)."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(max=max_beta)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol and Dhariwal (2021, Eq. 17): alpha-bar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2,
    beta_t = 1 - alpha-bar(t) / alpha-bar(t-1) clipped to ``max_beta`` (their 0.999). float64 (T,)."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)


class NoiseSchedule:
    """The discrete variance-preserving schedule: betas and everything derived from them, in float64.

    Args:
        kind: ``linear`` (Ho et al. 2020) or ``cosine`` (Nichol and Dhariwal 2021).
        timesteps: T, the number of diffusion steps.
    """

    def __init__(self, kind: str = "linear", timesteps: int = 1000) -> None:
        if kind not in SCHEDULES:
            raise unknown("noise schedule", kind, SCHEDULES)
        if timesteps < 2:
            raise ConfigError(f"model.timesteps must be >= 2, got {timesteps}")
        self.kind, self.timesteps = kind, timesteps
        self.betas = linear_betas(timesteps) if kind == "linear" else cosine_betas(timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        # Variance of the true posterior q(x_{t-1} | x_t, x0) (Ho et al. Eq. 7): beta-tilde_t; 0 at t = 0.
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    def __len__(self) -> int:
        return self.timesteps

    def alpha_sigma(self, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t) = (sqrt(alphas_cumprod[t]), sqrt(1 - alphas_cumprod[t])), float64."""
        abar = self.alphas_cumprod[t]
        return abar.sqrt(), (1.0 - abar).sqrt()

    def log_snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """lambda_t = log(alpha_t / sigma_t), half the log signal-to-noise ratio, float64."""
        abar = self.alphas_cumprod[t]
        return 0.5 * (torch.log(abar) - torch.log1p(-abar))

    def snr(self, t: torch.Tensor | int) -> torch.Tensor:
        """SNR(t) = alphas_cumprod[t] / (1 - alphas_cumprod[t]), float64."""
        abar = self.alphas_cumprod[t]
        return abar / (1.0 - abar)

    def at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather ``values[t]`` for a batch of timesteps (B,) and shape it (B, 1, 1, 1) like ``like``."""
        return values[t.cpu()].to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t x0 + sigma_t eps (Ho et al. Eq. 4, reparameterised); x0, eps (B, C, H, W), t (B,)."""
        abar = self.at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * eps

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x0) (Ho et al. Eq. 7):
        sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t."""
        c0 = self.betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        ct = self.alphas.sqrt() * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        return self.at(c0, t, x_t) * x0 + self.at(ct, t, x_t) * x_t


def spaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """The ``steps`` timesteps of a respaced ancestral sampler, from T-1 down, "trailing" spacing.

    round(i * T / steps) - 1 for i = steps .. 1 (Lin et al. 2024, Table 2): the first evaluation is at
    the last timestep T-1, so sampling starts from pure noise, and the spacing is even. 1 <= steps <= T.
    """
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"sampling steps must be in 1..{timesteps} (the model's timesteps), got {steps}")
    ratio = timesteps / steps
    return [round(i * ratio) - 1 for i in range(steps, 0, -1)]


SPACINGS = ("time", "logsnr", "quadratic")


LAMBDA_MIN = -5.1  # log-SNR floor of the logsnr spacing (diffusers' lambda_min_clipped for cosine)


def timestep_grid(schedule: NoiseSchedule, steps: int, spacing: str = "time") -> list[int]:
    """``steps + 1`` integer timesteps from T-1 down to 0 for an ODE sampler taking ``steps`` steps (the
    samplers evaluate the network at the first ``steps`` and then step to the clean image, not to 0:
    ``samplers.sampling_grid``).

    ``time``: round(linspace(T-1, 0, steps + 1)), as diffusers' "linspace" spacing. ``logsnr``: the
    timesteps nearest to points uniform in lambda = log(alpha / sigma) from max(lambda(T-1), LAMBDA_MIN)
    to lambda(0), the spacing Lu et al. (2022, Sec. 3.3) recommend for low-resolution images; it puts
    more steps at low noise. LAMBDA_MIN (diffusers' ``lambda_min_clipped``) matters for the cosine
    schedule, whose clipped last betas send lambda(T-1) to about -10: unclipped, 8 of 20 steps land
    on t = 992..999 (all pure noise) and the last evaluation is at t = 3 instead of 2. ``quadratic``:
    round((i / steps)^2 (T - 1)), more steps at low noise still (Song et al.'s DDIM "quad"). The first
    entry is always T-1. Strictly decreasing; 1 <= steps <= T - 1.
    """
    T = len(schedule)
    if not 1 <= steps <= T - 1:
        raise ConfigError(f"sampling steps must be in 1..{T - 1} for this sampler, got {steps}")
    if spacing not in SPACINGS:
        raise unknown("timestep spacing", spacing, SPACINGS)
    if spacing == "time":
        raw = torch.linspace(T - 1, 0, steps + 1, dtype=torch.float64).round().long().tolist()
    elif spacing == "quadratic":
        raw = (torch.linspace(1, 0, steps + 1, dtype=torch.float64).square() * (T - 1)).round().long().tolist()
    else:
        lam = schedule.log_snr(torch.arange(T))  # decreasing in t
        top = max(float(lam[-1]), LAMBDA_MIN)
        targets = torch.linspace(top, float(lam[0]), steps + 1, dtype=torch.float64)
        raw = (lam[None, :] - targets[:, None]).abs().argmin(1).tolist()
    grid = [T - 1]
    for i, t in enumerate(raw[1:], start=1):
        # Keep the grid strictly decreasing with room for the remaining steps, ending at 0.
        grid.append(int(min(max(t, steps - i), grid[-1] - 1)))
    return grid
