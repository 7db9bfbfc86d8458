"""Adam with less Python per step.

``torch.optim.Adam(fused=True)`` does its arithmetic in one kernel, but around it spends ~100 us of
Python per step on the CPU (grouping tensors by device and dtype, the step hooks' machinery, checks):
a few percent of a small model's whole step, three times per iteration for the classic MLP GAN. Once
every parameter has its state, :class:`LeanAdam` calls the same fused kernel with the same arguments
directly, so the update is bit-identical (tested); anything unusual (a closure, hooks, amsgrad,
maximize, a tensor learning rate, non-CPU or non-fp32 parameters, the first step) takes torch's own path.

The kernel ``torch._fused_adam_`` and the global hook registries are torch internals, so the short path
is a fast path of :mod:`genmodels.device` ("lean_adam"): taken only where both exist, the short path
gives torch's update bit for bit on a small case, and it beats ``torch.optim.Adam(fused=True)`` on this
machine by the margin (the classic MLP GAN's discriminator's parameters); decided at the first step
that could take it (never at import, never for a CUDA run). Otherwise every step is torch's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from genmodels.device import fast_path, race, register_fast_path

try:
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
except ImportError:  # a torch without these registries: hooks cannot be ruled out, the short path is never taken
    _global_optimizer_pre_hooks = _global_optimizer_post_hooks = None

NAME = "lean_adam"
_wrapped: dict[Any, Any] = {}
# The classic MLP GAN's discriminator (784-512-256-1): 0.53M parameters in 6 tensors.
PROBE_SHAPES = ((512, 784), (512,), (256, 512), (256,), (1, 256), (1,))


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
        plans = self._plans() if closure is None and self._lean_ok() else None
        # The machine's decision is asked for last: a CUDA run never pays for timing a CPU path.
        if plans is None or not fast_path(NAME):
            return _torch_step(self, closure)
        self._run(plans)
        return None

    def _lean_step(self) -> bool:
        """The update through the fused kernel directly; False (nothing done) where torch's step must run."""
        plans = self._plans()
        if plans is not None:
            self._run(plans)
        return plans is not None

    def _plans(self) -> list[tuple[dict[str, Any], list[torch.Tensor], list[dict[str, Any]]]] | None:
        """Per group, the parameters with a gradient and their states; None where torch's step must run."""
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
                return None
            params = [p for p in group["params"] if p.grad is not None]
            states = [self.state[p] for p in params]
            if any(
                not s or p.device.type != "cpu" or p.dtype != torch.float32 or p.grad.is_sparse
                for p, s in zip(params, states, strict=True)
            ):
                return None
            plans.append((group, params, states))
        return plans

    @torch.no_grad()
    def _run(self, plans: list[tuple[dict[str, Any], list[torch.Tensor], list[dict[str, Any]]]]) -> None:
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


# Optimizer.__init__ wraps a subclass's step in its hook-and-profiler wrapper unless the function says it
# is already "hooked"; LeanAdam's own step takes torch's wrapped path itself whenever any hook is
# registered, so the wrapper would only add its ~40 us to the short path.
LeanAdam.step.hooked = True  # type: ignore[attr-defined]


def _probe_pair(shapes: tuple[tuple[int, ...], ...], seed: int) -> tuple[LeanAdam, torch.optim.Adam]:
    """A LeanAdam and a torch fused Adam over equal fresh parameters with equal gradients, one step taken."""
    g = torch.Generator().manual_seed(seed)
    values = [torch.randn(s, generator=g) for s in shapes]
    grads = [torch.randn(s, generator=g) for s in shapes]
    kw = {"lr": 2e-4, "betas": (0.5, 0.999), "weight_decay": 1e-3, "fused": True}
    pair = []
    for cls in (LeanAdam, torch.optim.Adam):
        params = [torch.nn.Parameter(v.clone()) for v in values]
        for p, d in zip(params, grads, strict=True):
            p.grad = d.clone()
        opt = cls(params, **kw)
        _torch_step(opt)  # creates the state: the short path only ever runs on existing state
        pair.append(opt)
    return pair[0], pair[1]  # type: ignore[return-value]


def _check() -> str | None:
    if _global_optimizer_pre_hooks is None or _global_optimizer_post_hooks is None:
        return "torch.optim.optimizer has no global hook registries to check"
    if not callable(getattr(torch, "_fused_adam_", None)):
        return "torch._fused_adam_ is missing from this torch build"
    lean, ref = _probe_pair(((7, 5), (7,)), seed=0)
    for _ in range(3):
        if not lean._lean_step():
            return "the short path refused a plain fp32 CPU parameter group"
        ref.step()
    for p, q in zip(lean.param_groups[0]["params"], ref.param_groups[0]["params"], strict=True):
        a, b = lean.state[p], ref.state[q]
        if not (torch.equal(p, q) and all(torch.equal(a[k], b[k]) for k in ("step", "exp_avg", "exp_avg_sq"))):
            return "torch._fused_adam_ called directly does not give torch.optim.Adam's update bit for bit"
    return None


def _measure() -> dict[str, Any]:
    lean, fused = _probe_pair(PROBE_SHAPES, seed=1)
    out = race([(lean._lean_step, fused.step)])
    # For the record (doctor): torch's foreach Adam, which differs from fused in the last bits.
    foreach = torch.optim.Adam(
        [torch.nn.Parameter(torch.zeros(s)) for s in PROBE_SHAPES], lr=2e-4, betas=(0.5, 0.999), foreach=True
    )
    for p in foreach.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    foreach_s = float("inf")
    for _ in range(4):
        t0 = time.perf_counter()
        foreach.step()
        foreach_s = min(foreach_s, time.perf_counter() - t0)
    numel = sum(p.numel() for p in lean.param_groups[0]["params"])
    return {
        **out,
        "foreach_s": foreach_s,
        "workload": f"one Adam step over {numel:,} fp32 parameters in {len(PROBE_SHAPES)} tensors (a classic GAN's D)",
    }


register_fast_path(NAME, check=_check, measure=_measure)
