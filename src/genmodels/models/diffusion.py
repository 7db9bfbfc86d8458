"""Denoising diffusion probabilistic models (Ho et al. 2020) with fast samplers and classifier-free guidance.

Forward process q(x_t | x0) = N(alpha_t x0, sigma_t^2 I) over T steps of a linear or cosine schedule
(``schedules``), images mapped to [-1, 1]. A U-Net (``nets.unet``) predicts

- ``eps``: the noise, trained with Ho et al.'s L_simple = E ||eps - eps_theta(x_t, t)||^2 (Eq. 14), or
- ``v``: v = alpha_t eps - sigma_t x0 (Salimans and Ho 2022, Sec. 4), the same minimiser in another
  parameterisation,

optionally with min-SNR-gamma loss weighting (Hang et al. 2023), which caps the weight of the nearly
clean timesteps. Samples come from the stateless samplers in ``samplers`` (ancestral DDPM, DDIM,
DPM-Solver++(2M)). A class-conditional model drops labels to a null class with probability
``label_dropout`` in training and mixes conditional and unconditional predictions at sampling
(classifier-free guidance, Ho and Salimans 2022): out = out_uncond + guidance (out_cond - out_uncond).

``nll`` is the variational bound of Ho et al. Eq. 5 with the discrete decoder of their Eq. 13, an upper
bound on -log P(x) of 8-bit images in nats.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, SampleOption, from_model_range, to_model_range
from genmodels.models.samplers import SAMPLERS, Denoiser, repaint_loop, sample_loop, sampling_grid
from genmodels.models.schedules import SCHEDULES, SPACINGS, NoiseSchedule
from genmodels.nets.unet import UNet

PREDICTIONS = ("eps", "v")
WEIGHTINGS = ("none", "min-snr")


@dataclass
class DiffusionConfig:
    image_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), set from the dataset
    num_classes: int = 10  # set from the dataset; used when conditional
    channels: tuple[int, ...] = (32, 64, 128)  # U-Net widths per level; level i works at H / 2^i
    blocks: int = 1  # residual blocks per U-Net level (one more on the way up)
    patch: int = 1  # fold patch x patch pixels into channels before the U-Net (pixel unshuffle)
    attention: bool = True  # self-attention at the lowest resolution
    heads: int = 1  # attention heads
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.0  # dropout in the residual blocks
    timesteps: int = 1000  # T
    schedule: str = "linear"  # linear (Ho et al. 2020) | cosine (Nichol and Dhariwal 2021)
    prediction: str = "eps"  # eps | v: what the network predicts
    weighting: str = "none"  # none | min-snr: per-timestep loss weights (Hang et al. 2023)
    min_snr_gamma: float = 5.0  # gamma of min-SNR weighting
    conditional: bool = False  # class-conditional, with classifier-free guidance
    label_dropout: float = 0.1  # conditional: probability of training on the null class instead
    sampler: str = "dpm-solver"  # default sampler: ddpm | ddim | dpm-solver
    sampling_steps: int = 20  # default network evaluations per sample of the default sampler
    spacing: str = "time"  # ddim / dpm-solver timesteps: time (uniform in t) | logsnr (uniform in log SNR) | quadratic
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic)
    guidance: float = 1.0  # default guidance scale; 1 = plain conditional, 0 = unconditional
    clip_denoised: bool | None = None  # clip x0 estimates to [-1, 1] (sampling, bound); None = for eps only
    precision: str = "auto"  # network precision for sampling and nll: auto (bf16 where native) | bf16 | fp32
    nll_timesteps: int = 50  # timesteps per image in the Monte-Carlo estimate of the bound (T = exact)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise unknown("noise schedule", self.schedule, SCHEDULES)
        if self.prediction not in PREDICTIONS:
            raise unknown("diffusion prediction", self.prediction, PREDICTIONS)
        if self.weighting not in WEIGHTINGS:
            raise unknown("loss weighting", self.weighting, WEIGHTINGS)
        if self.sampler not in SAMPLERS:
            raise unknown("sampler", self.sampler, SAMPLERS)
        if self.spacing not in SPACINGS:
            raise unknown("timestep spacing", self.spacing, SPACINGS)
        if self.precision not in ("auto", "bf16", "fp32"):
            raise unknown("precision", self.precision, ["auto", "bf16", "fp32"])
        if self.timesteps < 2:
            raise ConfigError(f"model.timesteps must be >= 2, got {self.timesteps}")
        most = self.timesteps if self.sampler == "ddpm" else self.timesteps - 1
        if not 1 <= self.sampling_steps <= most:
            raise ConfigError(
                f"model.sampling_steps must be in 1..{most} for {self.sampler}, got {self.sampling_steps}"
            )
        if not 1 <= self.nll_timesteps <= self.timesteps:
            raise ConfigError(f"model.nll_timesteps must be in 1..{self.timesteps}, got {self.nll_timesteps}")
        if not self.channels or min(self.channels) < 1:
            raise ConfigError(f"model.channels must be positive widths, got {list(self.channels)}")
        if self.patch < 1:
            raise ConfigError(f"model.patch must be >= 1, got {self.patch}")
        if self.blocks < 1:
            raise ConfigError(f"model.blocks must be >= 1, got {self.blocks}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ConfigError(f"model.label_dropout must be in [0, 1), got {self.label_dropout}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.min_snr_gamma <= 0:
            raise ConfigError(f"model.min_snr_gamma must be > 0, got {self.min_snr_gamma}")
        if self.eta < 0:
            raise ConfigError(f"model.eta must be >= 0, got {self.eta}")
        if self.conditional and self.num_classes < 2:
            raise ConfigError("model.conditional=true needs a labelled dataset with at least 2 classes")


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit pixels under a Gaussian integrated over each pixel's bin (Ho et al. 2020, Eq. 13).

    Bins are [x - 1/255, x + 1/255] in [-1, 1] units, the end bins extended to -inf and +inf, so the
    bin masses sum to one. Summed per image.

    Args:
        x: (B, C, H, W) in [-1, 1], multiples of 2/255 from -1.
        mean: (B, C, H, W) Gaussian means.
        log_scale: log standard deviation, broadcastable to x.
    """
    x, mean = x.double(), mean.double()
    inv_std = torch.exp(-log_scale.double())
    std_normal = torch.distributions.Normal(0.0, 1.0)
    upper = std_normal.cdf((x - mean + 1.0 / 255.0) * inv_std)
    lower = std_normal.cdf((x - mean - 1.0 / 255.0) * inv_std)
    log_cdf_upper = torch.log(upper.clamp(min=1e-300))
    log_one_minus_lower = torch.log((1.0 - lower).clamp(min=1e-300))
    log_delta = torch.log((upper - lower).clamp(min=1e-300))
    lp = torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_one_minus_lower, log_delta))
    return lp.flatten(1).sum(1).float()


