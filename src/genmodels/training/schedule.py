"""The learning-rate schedule and the step budget it runs over.

A schedule needs a horizon: the number of steps the run will take. With ``--steps N`` that is N. With
``--max-time M`` it is fixed once, deterministically, from a short warm-up: the first steps are timed
(after ``SKIP`` untimed ones, which carry one-off costs), and at the end of the warm-up the budget is

    budget = step + floor((60 M - elapsed) * (1 - MARGIN) / seconds_per_step)

(capped by ``--steps`` when both are given). From then on the run's progress is ``step / budget`` and it
stops at ``budget`` steps, whatever the machine's load does afterwards. The budget is stored in every
checkpoint (the trainer checkpoints right after the warm-up), so a killed run resumes bit-identically.
During the warm-up the decay sits at progress 0 (the warm-up ramp of ``warmup_steps`` still applies:
it depends on the step only).

A run whose budget turns out far too large (the machine slowed down a lot after the warm-up) is still
stopped at ``HARD_LIMIT`` times its time limit, with a warning: the schedule is then cut short, not changed.

Extending a run (``train --resume RUN --steps M`` or ``--max-time M`` with a new value) sets a new
horizon: progress becomes ``step / M`` (or a new time budget is measured from a fresh warm-up), so the
learning rate continues from its value at that point of the new horizon. For a finished cosine run
extended from N to M steps the rate rises from ``min_lr_ratio`` to its value at ``N / M`` and decays
again to ``min_lr_ratio`` at M: a warm restart, as in SGDR (Loshchilov and Hutter 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from genmodels.training.config import TrainConfig

SKIP = 2  # untimed first steps (allocation, kernel selection, lazy initialisation)
# The timed warm-up lasts min(WARMUP_SECONDS, WARMUP_SHARE x the limit): 15 s of a 5-minute run, 20 s of
# longer ones. Steps are timed, not counted: a step count cap (200 steps before issue 15) ended the warm-up
# of a fast model after 1 s, whose speed was then off by a quarter on a noisy machine (a 5-minute
# broken-vae run took 6.4 minutes).
WARMUP_SECONDS = 20.0
WARMUP_SHARE = 0.05
MARGIN = 0.03  # of the remaining time, for periodic work (grids, checkpoints) outside the timed steps
HARD_LIMIT = 2.0  # stop anyway at this many times --max-time


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


@dataclass
class StepBudget:
    """The number of steps a run takes: given (``--steps``) or measured once from a timed warm-up.

    Args:
        steps: ``train.steps`` (None: no step limit).
        max_time: ``train.max_time`` in minutes (None: no time limit).
        total: the fixed budget, or None while a time-limited run is still in its warm-up.
    """

    steps: int | None
    max_time: float | None
    total: int | None = None
    _t0: float | None = None  # elapsed seconds at the first timed step
    _n0: int = 0  # step at the first timed step

    def __post_init__(self) -> None:
        if self.max_time is None:
            self.total = self.steps

    @classmethod
    def from_config(cls, config: TrainConfig) -> StepBudget:
        return cls(config.steps, config.max_time)

    @property
    def limits(self) -> dict[str, Any]:
        return {"steps": self.steps, "max_time": self.max_time}

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores: the fixed budget and the limits it was fixed for."""
        return {"total": self.total, **self.limits}

    def restore(self, saved: dict[str, Any] | None) -> None:
        """Take a checkpoint's budget when it was fixed for the same limits; otherwise (the limits were
        changed on resume, or an older checkpoint) a time budget is measured again."""
        if self.max_time is None or not saved or saved.get("total") is None:
            return
        if saved.get("steps") == self.steps and saved.get("max_time") == self.max_time:
            self.total = int(saved["total"])

    def progress(self, step: int) -> float:
        """Share of the run done: step / budget; 0 during a time-limited run's warm-up."""
        return step / self.total if self.total else 0.0

    def observe(self, step: int, elapsed: float) -> bool:
        """Record that ``step`` steps are done after ``elapsed`` seconds (across resumes); True when this
        call fixed the budget (the trainer then checkpoints, so a resume reads the same budget)."""
        if self.total is not None or self.max_time is None:
            return False
        limit = 60.0 * self.max_time
        if self._t0 is None:
            if step >= SKIP or elapsed >= limit:
                self._t0, self._n0 = elapsed, step
            if elapsed < limit:
                return False
        timed_steps, timed = step - self._n0, elapsed - self._t0
        long_enough = timed >= min(WARMUP_SECONDS, WARMUP_SHARE * limit) and timed_steps >= 3
        if not (long_enough or elapsed >= limit):
            return False
        remaining = max(0.0, limit - elapsed) * (1.0 - MARGIN)
        per_step = timed / timed_steps if timed_steps else math.inf
        extra = int(remaining / per_step) if per_step > 0 and math.isfinite(per_step) else 0
        total = step + extra
        self.total = min(total, self.steps) if self.steps is not None else total
        return True

    def done(self, step: int, elapsed: float) -> str | None:
        """Why to stop before the next step: "steps" (the budget is spent, or ``--steps`` reached during
        the warm-up), "time" (past ``HARD_LIMIT`` x ``--max-time``), or None."""
        if self.total is not None and step >= self.total:
            return "time" if self.max_time is not None and (self.steps is None or self.total < self.steps) else "steps"
        if self.steps is not None and step >= self.steps:
            return "steps"
        if self.max_time is not None and elapsed >= HARD_LIMIT * 60.0 * self.max_time:
            return "time"
        return None
