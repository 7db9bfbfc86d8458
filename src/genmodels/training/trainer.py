"""One generic Trainer for every family: the loop and its two step kinds.

It knows two step kinds and picks one by protocol (``models.base``): a single-objective step
(``model.loss``) and an adversarial step (``n_critic`` critic updates on fresh batches, each calling the
model's ``critic_methods``, then one generator update through a frozen critic). It never looks inside
a model. Its parts: the batch order (``batches``), the learning-rate schedule and step budget
(``schedule``), checkpoints and sample grids (``periodic``), and the loop here.

Determinism: the data order is a function of (seed, epoch) and the training RNG is re-seeded from
(seed, step, rank) before every step, so a run resumed from any checkpoint on the CPU ends with
weights bit-identical to an uninterrupted run (tested).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genmodels.device import bf16_is_fast, pick_device
from genmodels.device import mode as fastpaths_mode
from genmodels.errors import GenmodelsError
from genmodels.models.base import Adversarial, Batch, LossOutput
from genmodels.seeding import derive_seed
from genmodels.training import distributed, speed
from genmodels.training.batches import BatchStream
from genmodels.training.config import TrainConfig
from genmodels.training.ema import EMA
from genmodels.training.optim import LeanAdam
from genmodels.training.periodic import Checkpointing, Monitor, Sampling
from genmodels.training.schedule import HARD_LIMIT, StepBudget, lr_factor
from genmodels.training.speed import StepPlan

__all__ = ["Monitor", "TrainResult", "Trainer", "TrainingDiverged"]


class TrainingDiverged(GenmodelsError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    step: int
    elapsed: float  # seconds of training, across resumes
    metrics: dict[str, float] = field(default_factory=dict)  # the last logged record
    stopped_by: str = "steps"  # steps | time | interrupt


class Trainer(Checkpointing, Sampling):
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
        monitor: Monitor | None = None,
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
        self.budget = StepBudget.from_config(config)
        self.adversarial = isinstance(model, Adversarial)
        self.optimizers = self._make_optimizers()
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()}
        if world > 1 and engine is None:
            self.engine = distributed.Engine(self.model, self.device, self.adversarial)
        self.ema = EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay else None
        self.amp_dtype = self._amp_dtype()
        # How a step runs here (precision, layout, compiled or not): measured or restored when fit() starts.
        self.plan: StepPlan | None = None
        self.model_name = type(model).__name__
        self.compiled: speed.Compiled | None = None  # what the steps run compiled
        self.channels_last = False
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
        return self.batch_of(idx)

    def batch_of(self, idx: torch.Tensor) -> Batch:
        """The training images ``idx`` (and their labels) as a step takes them."""
        x = self.images[idx].float().div_(255.0)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self.labels[idx] if self.labels is not None else None
        return Batch(x, y)

    def call_loss(self, method: str, batch: Batch) -> LossOutput:
        """One loss method on a batch, as a step runs it: autocast, through DDP or compiled per the plan."""
        with self.autocast():
            if self.engine is not None:
                return self.engine(method, batch)
            if self.compiled is not None:
                try:
                    return self.compiled.call(self.model, method, batch)
                except Exception as e:
                    if method in self.compiled.proven or not speed.is_compile_failure(e):
                        raise
                    speed.fall_back_eager(self, e)  # a plan from a checkpoint or the cache that cannot compile here
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
        out = self.call_loss("loss", self.next_batch())
        self._check_finite(out, "loss")
        params = [p for g in self.optimizers["opt"].param_groups for p in g["params"]]
        norm = self._apply("opt", out.loss, params)
        metrics = {"loss": out.loss.detach(), **out.metrics}
        if norm is not None:
            metrics["grad_norm"] = norm.detach()
        return metrics

    def adversarial_step(self) -> dict[str, torch.Tensor]:
        m = self.model
        assert isinstance(m, Adversarial)
        d_params = [p for g in self.optimizers["opt_d"].param_groups for p in g["params"]]
        metrics: dict[str, torch.Tensor] = {}
        # A critic update is one optimiser step per method the model names (``Adversarial.critic_methods``).
        methods = tuple(m.critic_methods)
        for _ in range(max(1, int(m.n_critic))):
            batch = self.next_batch()
            parts = []
            for method in methods:
                d_out = self.call_loss(method, batch)
                self._check_finite(d_out, "discriminator loss")
                d_norm = self._apply("opt_d", d_out.loss, d_params, want_norm=self.measure_norms)
                parts.append(d_out.loss.detach())
                metrics.update(d_out.metrics)
        metrics["d_loss"] = torch.stack(parts).sum() if len(parts) > 1 else parts[0]
        # The generator trains through a frozen critic: no critic gradients are computed at all.
        for p in d_params:
            p.requires_grad_(False)
        try:
            g_out = self.call_loss("generator_loss", batch)
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

    def progress(self) -> float:
        """Share of the run done, step / budget (``schedule.StepBudget``); deterministic under --max-time."""
        return self.budget.progress(self.step)

    def _set_lr(self) -> float:
        f = lr_factor(self.config, self.step, self.progress())
        for name, opt in self.optimizers.items():
            for g, base in zip(opt.param_groups, self.base_lrs[name], strict=True):
                g["lr"] = base * f
        return f * self.config.lr

    def done(self, elapsed: float) -> str | None:
        return self.budget.done(self.step, elapsed)

    # ----------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Train until ``steps`` or ``max_time``; checkpoint, log and sample along the way."""
        c = self.config
        if self.run_dir is not None and self.is_main:
            from genmodels.training.logger import MetricsLogger

            self.logger = MetricsLogger(self.run_dir)
            self.logger.truncate_after(self.step)
        step_fn = self.adversarial_step if self.adversarial else self.single_step
        start = time.monotonic()
        elapsed0 = self.elapsed
        self._plan_step()  # its timing and any compile count inside --max-time
        self.elapsed = elapsed0 + time.monotonic() - start
        bar = self._progress_bar()
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
                    lr = self._set_lr()
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
                    # Once the step budget is fixed, checkpoint at once: a resume from here on reads it back.
                    self._periodic(save_now=self.budget.observe(self.step, self.elapsed))
                    self.elapsed = elapsed0 + time.monotonic() - start
                if win_steps:
                    self._log(window, counts, win_imgs, win_time, self._set_lr(), bar)
                if stopped != "interrupt":
                    self.fit_to_data()
                self.save()
                # The checkpoint is safe: a signal from here on stops the end-of-run grid at once.
                interrupted.immediate = True
                try:
                    self.save_samples("final" if stopped != "interrupt" else f"step-{self.step:08d}")
                except KeyboardInterrupt:
                    stopped = "interrupt"
                    print(
                        f"interrupted while drawing the end-of-run sample grid; the checkpoint of step {self.step} "
                        "is saved",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            if bar is not None:
                bar.close()
            if self.logger is not None:
                self.logger.close()
        return TrainResult(self.step, self.elapsed, self.history[-1] if self.history else {}, stopped or "steps")

    def _plan_step(self) -> None:
        """Choose (or, on a resume, take back) how a step runs, and set the model up for it."""
        c = self.config
        if self.plan is None:
            remaining = 60.0 * c.max_time - self.elapsed if c.max_time is not None else None
            self.plan = speed.choose(self, self.model_name, remaining, fastpaths_mode())
        plan = self.plan
        self.amp_dtype = plan.amp_dtype
        speed.apply_layout(self, plan.channels_last)
        if plan.compile and self.compiled is None and self.engine is None:
            speed.compile_step(self)
        elif not plan.compile:
            self.compiled = None  # the probe's compiled form, where another run's plan (taken instead) is eager
        if self.is_main and c.progress:  # (also in run.json and the CLI's summary on stdout)
            print(f"training step: {plan.describe()} ({plan.why})", file=sys.stderr, flush=True)

    def _agree_stop(self, interrupted: bool) -> str | None:
        """Why to stop before the next step, or None; the same answer on every process."""
        if self.world > 1:
            # Elapsed times and signals differ between processes: the step budget is rank 0's (the others
            # contribute -1 to the maximum), and a signal or the hard time limit on any process stops all.
            total = self.budget.total if self.is_main and self.budget.total is not None else -1
            hard = self.max_time_overrun()
            agreed_total, time_up, hit = distributed.agree([float(total), float(hard), float(interrupted)], self.device)
            self.budget.total = int(agreed_total) if agreed_total >= 0 else None
            stopped = self.done(self.elapsed) or ("time" if time_up else None)
            interrupted = bool(hit)
        else:
            stopped = self.done(self.elapsed)
        if stopped == "time" and self.max_time_overrun():
            print(
                f"warning: stopped at {HARD_LIMIT:g}x --max-time after {self.step} of the {self.budget.total} steps "
                "its warm-up measured: the machine slowed down; the schedule was cut short",
                file=sys.stderr,
            )
        if stopped is None and interrupted:
            return "interrupt"
        return stopped

    def max_time_overrun(self) -> bool:
        c = self.config
        return c.max_time is not None and self.elapsed >= HARD_LIMIT * 60.0 * c.max_time

    def _periodic(self, save_now: bool = False) -> None:
        c = self.config
        if c.sample_every and self.step % c.sample_every == 0:
            self.save_samples(f"step-{self.step:08d}")
            self.watch_classes()
        due_time = c.ckpt_minutes and time.monotonic() - self._last_ckpt_time > 60.0 * c.ckpt_minutes
        if (c.ckpt_every and self.step % c.ckpt_every == 0) or due_time or save_now:
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
        self.immediate = False  # set once the final checkpoint is written: then the first signal interrupts
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.hit or self.immediate:
            self.hit = True
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
