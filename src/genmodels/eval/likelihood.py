"""Test-set likelihood of models that define one, in nats and bits per dimension.

The protocol: a model with a likelihood implements
``nll(x, y=None, *, generator=None, **options) -> {name: (B,) tensor}``, each entry a per-image
negative log-likelihood (exact, or an upper bound such as a negative ELBO) in nats, and says over
what data it is defined with ``likelihood_data`` ("8-bit" or "binarized"). Binarising models
binarise each test image once with the seeded generator, so every entry refers to the same data.
"""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import torch


@torch.no_grad()
def likelihood_report(
    model: Any, x: torch.Tensor, y: torch.Tensor | None, *, batch: int = 0, seed: int = 0, **options: Any
) -> dict[str, Any]:
    """Mean per-image NLL of every estimate ``model.nll`` returns, over images x (N, C, H, W) in [0, 1].

    Args:
        options: passed to ``model.nll`` when it takes them (e.g. ``k`` importance samples).

    Returns:
        ``{"nats": {name: mean}, "bpd": {name: mean}, "stderr_nats": {name: s.e. of the mean},
        "data": likelihood_data, "n", "dims", "seconds", "options"}``.
    """
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    params = inspect.signature(model.nll).parameters
    options = {k: v for k, v in options.items() if k in params}
    dims = int(math.prod(x.shape[1:]))
    k = int(options.get("k", 1))
    batch = batch or max(1, min(len(x), 20000 // max(k, 1) + 1, 256))
    parts: dict[str, list[torch.Tensor]] = {}
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(dev)
        yb = y[i : i + batch].to(dev) if y is not None and getattr(model, "conditional", False) else None
        for name, v in model.nll(xb, yb, generator=g, **options).items():
            parts.setdefault(name, []).append(v.double().cpu())
    vals = {name: torch.cat(v) for name, v in parts.items()}
    to_bpd = 1.0 / (dims * math.log(2.0))
    n = len(x)
    return {
        "data": getattr(model, "likelihood_data", "8-bit"),
        "n": n,
        "dims": dims,
        "options": options,
        "nats": {name: float(v.mean()) for name, v in vals.items()},
        "bpd": {name: float(v.mean()) * to_bpd for name, v in vals.items()},
        "stderr_nats": {name: float(v.std() / math.sqrt(n)) if n > 1 else 0.0 for name, v in vals.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }
