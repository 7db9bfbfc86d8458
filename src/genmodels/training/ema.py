"""Exponential moving average of a model's weights (Polyak averaging), used for sampling."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = d * shadow + (1 - d) * weights`` for every float parameter and buffer.

    Integer buffers (BatchNorm's batch counter) are copied. With ``warmup`` the decay at update t
    is ``min(decay, (1 + t) / (10 + t))`` so the average is not dominated by the random
    initialisation early in short CPU runs.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        live = model.state_dict(keep_vars=True)
        self.names = list(live)
        self.shadow = {k: v.detach().clone() for k, v in live.items()}
        self.bind(model)

    def bind(self, model: nn.Module) -> None:
        """Follow ``model``'s tensors (again, after ``model.to(memory_format=...)`` gave them new storage)."""
        live = model.state_dict(keep_vars=True)
        self._live_f = [live[k].detach() for k in self.names if live[k].dtype.is_floating_point]
        self._shadow_f = [self.shadow[k] for k in self.names if live[k].dtype.is_floating_point]
        self._live_i = [live[k].detach() for k in self.names if not live[k].dtype.is_floating_point]
        self._shadow_i = [self.shadow[k] for k in self.names if not live[k].dtype.is_floating_point]

    def current_decay(self) -> float:
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        torch._foreach_lerp_(self._shadow_f, self._live_f, 1.0 - d)
        for s, v in zip(self._shadow_i, self._live_i, strict=True):
            s.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        for k in self.names:
            self.shadow[k].copy_(state[k])
        self.updates = updates

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """Temporarily load the EMA weights into ``model`` (e.g. to sample), restoring after."""
        live = model.state_dict(keep_vars=True)
        backup = {k: v.detach().clone() for k, v in live.items()}
        with torch.no_grad():
            for k in self.names:
                live[k].copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k in self.names:
                    live[k].copy_(backup[k])
