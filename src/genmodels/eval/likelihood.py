"""Test-set likelihood of models that define one, in nats and bits per dimension.

The protocol: a model with a likelihood (``genmodels.models.base.HasLikelihood``) implements
``nll(x, y=None, *, generator=None, **options) -> {name: (B,) tensor}``, each entry a per-image
negative log-likelihood (exact, or an upper bound such as a negative ELBO) in nats, and says over
what data it is defined with ``likelihood_data`` ("8-bit" or "binarized"). Binarising models
binarise each test image once with the seeded generator, so every entry refers to the same data.

The images are scored in order in batches; with a time budget the estimate stops after the batch
that used it up, so it covers the first ``n`` images, and the report says which ``n``.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from genmodels.errors import ConfigError
from genmodels.models.base import HasLikelihood, is_conditional

BUDGET_BATCH = 8  # images per batch under a time budget: a diffusion VLB batch of 8 is ~400 network passes


@torch.no_grad()
def likelihood_report(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    batch: int = 0,
    seed: int = 0,
    budget_s: float | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Mean per-image NLL of every estimate ``model.nll`` returns, over images x (N, C, H, W) in [0, 1].

    Args:
        options: passed to ``model.nll`` when it takes them (e.g. ``k`` importance samples).
        budget_s: stop after the batch during which this many seconds passed (at least one batch is
            scored); None scores all N images.
        progress: called with the number of images scored after each batch.

    Returns:
        ``{"nats": {name: mean}, "bpd": {name: mean}, "stderr_nats": {name: s.e. of the mean},
        "data": likelihood_data, "n" (images scored), "n_requested" (N), "dims", "seconds", "options"}``.
    """
    if not isinstance(model, HasLikelihood):
        raise ConfigError(f"{type(model).__name__} defines no likelihood (no nll method)")
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    params = inspect.signature(model.nll).parameters
    options = {k: v for k, v in options.items() if k in params}
    dims = int(math.prod(x.shape[1:]))
    k = int(options.get("k", 1))
    if not batch:
        batch = max(1, min(len(x), 20000 // max(k, 1) + 1, 256))
        if budget_s is not None:
            batch = min(batch, BUDGET_BATCH)
    use_y = y is not None and is_conditional(model)
    parts: dict[str, list[torch.Tensor]] = {}
    t0 = time.perf_counter()
    done = 0
    while done < len(x):
        xb = x[done : done + batch].to(dev)
        yb = y[done : done + batch].to(dev) if use_y else None
        for name, v in model.nll(xb, yb, generator=g, **options).items():
            parts.setdefault(name, []).append(v.double().cpu())
        done += len(xb)
        if progress is not None:
            progress(done)
        if budget_s is not None and time.perf_counter() - t0 >= budget_s:
            break
    vals = {name: torch.cat(v) for name, v in parts.items()}
    to_bpd = 1.0 / (dims * math.log(2.0))
    return {
        "data": model.likelihood_data,
        "n": done,
        "n_requested": len(x),
        "dims": dims,
        "options": options,
        "nats": {name: float(v.mean()) for name, v in vals.items()},
        "bpd": {name: float(v.mean()) * to_bpd for name, v in vals.items()},
        "stderr_nats": {name: float(v.std() / math.sqrt(done)) if done > 1 else 0.0 for name, v in vals.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