def vlb_strata(timesteps: int, k: int) -> list[tuple[int, int]]:
    """``min(k, T - 1)`` disjoint ranges [lo, hi) that cover the 0-based timesteps 1..T-1 of the terms
    L_{t-1} (the paper's t = 2..T). Drawing one t uniformly from each and weighting its term by hi - lo
    estimates the sum over all T - 1 terms without bias."""
    edges = torch.linspace(1, timesteps, min(k, timesteps - 1) + 1).round().long().tolist()
    return [(lo, hi) for lo, hi in itertools.pairwise(edges) if hi > lo]


class DDPM(nn.Module):
    """A diffusion model around a separate denoiser network and a noise schedule.

    Args:
        config: the DiffusionConfig.
        denoiser: (x_t (B, C, H, W), t (B,), y (B,) or None) -> (B, C, H, W) eps or v prediction;
            label ``num_classes`` is the null class.
        schedule: the NoiseSchedule (float64, not stored in checkpoints: rebuilt from the config).
    """

    likelihood_data = "8-bit"
    has_likelihood = True
    sample_options: ClassVar[dict[str, SampleOption]] = {
        "sampler": SampleOption(str, "ddpm (ancestral) | ddim | dpm-solver (DPM-Solver++ 2M)", choices=SAMPLERS),
        "steps": SampleOption(int, "network evaluations per sample", minimum=1),
        "guidance": SampleOption(float, "classifier-free guidance scale (conditional models)", minimum=0.0),
        "eta": SampleOption(float, "DDIM stochasticity (0 = deterministic)", minimum=0.0),
    }
    inpaint_options: ClassVar[dict[str, SampleOption]] = {
        "steps": SampleOption(int, "RePaint: respaced ancestral timesteps (default 50)", minimum=1),
        "jump_length": SampleOption(int, "RePaint: timesteps jumped back up each time (default 5)", minimum=1),
        "resample": SampleOption(int, "RePaint: passes over every level (default 5; 1 = no jumps)", minimum=1),
        "guidance": SampleOption(float, "classifier-free guidance scale (conditional models)", minimum=0.0),
    }

    def __init__(self, config: DiffusionConfig, denoiser: nn.Module, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.config = config
        self.denoiser = denoiser
        self.schedule = schedule

    conditional = property(lambda self: self.config.conditional)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # ----------------------------------------------------------------- training

    def loss(self, batch: Batch) -> LossOutput:
        """L_simple (Ho et al. Eq. 14) in the chosen parameterisation and weighting, mean over the batch."""
        x0 = to_model_range(batch.x)
        b = len(x0)
        t = torch.randint(0, self.config.timesteps, (b,), device=x0.device)
        eps = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, eps)
        y = self._training_labels(batch.y)
        out = self.denoiser(x_t, t, y).float()
        if self.config.prediction == "eps":
            target = eps
        else:
            alpha, sigma = (s.to(x0.device, torch.float32) for s in self.schedule.alpha_sigma(t.cpu()))
            target = alpha.view(-1, 1, 1, 1) * eps - sigma.view(-1, 1, 1, 1) * x0
        mse = (out - target).square().flatten(1).mean(1)  # (B,)
        weight = self._loss_weight(t).to(mse.device, mse.dtype)
        loss = (weight * mse).mean()
        return LossOutput(loss, {"mse": mse.detach().mean()})

    def _training_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The labels the denoiser sees: a share ``label_dropout`` replaced by the null class."""
        if not self.config.conditional:
            return None
        if y is None:
            raise ConfigError("this conditional diffusion model needs class labels; train it on a labelled dataset")
        drop = torch.rand(y.shape, device=y.device) < self.config.label_dropout
        return torch.where(drop, torch.full_like(y, self.config.num_classes), y)

    def _loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-example loss weights (B,): 1, or min-SNR-gamma (Hang et al. 2023, Eq. 4 and Sec. 3.4).

        For eps prediction the weight is min(SNR, gamma) / SNR, for v prediction
        min(SNR, gamma) / (SNR + 1): either way the implied x0 loss is weighted by min(SNR, gamma).
        """
        if self.config.weighting == "none":
            return torch.ones(len(t))
        snr = self.schedule.snr(t.cpu())
        capped = snr.clamp(max=self.config.min_snr_gamma)
        return (capped / snr if self.config.prediction == "eps" else capped / (snr + 1.0)).float()

    # ----------------------------------------------------------------- prediction

    def _precision_context(self) -> contextlib.AbstractContextManager[Any]:
        p = self.config.precision
        dev = self.device
        from genmodels.device import bf16_is_fast

        if p == "fp32" or (p == "auto" and not bf16_is_fast(dev)) or torch.is_autocast_enabled(dev.type):
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)

    def model_output(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """The network output (eps or v) at x_t (B, C, H, W), t (B,), guided when guidance != 1.

        Classifier-free guidance (Ho and Salimans 2022, Eq. 6 with w = guidance - 1):
        out = out(x_t, null) + guidance (out(x_t, y) - out(x_t, null)), one batched forward pass.
        """
        with self._precision_context():
            if not self.config.conditional or y is None or guidance == 0.0:
                return self.denoiser(x_t, t, None).float()
            if guidance == 1.0:
                return self.denoiser(x_t, t, y).float()
            null = torch.full_like(y, self.config.num_classes)
            both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).float()
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    @property
    def clips_denoised(self) -> bool:
        """Whether ``predict`` clips x0_hat to [-1, 1]: ``config.clip_denoised``, by default for eps only.

        With eps prediction x0_hat = (x_t - sigma_t eps_hat) / alpha_t multiplies the network's error by
        sigma_t / alpha_t (1e5 at the cosine schedule's T-1), and Ho et al.'s clip keeps it in range. With v
        prediction x0_hat = alpha_t x_t - sigma_t v_hat is bounded, and the clip does harm: data that sit at
        the end of the range (half the pixels of Fashion-MNIST are exactly 0, x0 = -1) get an estimate whose
        errors are cut on one side only, E[max(e, 0)] = 0.4 rms(e) > 0 instead of 0, and a sampler carries
        that lift to its last step. On the default run (issue 11) 1,000 DDPM steps left 6.9% of the pixels
        at exactly 0 with the clip and 22.8% without (the test images: 50%).
        """
        clip = self.config.clip_denoised
        return self.config.prediction == "eps" if clip is None else clip

    def predict(
        self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, guidance: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) at x_t (B, C, H, W), t (B,): x0_hat clipped to [-1, 1] when ``clips_denoised``,
        eps_hat then recomputed so that x_t = alpha_t x0_hat + sigma_t eps_hat still holds."""
        out = self.model_output(x_t, t, y, guidance)
        alpha, sigma = (s.to(x_t.device, torch.float32).view(-1, 1, 1, 1) for s in self.schedule.alpha_sigma(t.cpu()))
        if self.config.prediction == "eps":
            x0_hat = (x_t - sigma * out) / alpha
            eps_hat = out
        else:  # v = alpha eps - sigma x0 (Salimans and Ho 2022): x0 = alpha x_t - sigma v, eps = sigma x_t + alpha v
            x0_hat = alpha * x_t - sigma * out
            eps_hat = sigma * x_t + alpha * out
        if self.clips_denoised:
            x0_hat = x0_hat.clamp(-1.0, 1.0)
            eps_hat = (x_t - alpha * x0_hat) / sigma
        return x0_hat, eps_hat

    # ----------------------------------------------------------------- sampling

    def _sampler_steps(self, sampler: str | None, steps: int | None) -> tuple[str, int]:
        """The sampler (default ``config.sampler``) and its steps (default ``config.sampling_steps``, or T
        for ddpm when another sampler is configured), checked."""
        c = self.config
        sampler = sampler or c.sampler
        if sampler not in SAMPLERS:
            raise unknown("sampler", sampler, SAMPLERS)
        if steps is None:  # the configured steps belong to the configured sampler; ddpm otherwise takes all T
            steps = c.timesteps if sampler == "ddpm" and c.sampler != "ddpm" else c.sampling_steps
        most = c.timesteps if sampler == "ddpm" else c.timesteps - 1
        if not 1 <= steps <= most:
            raise ConfigError(f"--sampling-steps must be in 1..{most} for {sampler} with this model, got {steps}")
        return sampler, steps

    def _guidance(self, guidance: float | None) -> float:
        if guidance is not None and not self.config.conditional:
            raise ConfigError("--guidance needs a class-conditional diffusion model (model.conditional=true)")
        return self.config.guidance if guidance is None else guidance

    def _denoiser(
        self, n: int, labels: torch.Tensor | None, generator: torch.Generator | None, guidance: float
    ) -> Denoiser:
        """(x_t, t) -> (x0_hat, eps_hat) for n images; a conditional model without labels draws them."""
        c, dev = self.config, self.device
        if c.conditional and labels is None:
            labels = torch.randint(c.num_classes, (n,), generator=generator, device=dev)
        y = labels.to(dev) if labels is not None and c.conditional else None

        def denoise(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.predict(x_t, torch.full((n,), t, device=dev, dtype=torch.long), y, guidance)

        return denoise

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        eta: float | None = None,
    ) -> torch.Tensor:
        """n images (n, C, H, W) in [0, 1] from pure noise.

        Args:
            generator: the only source of randomness (initial noise, ancestral noise, labels).
            labels: (n,) classes for a conditional model; drawn uniformly when None.
            sampler: ddpm | ddim | dpm-solver; default ``config.sampler``.
            steps: network evaluations; default ``config.sampling_steps`` (T for ddpm).
            guidance: classifier-free guidance scale (conditional models); default ``config.guidance``.
            eta: DDIM stochasticity; default ``config.eta``.
        """
        c = self.config
        sampler, steps = self._sampler_steps(sampler, steps)
        guidance = self._guidance(guidance)
        x_T = torch.randn(n, *c.image_shape, generator=generator, device=self.device)
        x0 = sample_loop(
            self._denoiser(n, labels, generator, guidance),
            self.schedule,
            x_T,
            sampler=sampler,
            steps=steps,
            spacing=c.spacing,
            eta=c.eta if eta is None else eta,
            generator=generator,
        )
        return from_model_range(x0)

    @torch.no_grad()
    def inpaint(
        self,
        x: torch.Tensor,
        keep: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        steps: int = 50,
        jump_length: int = 5,
        resample: int = 5,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Fill the pixels where ``keep`` is 0 by RePaint (``samplers.repaint_loop``).

        The defaults (50 timesteps, jumps of 5, 5 passes: 230 network evaluations) scale the paper's
        (250, 10, 10: 4,750 evaluations on a GPU) to a CPU; more steps and passes harmonise better.

        Args:
            x: (B, C, H, W) in [0, 1]; only the kept pixels are read.
            keep: (B or 1, 1 or C, H, W), 1 = known pixel, 0 = to fill.
            labels: (B,) classes of a conditional model (drawn uniformly when None).

        Returns:
            (B, C, H, W) in [0, 1]; the kept pixels are the model-range round trip of ``x``'s (callers
            that need them bit for bit paste ``x`` back, as ``inpaint_images`` does).
        """
        c = self.config
        if not 1 <= steps <= c.timesteps:
            raise ConfigError(f"inpainting steps must be in 1..{c.timesteps} (the model's timesteps), got {steps}")
        denoise = self._denoiser(len(x), labels, generator, self._guidance(guidance))
        dev = self.device
        x0 = repaint_loop(
            denoise,
            self.schedule,
            to_model_range(x.to(dev).float()),
            keep.to(dev),
            steps=steps,
            jump_length=jump_length,
            resample=resample,
            generator=generator,
        )
        return from_model_range(x0)

    @torch.no_grad()
    def edit(
        self,
        x: torch.Tensor,
        strength: float,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """SDEdit (Meng et al. 2022): noise the images part of the way, then run the reverse process back.

        Of the sampler's grid of ``steps`` evaluations (``sampling_grid``) the last k = round(strength *
        steps) (at least 1) are run, from x_t = alpha_t x + sigma_t noise at the grid's timestep t before
        them: strength 1 starts from (almost) pure noise, a small strength changes little. With a
        class-conditional model, ``labels`` are the classes to edit towards (class-guided editing,
        classifier-free guidance ``guidance``).

        Args:
            x: (B, C, H, W) in [0, 1].
            strength: in (0, 1].
            labels: (B,) target classes (conditional models; drawn uniformly when None).

        Returns:
            (B, C, H, W) in [0, 1].
        """
        c = self.config
        if not 0.0 < strength <= 1.0:
            raise ConfigError(f"--strength must be in (0, 1], got {strength}")
        sampler, steps = self._sampler_steps(sampler, steps)
        guidance = self._guidance(guidance)
        dev = self.device
        alpha, sigma = (float(v) for v in self.schedule.alpha_sigma(self.edit_timestep(strength, sampler, steps)))
        noise = torch.randn(x.shape, generator=generator, device=dev)
        x_t = alpha * to_model_range(x.to(dev).float()) + sigma * noise
        x0 = sample_loop(
            self._denoiser(len(x), labels, generator, guidance), self.schedule, x_t, sampler=sampler,
            steps=steps, spacing=c.spacing, eta=c.eta, generator=generator, tail=max(1, round(strength * steps)),
        )  # fmt: skip
        return from_model_range(x0)

    def edit_timestep(self, strength: float, sampler: str | None = None, steps: int | None = None) -> int:
        """The timestep ``edit`` noises images to for ``strength`` with the given (or configured) sampler:
        the grid's entry before its last round(strength * steps) evaluations."""
        sampler, steps = self._sampler_steps(sampler, steps)
        k = max(1, round(strength * steps))
        return sampling_grid(self.schedule, sampler, steps, self.config.spacing)[-(k + 1)]

    # ----------------------------------------------------------------- likelihood

    @torch.no_grad()
    def nll(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        timesteps: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """The variational bound on -log P(x) of 8-bit images (Ho et al. 2020, Eq. 5), in nats per image.

        L = L_T + sum_{t=2}^{T} L_{t-1} + L_0 with
            L_T     = KL(q(x_T | x0) || N(0, I)),
            L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), p with variance beta-tilde_t, so
                      L_{t-1} = ||mu-tilde(x_t, x0) - mu-tilde(x_t, x0_hat)||^2 / (2 beta-tilde_t),
            L_0     = -log p(x0 | x_1), the discrete decoder (Eq. 13) with mean x0_hat and variance beta_1.
        The sum over t is estimated by stratified Monte Carlo: ``timesteps`` strata of {2..T}, one t and
        one x_t ~ q(x_t | x0) per stratum and image, each term weighted by its stratum's size, so the
        estimate is unbiased; ``timesteps = T`` evaluates every term.

        Args:
            x: (B, C, H, W) in [0, 1], 8-bit values.
            y: (B,) labels for a conditional model (the bound is then of P(x | y)); None = unconditional.
            generator: the source of the timesteps and noise.
            timesteps: Monte-Carlo terms per image; default ``config.nll_timesteps``.

        Returns:
            ``{"vlb": (B,)}`` in nats.
        """
        c, sch = self.config, self.schedule
        T = c.timesteps
        k = timesteps or c.nll_timesteps
        if not 1 <= k <= T:
            raise ConfigError(f"nll timesteps must be in 1..{T}, got {k}")
        dev = x.device
        x0 = to_model_range(torch.round(x * 255.0) / 255.0)
        b = len(x0)
        y = y if c.conditional else None
        # L_T: KL(N(alpha_T x0, sigma_T^2) || N(0, 1)) per pixel, in float64 for the tiny values.
        abar_T = float(sch.alphas_cumprod[-1])
        mean_T = math.sqrt(abar_T) * x0.double()
        prior = 0.5 * (mean_T.square() + (1.0 - abar_T) - 1.0 - math.log(1.0 - abar_T)).flatten(1).sum(1)
        terms = torch.zeros(b, dtype=torch.float64, device=dev)
        for lo, hi in vlb_strata(T, k):
            t = torch.randint(lo, hi, (b,), generator=generator, device=dev)
            terms += (hi - lo) * self._kl_term(x0, t, y, generator).double()
        decoder = -self._decoder_log_prob(x0, y, generator).double()
        return {"vlb": (prior + terms + decoder).float()}

    def _kl_term(
        self, x0: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) per image for 0-based t >= 1, x_t ~ q(x_t | x0)."""
        sch = self.schedule
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_t = sch.q_sample(x0, t, eps)
        x0_hat, _ = self.predict(x_t, t, y, guidance=1.0)
        diff = sch.posterior_mean(x0, x_t, t) - sch.posterior_mean(x0_hat, x_t, t)
        var = sch.at(sch.posterior_variance, t, x0)
        return (diff.square() / (2.0 * var)).flatten(1).sum(1)

    def _decoder_log_prob(
        self, x0: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """log p(x0 | x_1) with the discrete decoder (Ho et al. Eq. 13), x_1 ~ q(x_1 | x0)."""
        t = torch.zeros(len(x0), dtype=torch.long, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        x_1 = self.schedule.q_sample(x0, t, eps)
        x0_hat, _ = self.predict(x_1, t, y, guidance=1.0)
        log_scale = 0.5 * math.log(float(self.schedule.betas[0]))
        return discretized_gaussian_log_prob(x0, x0_hat, torch.tensor(log_scale, device=x0.device))


def build(config: DiffusionConfig) -> DDPM:
    """The DDPM of ``config`` with its U-Net denoiser and noise schedule."""
    net = UNet(
        config.image_shape,
        config.channels,
        config.blocks,
        config.attention,
        config.heads,
        config.groups,
        config.dropout,
        num_classes=config.num_classes if config.conditional else 0,
        patch=config.patch,
    )
    return DDPM(config, net, NoiseSchedule(config.schedule, config.timesteps))


__all__ = ["DDPM", "DiffusionConfig", "build", "discretized_gaussian_log_prob", "vlb_strata"]
