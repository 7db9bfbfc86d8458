"""The Trainer's periodic work: checkpoints of the whole training state, sample grids, the class monitor,
and the fit to the data a model makes once training ends. Mixed into ``Trainer``, whose attributes
(model, optimizers, ema, budget, run_dir, ...) these methods use."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genmodels.checkpoints import (
    flatten_optimizer,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from genmodels.errors import CheckpointError
from genmodels.models.base import FitsToData, Translates, default_labels
from genmodels.seeding import derive_seed
from genmodels.training.config import TrainConfig
from genmodels.training.ema import EMA
from genmodels.training.schedule import StepBudget
from genmodels.training.speed import StepPlan

SLOW_ROW_SECONDS = 10.0  # rows are reported once drawing has taken this long

# samples (n, C, H, W) in [0, 1] -> {"class_coverage", "class_kl"}: watches for mode collapse
Monitor = Callable[[torch.Tensor], dict[str, float]]


class Checkpointing:
    """Saving and restoring everything a bit-identical resume needs."""

    config: TrainConfig
    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    ema: EMA | None
    scaler: Any
    budget: StepBudget
    run_dir: Path | None
    is_main: bool
    step: int
    batches: int
    elapsed: float
    world: int
    history: list[dict[str, Any]]
    saved_step: int | None
    plan: StepPlan | None
    _last_ckpt_time: float

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        plain: dict[str, Any] = {
            "batches": self.batches,
            "elapsed": self.elapsed,
            "ema_updates": self.ema.updates if self.ema else 0,
            "optimizers": {},
            "world": self.world,
            "history_tail": self.history[-1] if self.history else {},
            "budget": self.budget.state(),
        }
        if self.plan is not None:  # a resume runs its steps the same way (compiled kernels included)
            plain["step_plan"] = self.plan.as_dict()
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
        self.budget.restore(meta.get("budget"))
        self.plan = StepPlan.from_dict(meta.get("step_plan"))
        # The batch counter is global, so a run saved at one world size continues at another.
        self.batches = int(meta["batches"])
        self.elapsed = float(meta["elapsed"])
        return True


class Sampling:
    """Sample grids during training, the class monitor, and the model's fit to the data at the end."""

    config: TrainConfig
    model: nn.Module
    ema: EMA | None
    device: torch.device
    run_dir: Path | None
    is_main: bool
    step: int
    elapsed: float
    logger: Any
    monitor: Monitor | None
    best_coverage: float
    images: torch.Tensor
    labels: torch.Tensor | None

    @torch.no_grad()
    def sample_images(
        self,
        n: int,
        seed: int | None = None,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n samples from the model (EMA weights when on); (n, C, H, W) in [0, 1].

        Randomness comes from ``generator``, or a fresh one seeded with ``seed`` (default: the run's seed);
        a conditional model gets ``labels`` (default: every class in turn).
        """
        g = generator or torch.Generator(device=self.device).manual_seed(self.config.seed if seed is None else seed)
        if labels is None:
            labels = default_labels(self.model, n, self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ema.swapped_in(self.model) if self.ema else contextlib.nullcontext():
                return self.model.sample(n, generator=g, labels=labels).float()
        finally:
            self.model.train(was_training)

    def save_samples(self, tag: str) -> None:
        """A grid x grid sample grid in ``samples/{tag}.png``, drawn one row at a time.

        Drawing is bounded in time: once ``train.grid_seconds`` (or 5% of the training time so far, if more)
        have passed, the rows drawn so far are saved and a note says so; slow samplers (an
        autoregressive model on large images) so cost seconds, not minutes. A row that takes long
        is reported as it finishes. A signal while drawing raises KeyboardInterrupt (see ``fit``).
        """
        if self.run_dir is None or not self.is_main or self.config.grid == 0:
            return
        if isinstance(self.model, Translates):
            self.save_translations(tag)
            return
        from genmodels.viz import save_grid

        k = self.config.grid
        g = torch.Generator(device=self.device).manual_seed(self.config.seed)
        labels = default_labels(self.model, k * k, self.device)
        limit = max(self.config.grid_seconds, 0.05 * self.elapsed)
        rows: list[torch.Tensor] = []
        t0 = time.monotonic()
        for r in range(k):
            lab = labels[r * k : (r + 1) * k] if labels is not None else None
            rows.append(self.sample_images(k, generator=g, labels=lab))
            spent = time.monotonic() - t0
            if spent > SLOW_ROW_SECONDS:
                print(f"sample grid {tag}: row {r + 1}/{k} drawn ({spent:.0f} s)", file=sys.stderr, flush=True)
            if spent > limit and r + 1 < k:
                print(
                    f"note: sample grid {tag} has {r + 1} of {k} rows: sampling this model is slow ({spent:.0f} s so "
                    f"far); draw more with genmodels sample {self.run_dir} -n {k * k} -o grid.png",
                    file=sys.stderr,
                    flush=True,
                )
                break
        grid = save_grid(torch.cat(rows), self.run_dir / "samples" / f"{tag}.png", nrow=k)
        if self.logger is not None:
            self.logger.image("samples", grid, self.step)

    def save_translations(self, tag: str) -> None:
        """A translator's sheet in ``samples/{tag}.png``: the first 2 x ``grid`` training examples, each
        input above its translation and its target (both directions for CycleGAN)."""
        from genmodels.viz.translation import translation_sheet

        assert self.run_dir is not None
        pairs = self.images[: 2 * self.config.grid].float().div(255.0)
        with self.ema.swapped_in(self.model) if self.ema else contextlib.nullcontext():
            grid = translation_sheet(self.model, pairs, self.run_dir / "samples" / f"{tag}.png", self.model.directions)
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
        if isinstance(self.model, Translates):  # a translator has no samples to classify
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

    def fit_to_data(self) -> None:
        """Let a model that fits something to the data after training do so (a ``FitsToData`` model: a
        VAE's mixture prior over its aggregate posterior) before the
        final checkpoint. Its time counts as training time. With EMA the fit is made once, for the EMA
        weights (what sampling and evaluation use), and what it changed is copied to the raw weights,
        whose encoder differs from the EMA's only by the last steps' drift."""
        if not isinstance(self.model, FitsToData):
            return
        fit = self.model.fit_to_data
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
