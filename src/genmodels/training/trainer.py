"""One generic Trainer for every family.

It knows two step kinds and picks one by protocol (``models.base``): a single-objective step
(``model.loss``) and an adversarial step (``n_critic`` critic updates on fresh batches, then one
generator update through a frozen critic). It never looks inside a model.

Determinism: the data order is a function of (seed, epoch) and the training RNG is re-seeded from
(seed, step, rank) before every step, so a run resumed from any checkpoint on the CPU ends with
weights bit-identical to an uninterrupted run (tested).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genmodels.errors import CheckpointError, GenmodelsError
from genmodels.models.base import Adversarial, Batch, LossOutput
from genmodels.training import distributed
from genmodels.training.checkpoint import (
    flatten_optimizer,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from genmodels.training.config import TrainConfig
from genmodels.training.ema import EMA
from genmodels.training.optim import LeanAdam


class TrainingDiverged(GenmodelsError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    step: int
    elapsed: float  # seconds of training, across resumes
    metrics: dict[str, float] = field(default_factory=dict)  # the last logged record
    stopped_by: str = "steps"  # steps | time | interrupt


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GenmodelsError(f"train.device={name} but no CUDA device is available; use --set train.device=cpu")
    return dev


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively here: an Ampere+ GPU, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class BatchStream:
    """Deterministic batches: global batch k holds positions [kB, (k+1)B) of the endless concatenation
    of per-epoch permutations; a process of a distributed run takes its contiguous share of it.

    The whole state is the batch counter, so resuming needs nothing else.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise GenmodelsError(
                f"train.batch_size={batch_size} does not split over {world} processes; make it a multiple"
            )
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 7919))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, k: int) -> torch.Tensor:
        """Indices of this process's share of global batch ``k``."""
        per = self.batch_size // self.world
        start = k * self.batch_size + self.rank * per
        if start // self.n == (start + per - 1) // self.n:  # within one epoch: a slice of its permutation
            offset = start % self.n
            return self._perm(start // self.n)[offset : offset + per]
        pos = torch.arange(start, start + per)  # across an epoch boundary: position by position
        epochs, offsets = pos // self.n, pos % self.n
        return torch.stack([self._perm(int(e))[int(o)] for e, o in zip(epochs, offsets, strict=True)])

    def epoch(self, k: int) -> float:
        return k * self.batch_size / self.n


def lr_factor(config: TrainConfig, step: int, progress: float) -> float:
    """The learning-rate multiplier at ``step`` (warm-up, then the decay over progress in [0, 1])."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    p = min(max(progress, 0.0), 1.0)
    lo = config.min_lr_ratio
    if config.schedule == "cosine":
        decay = lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif config.schedule == "linear":
        decay = 1.0 - (1.0 - lo) * p
    else:
        decay = 1.0
    return warm * decay


class Trainer:
    """Trains one model on one in-memory dataset.

    Args:
        model: a SingleObjective or Adversarial model (``models.base``).
        images: uint8 tensor (N, C, H, W) of training images.
        labels: int64 tensor (N,) or None.
        config: the TrainConfig.
        run_dir: where checkpoints, metrics and grids go; None trains without writing anything.
        rank, world: this process's place in a distributed run (1 process: 0, 1).
        engine: what the loss methods are called through (a DistributedDataParallel wrapper under
            torchrun); defaults to the model itself.
        on_sample: called with (step, images in [0, 1]) whenever a sample grid is made.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        config: TrainConfig,
        run_dir: Path | None = None,
        *,
        rank: int = 0,
        world: int = 1,
        engine: Callable[..., Any] | None = None,
        device: torch.device | None = None,
        monitor: Callable[[torch.Tensor], dict[str, float]] | None = None,
    ) -> None:
        self.config = config
        self.monitor = monitor  # samples -> {"class_coverage", "class_kl"}: watches for mode collapse
        self.best_coverage = 0.0
        self.device = device or pick_device(config.device)
        self.model = model.to(self.device)
        self.engine = engine
        self.rank, self.world = rank, world
        self.is_main = rank == 0
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.images = images.to(self.device)
        self.labels = labels.to(self.device) if labels is not None else None
        self.stream = BatchStream(len(images), config.batch_size, config.seed, rank, world)
        self.adversarial = isinstance(model, Adversarial)
        self.optimizers = self._make_optimizers()
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        if world > 1 and engine is None:
            self.engine = distributed.Engine(self.model, self.device, self.adversarial)
        self.ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay else None
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.batches = 0
        self.elapsed = 0.0
        self.logger: Any = None
        self.saved_step: int | None = None
        self._last_print = time.monotonic()
        self.history: list[dict[str, Any]] = []
        self._last_ckpt_time = time.monotonic()
        # GAN gradient norms are a diagnostic: measured on the first step of each logging window, not
        # every step (3 extra passes over every gradient per iteration, ~7% of the classic MLP GAN's step).
        self.measure_norms = True

    # ----------------------------------------------------------------- set-up

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config

        def adam(params: Iterator[nn.Parameter], lr: float) -> torch.optim.Optimizer:
            params = [p for p in params if p.requires_grad]
            # One fused kernel per step instead of a chain of elementwise passes: Adam is memory-bound,
            # and for small models (the classic MLP GAN) it was a third of the step time on the CPU.
            fused = self.device.type in ("cpu", "cuda") or None
            if c.weight_decay:
                return torch.optim.AdamW(params, lr=lr, betas=c.betas, weight_decay=c.weight_decay, fused=fused)
            return LeanAdam(params, lr=lr, betas=c.betas, fused=fused)

        if self.adversarial:
            m: Any = self.model
            return {
                "opt_d": adam(m.discriminator_parameters(), c.lr_d or c.lr),
                "opt_g": adam(m.generator_parameters(), c.lr),
            }
        return {"opt": adam(self.model.parameters(), c.lr)}

    def _amp_dtype(self) -> torch.dtype | None:
        p = self.config.precision
        if p == "auto":
            p = "bf16" if bf16_is_fast(self.device) else "fp32"
        if p == "fp16" and self.device.type != "cuda":
            raise GenmodelsError("train.precision=fp16 needs a CUDA device; on the CPU use bf16 or fp32")
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ----------------------------------------------------------------- steps

    def next_batch(self) -> Batch:
        idx = self.stream.indices(self.batches).to(self.device)
        self.batches += 1
        x = self.images[idx].float().div_(255.0)
        y = self.labels[idx] if self.labels is not None else None
        return Batch(x, y)

    def _call(self, method: str, batch: Batch) -> LossOutput:
        with self.autocast():
            if self.engine is not None:
                return self.engine(method, batch)
            return getattr(self.model, method)(batch)

    def _check_finite(self, out: LossOutput, what: str) -> None:
        bad = not torch.isfinite(out.loss.detach()).item()
        if self.world > 1:  # every process must stop together, or the others wait forever in all-reduce
            bad = bool(distributed.agree([float(bad)], self.device)[0])
        if bad:
            kept = (
                f"the last good checkpoint (step {self.saved_step}) is kept"
                if self.saved_step is not None
                else "no checkpoint had been written yet"
            )
            raise TrainingDiverged(
                f"the {what} became {out.loss.item()} at step {self.step}; training stopped and {kept}. "
                f"Lower the learning rate (--set train.lr=...), enable gradient clipping "
                f"(--set train.grad_clip=1.0) or use precision fp32"
            )

    def _apply(
        self, name: str, loss: torch.Tensor, params: list[nn.Parameter], want_norm: bool = False
    ) -> torch.Tensor | None:
        opt = self.optimizers[name]
        for p in params:  # zero_grad(set_to_none=True) without its per-call Python
            p.grad = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        norm = None
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        elif want_norm:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        return norm

    def single_step(self) -> dict[str, torch.Tensor]:
        out = self._call("loss", self.next_batch())
        self._check_finite(out, "loss")
        params = [p for g in self.optimizers["opt"].param_groups for p in g["params"]]
        norm = self._apply("opt", out.loss, params)
        metrics = {"loss": out.loss.detach(), **out.metrics}
        if norm is not None:
            metrics["grad_norm"] = norm.detach()
        return metrics

    def adversarial_step(self) -> dict[str, torch.Tensor]:
        m: Any = self.model
        d_params = [p for g in self.optimizers["opt_d"].param_groups for p in g["params"]]
        metrics: dict[str, torch.Tensor] = {}
        # A critic update is one optimiser step per method the model names: usually one joint loss; the
        # classic Keras GAN takes two (its two train_on_batch calls: the real batch, then the fakes).
        methods = tuple(getattr(m, "critic_methods", ("discriminator_loss",)))
        for _ in range(max(1, int(m.n_critic))):
            batch = self.next_batch()
            parts = []
            for method in methods:
                d_out = self._call(method, batch)
                self._check_finite(d_out, "discriminator loss")
                d_norm = self._apply("opt_d", d_out.loss, d_params, want_norm=self.measure_norms)
                parts.append(d_out.loss.detach())
                metrics.update(d_out.metrics)
        metrics["d_loss"] = torch.stack(parts).sum() if len(parts) > 1 else parts[0]
        # The generator trains through a frozen critic: no critic gradients are computed at all.
        for p in d_params:
            p.requires_grad_(False)
        try:
            g_out = self._call("generator_loss", batch)
            self._check_finite(g_out, "generator loss")
            g_params = [p for g in self.optimizers["opt_g"].param_groups for p in g["params"]]
            g_norm = self._apply("opt_g", g_out.loss, g_params, want_norm=self.measure_norms)
        finally:
            for p in d_params:
                p.requires_grad_(True)
        metrics.update({"g_loss": g_out.loss.detach(), **g_out.metrics})
        # Gradient norms of each network's last update (before clipping): a diagnostic of balance.
        if d_norm is not None and g_norm is not None:
            metrics.update({"d_grad_norm": d_norm.detach(), "g_grad_norm": g_norm.detach()})
        return metrics

    # ----------------------------------------------------------------- schedule

    def progress(self, elapsed: float) -> float:
        c = self.config
        parts = []
        if c.steps:
            parts.append(self.step / c.steps)
        if c.max_time:
            parts.append(elapsed / (60.0 * c.max_time))
        return max(parts) if parts else 0.0

    def _set_lr(self, elapsed: float) -> float:
        f = lr_factor(self.config, self.step, self.progress(elapsed))
        for name, opt in self.optimizers.items():
            for g, base in zip(opt.param_groups, self.base_lrs[name], strict=True):
                g["lr"] = base * f
        return f * self.config.lr

    def done(self, elapsed: float) -> str | None:
        c = self.config
        if c.steps is not None and self.step >= c.steps:
            return "steps"
        if c.max_time is not None and elapsed >= 60.0 * c.max_time:
            return "time"
        return None

    # ----------------------------------------------------------------- checkpoints

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        plain: dict[str, Any] = {
            "batches": self.batches,
            "elapsed": self.elapsed,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizers": {},
            "world": self.world,
            "history_tail": self.history[-1] if self.history else {},
        }
        for name, opt in self.optimizers.items():
            t, p = flatten_optimizer(opt.state_dict(), name)
            tensors.update(t)
            plain["optimizers"][name] = p
        if self.scaler is not None:
            plain["scaler"] = self.scaler.state_dict()
        return tensors, plain

    def save(self) -> Path | None:
        if self.run_dir is None or not self.is_main:
            return None
        tensors, plain = self.state()
        path = save_checkpoint(
            self.run_dir / "checkpoints",
            self.step,
            self.model.state_dict(),
            tensors,
            plain,
            self.ema.state_dict() if self.ema else None,
            keep=self.config.keep_checkpoints,
        )
        self._last_ckpt_time = time.monotonic()
        self.saved_step = self.step
        return path

    def read_checkpoint(self, path: Path | None = None) -> dict[str, Any] | None:
        """The given (or the latest) checkpoint of ``run_dir``, verified; None when there is none."""
        if path is None:
            if self.run_dir is None:
                return None
            path = latest_checkpoint(self.run_dir / "checkpoints")
            if path is None:
                return None
        ck = load_checkpoint(path)
        ck["path"] = str(path)
        return ck

    def restore(self, path: Path | None = None, checkpoint: dict[str, Any] | None = None) -> bool:
        """Continue from a checkpoint (read here, or already read and passed in); False when there is none."""
        ck = checkpoint if checkpoint is not None else self.read_checkpoint(path)
        if ck is None:
            return False
        meta = ck["meta"]
        try:
            self.model.load_state_dict(ck["model"])
            if self.ema is not None and ck["ema"] is not None:
                self.ema.load_state_dict(ck["ema"], int(meta.get("ema_updates", 0)))
            for name, opt in self.optimizers.items():
                opt.load_state_dict(unflatten_optimizer(ck["state"], meta["optimizers"][name], name))
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {ck.get('path')} does not fit this model and config: {first}") from None
        if self.scaler is not None and "scaler" in meta:
            self.scaler.load_state_dict(meta["scaler"])
        if "rng.torch" in ck["state"]:
            torch.set_rng_state(ck["state"]["rng.torch"])
        self.step = self.saved_step = int(meta["step"])
        # The batch counter is global, so a run saved at one world size continues at another.
        self.batches = int(meta["batches"])
        self.elapsed = float(meta["elapsed"])
        return True

    # ----------------------------------------------------------------- samples

    @torch.no_grad()
    def sample_images(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n samples from the model (EMA weights when on) with a fixed generator; (n, C, H, W) in [0, 1]."""
        g = torch.Generator(device=self.device).manual_seed(self.config.seed if seed is None else seed)
        labels = None
        if getattr(self.model, "conditional", False):
            k = int(self.model.config.num_classes)
            labels = torch.arange(n, device=self.device) % k
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ema.swapped_in(self.model) if self.ema else contextlib.nullcontext():
                return self.model.sample(n, generator=g, labels=labels).float()
        finally:
            self.model.train(was_training)

    def save_samples(self, tag: str) -> None:
        if self.run_dir is None or not self.is_main or self.config.grid == 0:
            return
        from genmodels.viz import save_grid

        k = self.config.grid
        imgs = self.sample_images(k * k)
        grid = save_grid(imgs, self.run_dir / "samples" / f"{tag}.png", nrow=k)
        if self.logger is not None:
            self.logger.image("samples", grid, self.step)

    def watch_classes(self) -> dict[str, float] | None:
        """Class coverage of ``monitor_classes`` fresh samples; warns when it falls (mode collapse).

        Logged as ``class_coverage`` (share of classes produced at least a quarter as often as in the
        data) and ``class_kl`` (KL of the sample class histogram from the data's, nats). The warning
        fires when coverage drops 0.2 or more below the best seen in this run.
        """
        if self.monitor is None or not self.config.monitor_classes or not self.is_main:
            return None
        imgs = self.sample_images(self.config.monitor_classes, seed=self.config.seed + 0x5EED)
        stats = self.monitor(imgs)
        cov = stats["class_coverage"]
        if cov <= self.best_coverage - 0.2 + 1e-9:
            msg = (
                f"warning: possible mode collapse at step {self.step}: samples cover {cov:.0%} of the classes "
                f"(best so far {max(self.best_coverage, cov):.0%}, class KL {stats['class_kl']:.2f} nats); "
                "see samples/ and consider a lower learning rate, spectral norm (model.spectral_norm=true) "
                "or the wgan-gp loss"
            )
            print(msg, file=sys.stderr, flush=True)
        self.best_coverage = max(self.best_coverage, cov)
        if self.logger is not None:
            self.logger.log({"step": self.step, "time": round(self.elapsed, 3), **stats})
        return stats

    # ----------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Train until ``steps`` or ``max_time``; checkpoint, log and sample along the way."""
        c = self.config
        if self.run_dir is not None and self.is_main:
            from genmodels.training.logger import MetricsLogger

            self.logger = MetricsLogger(self.run_dir)
            self.logger.truncate_after(self.step)
        step_fn = self.adversarial_step if self.adversarial else self.single_step
        bar = self._progress_bar()
        start = time.monotonic()
        elapsed0 = self.elapsed
        window: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # steps that reported each metric (gradient norms: one per window)
        win_steps, win_imgs, win_time = 0, 0, 0.0
        stopped = None
        self.model.train()
        interrupted = _InterruptFlag()
        try:
            with interrupted:
                while (stopped := self._agree_stop(interrupted.hit)) is None:
                    t0 = time.monotonic()
                    lr = self._set_lr(self.elapsed)
                    torch.manual_seed(derive_seed(c.seed, self.step, self.rank))
                    b0 = self.batches
                    self.measure_norms = win_steps == 0
                    metrics = step_fn()
                    if self.ema is not None:
                        self.ema.update()
                    self.step += 1
                    for k, v in metrics.items():
                        window[k] = window[k] + v.float() if k in window else v.float().clone()
                        counts[k] = counts.get(k, 0) + 1
                    win_steps += 1
                    win_imgs += (self.batches - b0) * c.batch_size
                    win_time += time.monotonic() - t0
                    self.elapsed = elapsed0 + time.monotonic() - start
                    if c.log_every and self.step % c.log_every == 0:
                        self._log(window, counts, win_imgs, win_time, lr, bar)
                        window, counts, win_steps, win_imgs, win_time = {}, {}, 0, 0, 0.0
                    if bar is not None:
                        bar.update(1)
                    self._periodic()
                    self.elapsed = elapsed0 + time.monotonic() - start
            if win_steps:
                self._log(window, counts, win_imgs, win_time, self._set_lr(self.elapsed), bar)
            if stopped != "interrupt":
                self.fit_to_data()
            self.save()
            self.save_samples("final" if stopped != "interrupt" else f"step-{self.step:08d}")
        finally:
            if bar is not None:
                bar.close()
            if self.logger is not None:
                self.logger.close()
        return TrainResult(self.step, self.elapsed, self.history[-1] if self.history else {}, stopped or "steps")

    def fit_to_data(self) -> None:
        """Let a model that fits something to the data after training do so (a VAE's mixture prior
        over its aggregate posterior: ``model.fit_to_data(images, labels, generator=)``) before the
        final checkpoint. Its time counts as training time. With EMA the fit is made once, for the EMA
        weights (what sampling and evaluation use), and what it changed is copied to the raw weights,
        whose encoder differs from the EMA's only by the last steps' drift."""
        fit = getattr(self.model, "fit_to_data", None)
        if not callable(fit):
            return
        t0 = time.monotonic()
        was_training = self.model.training
        self.model.eval()
        seed = derive_seed(self.config.seed, self.step, 0xF17)
        try:
            if self.ema is None:
                fit(self.images, self.labels, generator=torch.Generator().manual_seed(seed))
            else:
                with self.ema.swapped_in(self.model):
                    before = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    fit(self.images, self.labels, generator=torch.Generator().manual_seed(seed))
                    fitted = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.ema.load_state_dict(fitted, self.ema.updates)
                changed = {k: v for k, v in fitted.items() if not torch.equal(v, before[k])}
                self.model.load_state_dict(changed, strict=False)
        finally:
            self.model.train(was_training)
        self.elapsed += time.monotonic() - t0

    def _agree_stop(self, interrupted: bool) -> str | None:
        """Why to stop before the next step, or None; the same answer on every process."""
        stopped = self.done(self.elapsed)
        if self.world > 1:  # elapsed times and signals differ between processes: act on the first
            time_up, hit = distributed.agree([float(stopped == "time"), float(interrupted)], self.device)
            stopped = stopped or ("time" if time_up else None)
            interrupted = bool(hit)
        if stopped is None and interrupted:
            return "interrupt"
        return stopped

    def _periodic(self) -> None:
        c = self.config
        if c.sample_every and self.step % c.sample_every == 0:
            self.save_samples(f"step-{self.step:08d}")
            self.watch_classes()
        due_time = c.ckpt_minutes and time.monotonic() - self._last_ckpt_time > 60.0 * c.ckpt_minutes
        if (c.ckpt_every and self.step % c.ckpt_every == 0) or due_time:
            self.save()

    def _log(
        self, window: dict[str, torch.Tensor], counts: dict[str, int], imgs: int, secs: float, lr: float, bar: Any
    ) -> None:
        window = distributed.mean_over_ranks({k: v / counts[k] for k, v in window.items()})
        rec: dict[str, Any] = {"step": self.step, "time": round(self.elapsed, 3), "lr": lr}
        rec.update({k: float(v) for k, v in window.items()})
        rec["images_per_s"] = imgs * self.world / secs if secs > 0 else 0.0
        rec["epoch"] = round(self.stream.epoch(self.batches), 4)
        self.history.append(rec)
        if self.logger is not None:
            self.logger.log(rec)
        shown = {k: f"{rec[k]:.4g}" for k in list(window)[:3]} | {"img/s": f"{rec['images_per_s']:.0f}"}
        if bar is not None and not bar.disable:
            bar.set_postfix(shown, refresh=False)
        elif bar is not None and time.monotonic() - self._last_print > 30.0:
            # No terminal (a log file, CI): a plain line every 30 s instead of carriage-return bars.
            self._last_print = time.monotonic()
            total = f"/{self.config.steps}" if self.config.steps else ""
            items = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"step {self.step}{total} ({self.elapsed:.0f} s) {items}", file=sys.stderr, flush=True)

    def _progress_bar(self) -> Any:
        if not (self.config.progress and self.is_main):
            return None
        from tqdm.auto import tqdm

        total = self.config.steps
        return tqdm(
            total=total,
            initial=self.step if total else 0,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
            disable=None,  # no bar when stderr is not a terminal
            desc="train",
            leave=True,
        )


class _InterruptFlag:
    """Turns SIGINT / SIGTERM into a flag checked between steps, so an interrupted run ends with a
    clean checkpoint instead of a half-written one. A second signal interrupts at once."""

    def __init__(self) -> None:
        self.hit = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __enter__(self) -> _InterruptFlag:
        with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def images_tensor(images: np.ndarray) -> torch.Tensor:
    """A uint8 (N, C, H, W) numpy array as a torch tensor without copying."""
    return torch.from_numpy(np.ascontiguousarray(images))
