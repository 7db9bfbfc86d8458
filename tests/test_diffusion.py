"""Family facts of diffusion: schedule values, each sampler's single step against the papers' equations
(and against diffusers' schedulers when installed), the loss, guidance, the likelihood bound, and a
short training run that learns."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from genmodels.api import load_run, train
from genmodels.cli import main
from genmodels.errors import ConfigError
from genmodels.eval.metrics import pixel_stats
from genmodels.models import Batch, build_from_config, make_config
from genmodels.models.diffusion import discretized_gaussian_log_prob, vlb_strata
from genmodels.models.samplers import ddim_step, ddpm_step, dpm_solver_step, sample_loop, sampling_grid
from genmodels.models.schedules import NoiseSchedule, spaced_timesteps, timestep_grid
from genmodels.training.config import TrainConfig
from genmodels.training.trainer import Trainer
from helpers import TINY, digits_images, nn_distance


def tiny(name: str = "ddpm", **kw):
    cfg = make_config(name, {**TINY[name], "image_shape": [1, 28, 28], "num_classes": 10, **kw})
    return build_from_config(name, cfg)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------- schedules


def test_linear_schedule_values():
    s = NoiseSchedule("linear", 1000)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    assert s.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert s.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    assert s.betas[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 999, rel=1e-12)
    # alpha-bar_t = prod (1 - beta_s), by a plain Python product.
    prod = 1.0
    for b in s.betas[:500].tolist():
        prod *= 1.0 - b
    assert s.alphas_cumprod[499].item() == pytest.approx(prod, rel=1e-12)
    # Ho et al.'s choice leaves almost no signal at T: alpha-bar_T ~ 4e-5.
    assert 1e-5 < s.alphas_cumprod[-1].item() < 1e-4


def test_cosine_schedule_follows_nichol_and_dhariwal_eq_17():
    s = NoiseSchedule("cosine", 1000)

    def f(t: float) -> float:
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in (0, 10, 500, 900):  # 0-based index t is the paper's t + 1
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert s.betas.max().item() == pytest.approx(0.999)  # clipped near T
    assert torch.all(s.betas > 0)


def test_posterior_variance_and_mean_match_ho_eq_7():
    s = NoiseSchedule("linear", 1000)
    t = 300
    ab, ab_prev, beta = s.alphas_cumprod[t].item(), s.alphas_cumprod[t - 1].item(), s.betas[t].item()
    assert s.posterior_variance[t].item() == pytest.approx((1 - ab_prev) / (1 - ab) * beta, rel=1e-12)
    assert s.posterior_variance[0].item() == 0.0
    x0, xt = rand(2, 3), rand(2, 3, seed=1)
    mean = s.posterior_mean(x0, xt, torch.tensor([t, t]))
    want = math.sqrt(ab_prev) * beta / (1 - ab) * x0 + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * xt
    torch.testing.assert_close(mean, want)


def test_trailing_timesteps():
    assert spaced_timesteps(1000, 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert spaced_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert spaced_timesteps(1000, 3) == [999, 666, 332]
    with pytest.raises(ConfigError, match="sampling steps"):
        spaced_timesteps(1000, 0)
    sch = NoiseSchedule("linear", 1000)
    assert timestep_grid(sch, 10, "time") == [999, 899, 799, 699, 599, 500, 400, 300, 200, 100, 0]
    for kind in ("linear", "cosine"):
        for n in (3, 10, 50, 999):
            for spacing in ("time", "logsnr", "quadratic"):
                g = timestep_grid(NoiseSchedule(kind, 1000), n, spacing)
                assert len(g) == n + 1 and g[0] == 999 and g[-1] == 0
                assert all(a > b for a, b in itertools.pairwise(g))
    # logSNR spacing: equal steps in lambda, so more of them at low noise than uniform time spacing.
    g = timestep_grid(sch, 10, "logsnr")
    lam = sch.log_snr(torch.tensor(g))
    gaps = (lam[1:] - lam[:-1]).tolist()
    assert max(gaps) < 1.5 * min(gaps) and g[-2] < 10
    # The cosine schedule's clipped last betas send lambda(T-1) to about -10: unclipped, 8 of 20 logsnr
    # steps sat on t = 992..999 (pure noise). LAMBDA_MIN bounds the top of the grid.
    from genmodels.models.schedules import LAMBDA_MIN

    cos = NoiseSchedule("cosine", 1000)
    assert float(cos.log_snr(torch.tensor([999]))) < LAMBDA_MIN - 3
    g = timestep_grid(cos, 20, "logsnr")
    assert sum(t >= 990 for t in g) <= 3 and g[-2] <= 3
    lam = cos.log_snr(torch.tensor(g[1:]))
    gaps = (lam[1:] - lam[:-1]).tolist()
    assert max(gaps) < 1.6 * min(gaps)
    # quadratic: t_i = (i / n)^2 (T - 1), so the last evaluation is at (1 / n)^2 (T - 1)
    assert timestep_grid(cos, 20, "quadratic")[-2] == round(999 / 400)


# ----------------------------------------------------------------- single sampler steps, by hand


def test_ddpm_step_is_ho_eq_11_with_beta_tilde():
    """Algorithm 2: x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z."""
    s = NoiseSchedule("linear", 1000)
    t = 400
    ab, ab_prev, beta = s.alphas_cumprod[t].item(), s.alphas_cumprod[t - 1].item(), s.betas[t].item()
    x_t, eps, z = rand(4, 5), rand(4, 5, seed=1), rand(4, 5, seed=2)
    x0_hat = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    got = ddpm_step(x_t, x0_hat, ab, ab_prev, z)
    sigma = math.sqrt((1 - ab_prev) / (1 - ab) * beta)
    want = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(1 - beta) + sigma * z
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # The last step (to abar = 1) adds no noise and returns the clean estimate.
    torch.testing.assert_close(ddpm_step(x_t, x0_hat, ab, 1.0, z), x0_hat)


def test_ddim_step_is_song_eq_12():
    x_t, eps, z = rand(3, 7), rand(3, 7, seed=1), rand(3, 7, seed=2)
    ab, ab_prev = 0.3, 0.55
    x0_hat = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    # eta = 0: x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps.
    want0 = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev) * eps
    torch.testing.assert_close(ddim_step(x_t, x0_hat, eps, ab, ab_prev, 0.0), want0, rtol=1e-12, atol=1e-12)
    # eta = 0.5 with numbers worked out by hand: sigma^2 = 0.25 * (0.45 / 0.7) * (1 - 0.3 / 0.55).
    sig2 = 0.25 * (0.45 / 0.7) * (1 - 0.3 / 0.55)
    want = math.sqrt(0.55) * x0_hat + math.sqrt(0.45 - sig2) * eps + math.sqrt(sig2) * z
    torch.testing.assert_close(ddim_step(x_t, x0_hat, eps, ab, ab_prev, 0.5, z), want, rtol=1e-12, atol=1e-12)
    # eta = 1 has the variance of the ancestral step.
    beta = 1 - ab / ab_prev
    sig2_ddpm = beta * (1 - ab_prev) / (1 - ab)
    got1 = ddim_step(x_t, x0_hat, eps, ab, ab_prev, 1.0, torch.zeros_like(z))
    want1 = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev - sig2_ddpm) * eps
    torch.testing.assert_close(got1, want1, rtol=1e-12, atol=1e-12)


def test_dpm_solver_pp_2m_step_by_hand():
    """Lu et al. 2022 (DPM-Solver++), Algorithm 2, with lambda = log(alpha / sigma) worked out here."""
    x_s, d_s, d_r = rand(2, 6), rand(2, 6, seed=1), rand(2, 6, seed=2)
    ab_r, ab_s, ab_t = 0.1, 0.3, 0.6

    def lam(a: float) -> float:
        return math.log(math.sqrt(a) / math.sqrt(1 - a))

    h = lam(ab_t) - lam(ab_s)
    r = (lam(ab_s) - lam(ab_r)) / h
    d = (1 + 1 / (2 * r)) * d_s - 1 / (2 * r) * d_r
    want = math.sqrt(1 - ab_t) / math.sqrt(1 - ab_s) * x_s - math.sqrt(ab_t) * (math.exp(-h) - 1) * d
    got = dpm_solver_step(x_s, d_s, ab_s, ab_t, d_r, ab_r)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # First order (no history) is DDIM with eta = 0.
    eps = (x_s - math.sqrt(ab_s) * d_s) / math.sqrt(1 - ab_s)
    torch.testing.assert_close(dpm_solver_step(x_s, d_s, ab_s, ab_t), ddim_step(x_s, d_s, eps, ab_s, ab_t))
    # To sigma = 0 it returns the data prediction.
    torch.testing.assert_close(dpm_solver_step(x_s, d_s, ab_s, 1.0, d_r, ab_r), d_s)


# ----------------------------------------------------------------- samplers on problems with known answers


def _gaussian_denoiser(schedule: NoiseSchedule, s2: float):
    """The exact denoiser of data ~ N(0, s2 I): E[x0 | x_t] = alpha s2 x_t / (alpha^2 s2 + sigma^2)."""

    def denoise(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        ab = schedule.alphas_cumprod[t].item()
        x0 = math.sqrt(ab) * s2 * x_t / (ab * s2 + 1 - ab)
        return x0, (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)

    return denoise


@pytest.mark.parametrize("kind,spacing", [("linear", "logsnr"), ("cosine", "time"), ("linear", "time")])
def test_deterministic_samplers_solve_the_probability_flow_ode_of_gaussian_data(kind, spacing):
    """For data N(0, s2 I) the probability-flow ODE scales x_T by std(x_t) / std(x_T); the second-order
    solver must be more accurate than DDIM at the same number of steps, and both converge."""
    sch = NoiseSchedule(kind, 1000)
    s2 = 0.25
    x_T = rand(64, 16)
    ab_T = sch.alphas_cumprod[-1].item()
    den = _gaussian_denoiser(sch, s2)

    def err(sampler: str, steps: int) -> float:
        # The ODE runs to the last timestep t before 0, where the marginal is N(0, (ab s2 + 1 - ab) I), and the
        # last step returns the exact denoiser's E[x0 | x_t] = alpha s2 / (ab s2 + 1 - ab) x_t there.
        ab = sch.alphas_cumprod[sampling_grid(sch, sampler, steps, spacing)[-2]].item()
        exact = math.sqrt(ab) * s2 / math.sqrt(ab * s2 + 1 - ab) * x_T / math.sqrt(ab_T * s2 + 1 - ab_T)
        out = sample_loop(den, sch, x_T, sampler=sampler, steps=steps, spacing=spacing)
        return (out - exact).abs().max().item()

    e = {(sampler, n): err(sampler, n) for sampler in ("ddim", "dpm-solver") for n in (10, 50, 200)}
    for n in (10, 50, 200):
        assert e["dpm-solver", n] < 0.5 * e["ddim", n]
    assert e["ddim", 200] < 0.25 * e["ddim", 10]
    assert e["dpm-solver", 200] < 0.25 * e["dpm-solver", 10] and e["dpm-solver", 200] < 0.005


def test_ancestral_ddpm_reaches_the_right_distribution_of_gaussian_data():
    sch = NoiseSchedule("linear", 1000)
    s2 = 0.25
    x_T = rand(4000, 4)
    g = torch.Generator().manual_seed(3)
    out = sample_loop(_gaussian_denoiser(sch, s2), sch, x_T, sampler="ddpm", generator=g)  # all T steps
    assert out.mean().abs().item() < 0.02
    assert out.var().item() == pytest.approx(s2, rel=0.05)


def test_a_perfect_denoiser_of_one_image_lands_on_it_for_every_sampler():
    sch = NoiseSchedule("cosine", 200)
    target = rand(1, 3) * 0.5

    def den(x_t, t):
        ab = sch.alphas_cumprod[t].item()
        x0 = target.expand_as(x_t)
        return x0, (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)

    x_T = rand(5, 3)
    # Every sampler's last step lands on abar = 1: the image itself, with none of the sigma_0 eps that
    # stopping at t = 0 would leave (a_0 x* + s_0 (x_T - a_T x*) / s_T along the exact ODE).
    for sampler in ("ddpm", "ddim", "dpm-solver"):
        for steps in (1, 2, 7):
            out = sample_loop(den, sch, x_T, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0))
            torch.testing.assert_close(out, target.expand(5, 3), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver"])
@pytest.mark.parametrize("steps", [1, 2, 20])
def test_every_sampler_takes_its_last_step_to_the_clean_image(sampler, steps):
    """``steps`` network evaluations from T-1 down, then a step to abar = 1 (-1), never one to t = 0 that
    would return an x_t with sigma_t eps still in it."""
    sch = NoiseSchedule("cosine", 1000)
    g = sampling_grid(sch, sampler, steps)
    assert len(g) == steps + 1 and g[0] == 999 and g[-1] == -1
    assert all(a > b for a, b in itertools.pairwise(g))
    if sampler != "ddpm":
        assert g[:-1] == timestep_grid(sch, steps)[:-1]


class _FiniteSetOracle(nn.Module):
    """The exact v-prediction network of data uniform over K images x^k (in [-1, 1]): the posterior
    weights are softmax_k(-|x_t - alpha_t x^k|^2 / (2 sigma_t^2)), x0_hat = sum_k w_k x^k and
    v = (alpha_t x_t - x0_hat) / sigma_t (x0 = alpha x_t - sigma v, Salimans and Ho 2022). float64 inside."""

    def __init__(self, images: torch.Tensor, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.register_buffer("images", images.double())
        self.schedule = schedule
        self.anchor = nn.Parameter(torch.zeros(1))  # DDPM finds its device from the parameters

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a, s = (v.view(-1, 1) for v in self.schedule.alpha_sigma(t))
        x, data = x_t.double().flatten(1), self.images.flatten(1)
        d2 = ((x[:, None] - a[:, None] * data[None]) ** 2).sum(-1)  # (B, K)
        w = torch.softmax(-d2 / (2 * s**2), dim=1)
        x0 = w @ data
        return ((a * x - x0) / s).view_as(x_t).float()


@pytest.mark.parametrize(
    "sampler,steps", [("ddpm", 1000), ("ddpm", 25), ("ddim", 20), ("dpm-solver", 20), ("dpm-solver", 5)]
)
def test_samples_of_the_exact_denoiser_of_real_images_are_those_images_to_the_gray_level(sampler, steps):
    """Data = 8 real digits with black backgrounds. With the exact denoiser every sampler must return one
    of them exactly after 8-bit quantisation: black pixels exactly 0, none lifted to 1..5 by noise left
    over from the last step (which stepping to t = 0 instead of abar = 1 leaves in a quarter of them)."""
    from genmodels.models.diffusion import DDPM

    real = digits_images(8)[0]
    sch = NoiseSchedule("cosine", 1000)
    cfg = make_config("ddpm", {"schedule": "cosine", "prediction": "v", "precision": "fp32", "timesteps": 1000})
    m = DDPM(cfg, _FiniteSetOracle(real.float() / 127.5 - 1.0, sch), sch).eval()
    out = m.sample(16, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps)
    u8 = (out * 255.0).round().to(torch.uint8)
    nearest = torch.cdist(u8.flatten(1).float(), real.flatten(1).float()).argmin(1)
    assert torch.equal(u8, real[nearest])
    assert pixel_stats(u8, real[nearest])["pixel_hist_tv"] == 0.0
    assert float((u8 == 0).double().mean()) > 0.5  # the test is about black backgrounds


class _LeakyDenoiser(nn.Module):
    """The v-network of all-black images (x* = -1) whose x0 estimate keeps a share g of the noise of x_t,
    as a small trained network does on flat background at low noise (the default run's keeps about 0.8 at
    t = 0): x0_hat = x* + g (x_t - alpha_t x*). Imprecise but unbiased: E[x0_hat] = x* over the noise."""

    def __init__(self, schedule: NoiseSchedule, g: float) -> None:
        super().__init__()
        self.schedule, self.g = schedule, g
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a, s = (v.float().view(-1, 1, 1, 1) for v in self.schedule.alpha_sigma(t))
        x0 = -1.0 + self.g * (x_t + a)
        return (a * x_t - x0) / s  # v with x0 = alpha x_t - sigma v


def test_v_prediction_does_not_clip_so_an_unbiased_denoiser_keeps_a_black_background_black():
    """Clipping x0_hat to [-1, 1] cuts the errors of a pixel at -1 on one side only; the ancestral sampler
    carries that lift through its 1,000 steps and leaves a black background speckled with levels 1..5."""
    from genmodels.models.diffusion import DDPM

    sch = NoiseSchedule("cosine", 1000)
    base = {"schedule": "cosine", "prediction": "v", "precision": "fp32", "image_shape": [1, 8, 8], "groups": 4}

    def shares(**kw) -> tuple[float, float]:
        m = DDPM(make_config("ddpm", {**base, **kw}), _LeakyDenoiser(sch, 0.6), sch).eval()
        u8 = (m.sample(128, generator=torch.Generator().manual_seed(0), sampler="ddpm") * 255).round()
        return float((u8 == 0).double().mean()), float(((u8 >= 1) & (u8 <= 5)).double().mean())

    zero, near = shares()
    assert zero > 0.5 and near < 0.45
    zero_clipped, near_clipped = shares(clip_denoised=True)
    assert zero_clipped < 0.4 and near_clipped > 0.5
    # eps prediction still clips by default: its x0_hat = (x_t - sigma eps_hat) / alpha is unbounded.
    assert DDPM(make_config("ddpm", {**base, "prediction": "eps"}), _LeakyDenoiser(sch, 0.6), sch).clips_denoised
    assert not DDPM(make_config("ddpm", base), _LeakyDenoiser(sch, 0.6), sch).clips_denoised


# ----------------------------------------------------------------- against diffusers' schedulers


@pytest.fixture(scope="module")
def diffusers_mod():
    """diffusers' schedulers as an outside reference (in the ``test`` extra); numpy 2 makes it warn."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("diffusers")


