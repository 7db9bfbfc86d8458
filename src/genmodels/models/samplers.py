"""Samplers of the diffusion family: stateless single steps and one loop, free of any network.

Every step maps the current sample and the network's denoised estimate to the next sample; it holds
no state (a multistep solver is handed its previous estimate explicitly), so a step can be checked
against the papers' equations one at a time. Coefficients come from the float64 schedule as Python
floats; tensors stay in the sample's dtype.

Notation (``schedules``): abar = alphas_cumprod at a timestep, alpha = sqrt(abar),
sigma = sqrt(1 - abar), lambda = log(alpha / sigma). ``x0_hat`` and ``eps_hat`` are the network's
estimates of the clean image and the noise at the current timestep, related by
x_t = alpha_t x0_hat + sigma_t eps_hat.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from genmodels.errors import unknown
from genmodels.models.schedules import NoiseSchedule, spaced_timesteps, timestep_grid

SAMPLERS = ("ddpm", "ddim", "dpm-solver")

# (x_t (B, C, H, W), t) -> (x0_hat, eps_hat), both (B, C, H, W).
Denoiser = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


def ddpm_step(
    x_t: torch.Tensor, x0_hat: torch.Tensor, abar_t: float, abar_prev: float, noise: torch.Tensor | None
) -> torch.Tensor:
    """One ancestral step x_t -> x_prev of Ho et al. (2020), from the posterior q(x_prev | x_t, x0_hat).

    With beta = 1 - abar_t / abar_prev (beta_t itself between neighbouring timesteps, the respaced
    beta of Nichol and Dhariwal 2021 Sec. 4 otherwise), Ho et al. Eq. 7 gives
        mean = sqrt(abar_prev) beta / (1 - abar_t) x0_hat + sqrt(1 - beta) (1 - abar_prev) / (1 - abar_t) x_t
        var  = beta-tilde = beta (1 - abar_prev) / (1 - abar_t)
    and x_prev = mean + sqrt(var) noise. At the last step (abar_prev = 1) var = 0 and x_prev = x0_hat,
    which is Algorithm 2's noise-free final step.

    Args:
        x_t, x0_hat: (B, C, H, W).
        abar_t, abar_prev: alphas_cumprod at the current and the next (less noisy) timestep.
        noise: N(0, I) of x_t's shape; unused (may be None) when abar_prev = 1.
    """
    beta = 1.0 - abar_t / abar_prev
    c0 = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
    ct = math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar_t)
    mean = c0 * x0_hat + ct * x_t
    var = beta * (1.0 - abar_prev) / (1.0 - abar_t)
    if var <= 0.0 or noise is None:
        return mean
    return mean + math.sqrt(var) * noise


def ddim_step(
    x_t: torch.Tensor,
    x0_hat: torch.Tensor,
    eps_hat: torch.Tensor,
    abar_t: float,
    abar_prev: float,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, Eq. 12 with sigma from Eq. 16):

        sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma noise

    eta = 0 is the deterministic DDIM; eta = 1 is the ancestral DDPM step in distribution.

    Args:
        x_t, x0_hat, eps_hat: (B, C, H, W).
        abar_t, abar_prev: alphas_cumprod at the current and the next (less noisy) timestep.
        eta: the stochasticity, >= 0.
        noise: N(0, I), needed when eta > 0.
    """
    sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t)) * math.sqrt(max(0.0, 1.0 - abar_t / abar_prev))
    direction = math.sqrt(max(0.0, 1.0 - abar_prev - sigma**2))
    x_prev = math.sqrt(abar_prev) * x0_hat + direction * eps_hat
    if sigma > 0.0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev


def dpm_solver_step(
    x_s: torch.Tensor,
    x0_s: torch.Tensor,
    abar_s: float,
    abar_t: float,
    x0_r: torch.Tensor | None = None,
    abar_r: float | None = None,
) -> torch.Tensor:
    """One step s -> t of the multistep DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095, Algorithm 2).

    With h = lambda_t - lambda_s and the data prediction x0_s at s:
        first order (no previous estimate, i.e. DDIM):   D = x0_s
        second order, previous estimate x0_r at r > s:  r_ = (lambda_s - lambda_r) / h,
                                                         D = (1 + 1 / (2 r_)) x0_s - 1 / (2 r_) x0_r
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D
    Stepping to abar_t = 1 (sigma_t = 0, lambda_t = inf) gives x_t = x0_s; it must be first order.

    Args:
        x_s, x0_s: the sample and the network's data prediction at timestep s, (B, C, H, W).
        abar_s, abar_t: alphas_cumprod at s and at the target t (t less noisy than s).
        x0_r, abar_r: the data prediction at the previous evaluation r and its alphas_cumprod, or None.
    """
    if abar_t >= 1.0:
        return x0_s
    alpha_t, sigma_t, sigma_s = math.sqrt(abar_t), math.sqrt(1.0 - abar_t), math.sqrt(1.0 - abar_s)
    lam_s, lam_t = _lambda(abar_s), _lambda(abar_t)
    h = lam_t - lam_s
    d = x0_s
    if x0_r is not None and abar_r is not None:
        r = (lam_s - _lambda(abar_r)) / h
        d = (1.0 + 0.5 / r) * x0_s - (0.5 / r) * x0_r
    return (sigma_t / sigma_s) * x_s - alpha_t * math.expm1(-h) * d


def _lambda(abar: float) -> float:
    """lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar))."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


def sampling_grid(schedule: NoiseSchedule, sampler: str, steps: int, spacing: str = "time") -> list[int]:
    """The timesteps a sampler visits: it evaluates the network at every entry but the last and steps
    from each entry to the next; the last entry is always -1, the clean image (alphas_cumprod = 1).

    ``ddpm``: the ``steps`` trailing timesteps then the clean image, so steps = T is Ho et al.'s
    Algorithm 2 and fewer steps respace it (Nichol and Dhariwal 2021). ``ddim`` and ``dpm-solver``: the
    first ``steps`` timesteps of ``timestep_grid`` (T-1 down, uniform in t or in log SNR), then the clean
    image instead of t = 0, as diffusers' DDIM (``set_alpha_to_one``) and multistep DPM-Solver
    (``final_sigmas_type="zero"``) end. Their last step, Song et al. Eq. 12 with abar_prev = 1 and Lu et
    al.'s first-order step with sigma_t = 0, returns the last evaluation's x0_hat, as Ho et al.'s
    Algorithm 2 ends. Stepping to t = 0 instead, as the papers' code does (t_min = 1 / T), returns
    alpha_0 x0_hat + sigma_0 eps_hat: the same estimate plus noise of std sigma_0 in every pixel, added
    after the last network evaluation (cosine, T = 1000: sigma_0 = 0.0064, 0.82 gray levels), which
    lifts 27% of the pixels of a black background (P(z > 0.5 / 0.82)) to levels 1..3.
    """
    if sampler not in SAMPLERS:
        raise unknown("sampler", sampler, SAMPLERS)
    if sampler == "ddpm":
        return [*spaced_timesteps(len(schedule), steps), -1]
    return [*timestep_grid(schedule, steps, spacing)[:-1], -1]


def sample_loop(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: torch.Tensor,
    *,
    sampler: str = "dpm-solver",
    steps: int | None = None,
    spacing: str = "time",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    tail: int | None = None,
) -> torch.Tensor:
    """Run a sampler from pure noise x_T to an image estimate in the model's [-1, 1] range.

    The network is evaluated ``steps`` times along ``sampling_grid``. ``ddpm`` is ancestral sampling,
    ``ddim`` uses ``eta`` (0 = deterministic), ``dpm-solver`` is DPM-Solver++(2M): second order except
    at its first and last step. Every sampler's last step lands on the clean image (abar = 1), so the
    result is the network's last x0_hat with no noise left in it.

    Args:
        denoise: (x_t, t) -> (x0_hat, eps_hat).
        schedule: the model's NoiseSchedule.
        x_T: (B, C, H, W) N(0, I) noise.
        sampler: ddpm | ddim | dpm-solver.
        steps: network evaluations; None = T for ddpm, 20 otherwise.
        spacing: time | logsnr, for ddim and dpm-solver (``timestep_grid``).
        eta: DDIM stochasticity.
        generator: the source of the ancestral noise.
        tail: run only the grid's last ``tail`` evaluations, x_T being a sample at the first of them
            (``sampling_grid(...)[-(tail + 1)]``): SDEdit's partial reverse process; None runs them all.

    Returns:
        (B, C, H, W) samples: the last x0_hat, in [-1, 1] when the denoiser clips it.
    """
    T = len(schedule)
    steps = steps if steps is not None else (T if sampler == "ddpm" else 20)
    grid = sampling_grid(schedule, sampler, steps, spacing)
    if tail is not None:
        if not 1 <= tail <= steps:
            raise ValueError(f"tail must be in 1..{steps}, got {tail}")
        grid = grid[-(tail + 1) :]
    abar = schedule.alphas_cumprod.tolist()
    x = x_T
    last: tuple[torch.Tensor, float] | None = None  # (x0_hat, abar) at the previous evaluation
    for t, t_next in itertools.pairwise(grid):
        abar_t = abar[t]
        abar_next = abar[t_next] if t_next >= 0 else 1.0
        x0_hat, eps_hat = denoise(x, t)
        stochastic = sampler == "ddpm" or (sampler == "ddim" and eta > 0)
        noise = None
        if stochastic and abar_next < 1.0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if sampler == "ddpm":
            x = ddpm_step(x, x0_hat, abar_t, abar_next, noise)
        elif sampler == "ddim":
            x = ddim_step(x, x0_hat, eps_hat, abar_t, abar_next, eta, noise)
        else:
            # First order at the first step (no history) and at the last, to sigma = 0 (t_next = -1, h = inf):
            # x0_hat, as diffusers' euler_at_final. A grid ending at t = 0 instead (the papers' code, and
            # benchmarks/diffusion_sampling.py --end t0) also takes its last step, the largest in lambda,
            # at first order: the second-order extrapolation overshoots there.
            prev_x0, prev_abar = last if last is not None and t_next > 0 else (None, None)
            x = dpm_solver_step(x, x0_hat, abar_t, abar_next, prev_x0, prev_abar)
            last = (x0_hat, abar_t)
    return x


def repaint_schedule(steps: int, jump_length: int, resample: int) -> list[int]:
    """The order in which RePaint (Lugmayr et al. 2022, Sec. 4.2 and its ``get_schedule_jump``) visits a
    respaced grid of ``steps`` timesteps: indices from ``steps - 1`` (the noisiest) down to 0 (the least
    noisy) and finally -1 (the clean image). After reaching each index j = 0, L, 2L, ... below
    ``steps - L`` (L = ``jump_length``) it goes back up L indices and down again, ``resample - 1`` times, so
    the known and the generated pixels are harmonised ``resample`` times at every level. A move down is
    one network evaluation; a move up is one step of the forward process. ``resample = 1`` is plain
    ancestral sampling with the known pixels pasted in.
    """
    if steps < 1 or jump_length < 1 or resample < 1:
        raise ValueError("steps, jump_length and resample must be >= 1")
    jumps = {j: resample - 1 for j in range(0, steps - jump_length, jump_length)}
    t = steps - 1
    order = [t]
    while t >= 1:
        t -= 1
        order.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                order.append(t)
    order.append(-1)
    return order


def repaint_loop(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x0_known: torch.Tensor,
    keep: torch.Tensor,
    *,
    steps: int,
    jump_length: int,
    resample: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1): inpaint with an unconditionally trained diffusion model.

    On the ancestral sampler's respaced grid (``spaced_timesteps``), every move down from t to s gives
        known   = sqrt(abar_s) x0 + sqrt(1 - abar_s) noise          (the forward process of the given image)
        unknown = ddpm_step(x_t, x0_hat, abar_t, abar_s, noise')     (the model's reverse step)
        x_s     = keep * known + (1 - keep) * unknown
    and every move up from s to t (``repaint_schedule``) noises the whole image one forward step:
    x_t = sqrt(abar_t / abar_s) x_s + sqrt(1 - abar_t / abar_s) noise. The last move lands on the clean
    image, where ``known`` is x0 itself.

    Args:
        denoise: (x_t, t) -> (x0_hat, eps_hat).
        schedule: the model's NoiseSchedule.
        x0_known: (B, C, H, W) the images in the model's range [-1, 1]; only the kept pixels are used.
        keep: (B or 1, 1 or C, H, W) 1 where a pixel is known, 0 where it is to be filled.
        steps, jump_length, resample: ``repaint_schedule``'s; ``steps`` network evaluations without jumps.
        generator: the only source of randomness (the starting noise and every step's noise).

    Returns:
        (B, C, H, W) in the model's range; kept pixels equal ``x0_known``'s there.
    """
    grid = spaced_timesteps(len(schedule), steps)[::-1]  # grid[i]: the timestep of index i, 0 = least noisy
    abar_list = schedule.alphas_cumprod.tolist()

    def abar(i: int) -> float:
        return abar_list[grid[i]] if i >= 0 else 1.0

    keep = keep.to(x0_known.dtype)

    def noise() -> torch.Tensor:
        return torch.randn(x0_known.shape, generator=generator, device=x0_known.device, dtype=x0_known.dtype)

    order = repaint_schedule(steps, jump_length, resample)
    x = noise()
    for i, j in itertools.pairwise(order):
        if j < i:  # down: one reverse step, the known pixels from the forward process at j
            a_t, a_s = abar(i), abar(j)
            x0_hat, _ = denoise(x, grid[i])
            unknown = ddpm_step(x, x0_hat, a_t, a_s, noise() if a_s < 1.0 else None)
            known = x0_known if a_s >= 1.0 else math.sqrt(a_s) * x0_known + math.sqrt(1.0 - a_s) * noise()
            x = keep * known + (1.0 - keep) * unknown
        else:  # up: one step of the forward process from i to j = i + 1
            ratio = abar(j) / abar(i)
            x = math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * noise()
    return x
