"""Adam with less Python per step.

``torch.optim.Adam(fused=True)`` does its arithmetic in one kernel, but around it spends ~100 us of
Python per step on the CPU (grouping tensors by device and dtype, the step hooks' machinery, checks):
a few percent of a small model's whole step, three times per iteration for the classic MLP GAN. Once
every parameter has its state, :class:`LeanAdam` calls the same fused kernel with the same arguments
directly, so the update is bit-identical (tested); anything unusual (a closure, hooks, amsgrad,
maximize, a tensor learning rate, non-CPU or non-fp32 parameters, the first step) takes torch's own path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

_wrapped: dict[Any, Any] = {}


def _torch_step(opt: torch.optim.Adam, closure: Callable[[], Any] | None = None) -> Any:
    """torch's own Adam step with its hooks and profiler label (the wrapper Optimizer puts on a step)."""
    step = torch.optim.Adam.step
    if not getattr(step, "hooked", False):  # no plain Adam made yet in this process: wrap it ourselves
        step = _wrapped.setdefault(step, torch.optim.Optimizer.profile_hook_step(step))
    return step(opt, closure)


class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (construct it with ``fused=True``), with a short path for the common step."""

    def _lean_ok(self) -> bool:
        return not (
            self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or _global_optimizer_pre_hooks
            or _global_optimizer_post_hooks
        )

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is not None or not self._lean_ok():
            return _torch_step(self, closure)
        plans = []
        for group in self.param_groups:
            if (
                not group.get("fused")
                or group["amsgrad"]
                or group["maximize"]
                or group.get("differentiable")
                or group.get("capturable")
                or group.get("decoupled_weight_decay")
                or not all(isinstance(v, float) for v in (group["lr"], *group["betas"]))
            ):
                return _torch_step(self)
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state[p] for p in params]
            if any(
                not s or p.device.type != "cpu" or p.dtype != torch.float32 or p.grad.is_sparse
                for p, s in zip(params, states, strict=True)
            ):
                return _torch_step(self)
            plans.append((group, params, states))
        with torch.no_grad():
            for group, params, states in plans:
                if not params:
                    continue
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                beta1, beta2 = group["betas"]
                torch._fused_adam_(
                    params,
                    [p.grad for p in params],
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [],
                    steps,
                    lr=group["lr"],
                    beta1=beta1,
                    beta2=beta2,
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    amsgrad=False,
                    maximize=False,
                )
        return None


# Optimizer.__init__ wraps a subclass's step in its hook-and-profiler wrapper unless the function says it
# is already "hooked"; LeanAdam's own step takes torch's wrapped path itself whenever any hook is
# registered, so the wrapper would only add its ~40 us to the short path.
LeanAdam.step.hooked = True  # type: ignore[attr-defined]