@pytest.mark.parametrize("kind,name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_schedules_match_diffusers(diffusers_mod, kind, name):
    ref = diffusers_mod.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
    ours = NoiseSchedule(kind, 1000)
    torch.testing.assert_close(ours.betas.float(), ref.betas, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5, atol=1e-9)


def test_ddpm_and_ddim_steps_match_diffusers(diffusers_mod):
    sch = NoiseSchedule("linear", 1000)
    x_t, eps, z = rand(2, 1, 4, 4).float(), rand(2, 1, 4, 4, seed=1).float(), rand(2, 1, 4, 4, seed=2).float()
    ab = sch.alphas_cumprod.tolist()
    for steps, idx in ((1000, 0), (1000, 3), (50, 2)):
        ts = spaced_timesteps(1000, steps)
        t, prev = ts[idx], ts[idx + 1]
        x0_hat = (x_t - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])
        ref = diffusers_mod.DDPMScheduler(num_train_timesteps=1000, clip_sample=False, timestep_spacing="trailing")
        ref.set_timesteps(steps)
        assert ref.timesteps.tolist() == ts
        # diffusers draws its noise as torch.randn(shape, generator=...): hand ours the same draw.
        want = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(5)).prev_sample
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(ddpm_step(x_t, x0_hat, ab[t], ab[prev], noise), want, rtol=1e-5, atol=1e-5)
        ddim = diffusers_mod.DDIMScheduler(
            num_train_timesteps=1000, clip_sample=False, timestep_spacing="trailing", set_alpha_to_one=True
        )
        ddim.set_timesteps(steps)
        for eta in (0.0, 0.7):
            want = ddim.step(eps, t, x_t, eta=eta, variance_noise=z).prev_sample
            got = ddim_step(x_t, x0_hat, eps, ab[t], ab[prev], eta, z)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind,name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_dpm_solver_loop_matches_diffusers_multistep_dpm_solver_pp(diffusers_mod, kind, name):
    """The whole 2M loop, step by step, against DPMSolverMultistepScheduler(dpmsolver++, order 2), whose
    "linspace" timesteps are our "time" grid and whose last step goes to sigma = 0 as ours does."""
    sch = NoiseSchedule(kind, 1000)
    s2 = 0.3
    den = _gaussian_denoiser(sch, s2)
    x_T = rand(3, 1, 4, 4)  # float64: at t = T-1 of the cosine schedule alpha ~ 1e-5, too small for float32
    ref = diffusers_mod.DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule=name,
        algorithm_type="dpmsolver++",
        solver_order=2,
        timestep_spacing="linspace",
        final_sigmas_type="zero",
        euler_at_final=True,
    )
    for steps in (5, 12):
        ref.set_timesteps(steps)
        x = x_T.clone()
        for t in ref.timesteps.tolist():
            _, eps = den(x, t)
            x = ref.step(eps, t, x).prev_sample
        assert ref.timesteps.tolist() == sampling_grid(sch, "dpm-solver", steps)[:-1]
        ours = sample_loop(den, sch, x_T.clone(), sampler="dpm-solver", steps=steps)
        # diffusers keeps its sigmas in float32; at the cosine schedule's T-1 (alpha ~ 5e-5) that alone moves
        # its x0 estimate by ~1e-3, so the cosine comparison is only as tight as that.
        tol = 1e-4 if kind == "linear" else 2e-3
        torch.testing.assert_close(ours, x, rtol=tol, atol=tol)


