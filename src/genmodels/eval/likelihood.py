"""Test-set likelihood of models that define one: ELBO and importance-weighted bounds in nats and
bits per dimension."""

from __future__ import annotations

import math
import time
from typing import Any

import torch


@torch.no_grad()
def likelihood_report(
    model: Any, x: torch.Tensor, y: torch.Tensor | None, *, k: int = 1000, batch: int = 0, seed: int = 0
) -> dict[str, Any]:
    """Mean negative ELBO and negative IWAE_k bound over images x (N, C, H, W) in [0, 1].

    Binarising models binarise each test image once with the seeded generator, so every bound in the
    report refers to the same binary test set.

    Returns:
        dict with nll_elbo_nats, nll_iwae_nats, their bits/dim, the standard error of the IWAE mean,
        k, n and seconds.
    """
    dev = next(model.parameters()).device
    g = torch.Generator(device=dev).manual_seed(seed)
    dims = int(math.prod(x.shape[1:]))
    batch = batch or max(1, min(len(x), 20000 // max(k, 1) + 1, 256))
    iw, el = [], []
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(dev)
        yb = y[i : i + batch].to(dev) if y is not None and getattr(model, "conditional", False) else None
        a, b = model.nll(xb, yb, k=k, generator=g)
        iw.append(a.double().cpu())
        el.append(b.double().cpu())
    iwae, elbo = torch.cat(iw), torch.cat(el)
    to_bpd = 1.0 / (dims * math.log(2.0))
    return {
        "n": len(x),
        "k": k,
        "dims": dims,
        "nll_elbo_nats": float(elbo.mean()),
        "nll_iwae_nats": float(iwae.mean()),
        "nll_iwae_stderr_nats": float(iwae.std() / math.sqrt(len(iwae))) if len(iwae) > 1 else 0.0,
        "bpd_elbo": float(elbo.mean()) * to_bpd,
        "bpd_iwae": float(iwae.mean()) * to_bpd,
        "seconds": round(time.perf_counter() - t0, 2),
    }