# ----------------------------------------------------------------- the model: loss, guidance, sampling


def test_eps_loss_is_l_simple_computed_by_hand():
    torch.manual_seed(0)
    m = tiny()
    x = torch.rand(6, 1, 28, 28)
    torch.manual_seed(7)
    out = m.loss(Batch(x))
    torch.manual_seed(7)
    t = torch.randint(0, m.config.timesteps, (6,))
    eps = torch.randn(6, 1, 28, 28)
    ab = m.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * (2 * x - 1) + (1 - ab).sqrt() * eps
    want = (m.denoiser(x_t, t) - eps).square().mean()
    torch.testing.assert_close(out.loss, want)


def test_v_prediction_target_and_min_snr_weights():
    torch.manual_seed(0)
    m = tiny(prediction="v", weighting="min-snr", min_snr_gamma=5.0)
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(3)
    out = m.loss(Batch(x))
    torch.manual_seed(3)
    t = torch.randint(0, m.config.timesteps, (8,))
    eps = torch.randn(8, 1, 28, 28)
    ab = m.schedule.alphas_cumprod[t]
    a, s = ab.sqrt().float().view(-1, 1, 1, 1), (1 - ab).sqrt().float().view(-1, 1, 1, 1)
    x0 = 2 * x - 1
    v = a * eps - s * x0  # Salimans and Ho 2022
    snr = ab / (1 - ab)
    w = (snr.clamp(max=5.0) / (snr + 1)).float()
    per = (m.denoiser(a * x0 + s * eps, t) - v).square().flatten(1).mean(1)
    torch.testing.assert_close(out.loss, (w * per).mean())
    # With v the implied x0 estimate is alpha x_t - sigma v: exact for the true v.
    x_t = a * x0 + s * eps
    torch.testing.assert_close(a * x_t - s * v, x0, rtol=1e-5, atol=1e-5)


def test_conditional_training_drops_labels_to_the_null_class():
    m = tiny("cddpm", label_dropout=0.3)
    torch.manual_seed(0)
    y = torch.randint(0, 10, (20000,))
    seen = m._training_labels(y)
    dropped = seen == 10
    assert abs(dropped.float().mean().item() - 0.3) < 0.02
    assert torch.equal(seen[~dropped], y[~dropped])
    assert tiny("ddpm")._training_labels(y) is None


def test_classifier_free_guidance_mixes_conditional_and_unconditional_outputs():
    torch.manual_seed(0)
    m = tiny("cddpm", precision="fp32").eval()
    for p in m.parameters():  # make the class embedding matter
        p.data.normal_(0, 0.2)
    x, t, y = torch.randn(4, 1, 28, 28), torch.tensor([10, 20, 30, 40]), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        cond = m.denoiser(x, t, y)
        uncond = m.denoiser(x, t, torch.full_like(y, 10))
        guided = m.model_output(x, t, y, guidance=3.0)
    assert not torch.allclose(cond, uncond)
    torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.model_output(x, t, y, guidance=0.0), uncond, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.model_output(x, t, y, guidance=1.0), cond, rtol=1e-5, atol=1e-6)
    # Samples honour the labels: different classes from the same noise differ.
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = m.sample(2, generator=g(), labels=torch.tensor([1, 1]), guidance=3.0)
    b = m.sample(2, generator=g(), labels=torch.tensor([5, 5]), guidance=3.0)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm-solver"])
def test_every_sampler_gives_images_in_range(sampler):
    m = tiny().eval()
    s = m.sample(3, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=5)
    assert s.shape == (3, 1, 28, 28) and s.min() >= 0.0 and s.max() <= 1.0


def test_bad_sampling_options_are_clear_errors():
    m = tiny().eval()
    with pytest.raises(ConfigError, match="unknown sampler 'ddim2'; did you mean 'ddim'"):
        m.sample(2, sampler="ddim2")
    with pytest.raises(ConfigError, match=r"sampling-steps must be in 1..49 for dpm-solver"):
        m.sample(2, steps=50)
    with pytest.raises(ConfigError, match=r"sampling-steps must be in 1..50 for ddpm"):
        m.sample(2, sampler="ddpm", steps=51)
    with pytest.raises(ConfigError, match="needs a class-conditional"):
        m.sample(2, guidance=2.0)
    with pytest.raises(ConfigError, match="unknown noise schedule 'cosin'; did you mean 'cosine'"):
        make_config("ddpm", {"schedule": "cosin"})
    with pytest.raises(ConfigError, match=r"model\.label_dropout"):
        make_config("cddpm", {"label_dropout": 1.0})


# ----------------------------------------------------------------- the likelihood bound


def test_discrete_decoder_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 255.0 * 2 - 1
    x = levels.view(256, 1, 1, 1)
    for mean, log_scale in ((0.3, math.log(0.01)), (-0.99, math.log(0.2)), (1.0, math.log(1e-3))):
        lp = discretized_gaussian_log_prob(x, torch.full_like(x, mean), torch.tensor(log_scale))
        assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    # A bin far from the mean: the Gaussian mass of [x - 1/255, x + 1/255] by erf.
    x1 = torch.full((1, 1, 1, 1), levels[100].item())
    lp = discretized_gaussian_log_prob(x1, torch.zeros_like(x1), torch.tensor(math.log(0.5)))
    lo, hi = (levels[100].item() - 1 / 255) / 0.5, (levels[100].item() + 1 / 255) / 0.5
    mass = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    assert lp.item() == pytest.approx(math.log(mass), rel=1e-5)


@pytest.mark.parametrize("T,k", [(1000, 50), (20, 3), (20, 19), (20, 20), (7, 100)])
def test_vlb_strata_cover_every_term_once(T, k):
    strata = vlb_strata(T, k)
    covered = [t for lo, hi in strata for t in range(lo, hi)]
    assert covered == list(range(1, T))
    assert len(strata) == min(k, T - 1)
    # The estimator's expectation for any per-timestep term f: sum of (hi - lo) * mean of f over the stratum.
    f = [math.sin(t) + t**0.5 for t in range(T)]
    expect = sum((hi - lo) * sum(f[lo:hi]) / (hi - lo) for lo, hi in strata)
    assert expect == pytest.approx(sum(f[1:]), rel=1e-12)


def test_vlb_adds_prior_terms_and_decoder(monkeypatch):
    """The bound's assembly with stand-in terms: L_t = t nats, L_0 = 3 nats; with every timestep the sum
    is exact, with 3 strata its mean over many draws is the same sum."""
    m = tiny(timesteps=50, precision="fp32").eval()
    monkeypatch.setattr(m, "_kl_term", lambda x0, t, y, g: t.float())
    monkeypatch.setattr(m, "_decoder_log_prob", lambda x0, y, g: torch.full((len(x0),), -3.0))
    x = torch.zeros(2, 1, 28, 28)
    ab_T = m.schedule.alphas_cumprod[-1].item()
    prior = 784 * 0.5 * (ab_T + (1 - ab_T) - 1 - math.log(1 - ab_T))  # KL(N(-sqrt(ab_T), 1 - ab_T) || N(0, 1))
    exact = m.nll(x, timesteps=50)["vlb"]
    torch.testing.assert_close(exact, torch.full((2,), prior + sum(range(1, 50)) + 3.0))
    g = torch.Generator().manual_seed(0)
    mc = torch.stack([m.nll(x, generator=g, timesteps=3)["vlb"] for _ in range(2000)]).double()
    assert (mc.mean() - exact[0]).abs().item() < 4 * mc.std().item() / math.sqrt(mc.numel())
    assert mc.std().item() > 0.5  # it is random


def test_vlb_of_a_perfect_denoiser_is_only_the_decoder_cost():
    """With data = one image x*, the optimal denoiser predicts x* everywhere: every KL term is 0, and what
    is left is L_T and the decoder's mass on x*'s bins under N(x*, beta_1), computed here with erf.
    Any other image costs far more."""
    m = tiny(timesteps=1000, precision="fp32").eval()
    x_star = digits_images(2)[0].float() / 255.0

    def oracle(x_t, t, y=None, guidance=1.0):
        a, s = (v.float().view(-1, 1, 1, 1) for v in m.schedule.alpha_sigma(t))
        x0 = (2 * x_star[:1] - 1).expand_as(x_t)
        return x0, (x_t - a * x0) / s

    m.predict = oracle
    nll = m.nll(x_star, generator=torch.Generator().manual_seed(0), timesteps=20)["vlb"]
    sd = math.sqrt(m.schedule.betas[0].item())
    half = 1 / 255 / (sd * math.sqrt(2))
    interior, edge = math.erf(half), 0.5 * (1 + math.erf(half))  # an end bin takes a whole tail
    v = x_star[0].flatten()
    n_edge = int(((v == 0) | (v == 1)).sum())
    decoder = -(n_edge * math.log(edge) + (784 - n_edge) * math.log(interior))
    ab_T = m.schedule.alphas_cumprod[-1].item()
    x0 = 2 * v.double() - 1
    prior = (0.5 * (ab_T * x0**2 + (1 - ab_T) - 1 - math.log(1 - ab_T))).sum().item()
    assert nll[0].item() == pytest.approx(prior + decoder, rel=1e-4)
    assert nll[1].item() > 10 * nll[0].item()


def test_vlb_in_bits_per_dim_through_evaluate(tmp_path):
    over = {f"model.{k}": v for k, v in TINY["ddpm"].items()}
    train("ddpm", "digits", steps=2, out=tmp_path / "r", overrides={**over, "train.sample_every": 0}, progress=False)
    from genmodels.eval import evaluate_run

    report = evaluate_run(tmp_path / "r", n=8, k=4, options={"sampler": "ddim", "steps": 3})
    lik = report["likelihood"]
    assert lik["data"] == "8-bit" and "vlb" in lik["bpd"]
    assert lik["bpd"]["vlb"] == pytest.approx(lik["nats"]["vlb"] / (784 * math.log(2)))
    assert lik["bpd"]["vlb"] > 0


# ----------------------------------------------------------------- learning and the command line


def test_a_short_training_run_learns_to_denoise_and_moves_samples_toward_the_data():
    torch.manual_seed(0)
    imgs, labels = digits_images()
    m = tiny(channels=[16, 32], patch=2, timesteps=100, sampling_steps=10)
    data = imgs.float() / 255.0
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    before = nn_distance(m.eval().sample(64, generator=g()), data)
    cfg = TrainConfig(steps=250, batch_size=32, lr=2e-3, warmup_steps=20, progress=False, log_every=25)
    t = Trainer(m, imgs, labels, cfg)
    t.fit()
    losses = [r["loss"] for r in t.history]
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:2]) / 2
    after = nn_distance(m.eval().sample(64, generator=g()), data)
    assert after < 0.7 * before


def test_cli_sampling_options_reach_the_sampler(tmp_path, capsys):
    over = [f"--set=model.{k}={v}" for k, v in TINY["cddpm"].items()]
    run_dir = tmp_path / "c"
    args = ["train", "cddpm", "--dataset", "digits", "--steps", "2", "--out", str(run_dir), "--no-progress"]
    assert main([*args, *over, "--set", "data.limit=100", "--set", "train.sample_every=0"]) == 0
    run = load_run(run_dir)
    base = ["sample", str(run_dir), "-n", "4", "--seed", "1"]
    for opts in (["--sampler", "ddim", "--sampling-steps", "3"], ["--sampler", "dpm-solver", "--guidance", "2"]):
        assert main([*base, "-o", str(tmp_path / "a.npz"), *opts]) == 0
    a = torch.from_numpy(__import__("numpy").load(tmp_path / "a.npz")["images"])
    want = run.sample(4, seed=1, labels=torch.arange(4), sampler="dpm-solver", guidance=2.0)
    assert torch.equal(a, (want * 255).round().to(torch.uint8))
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "b.png"), "--sampler", "euler"]) == 2
    err = capsys.readouterr().err
    assert "'euler'" in err and "ddpm, ddim, dpm-solver" in err
