"""Evaluation: likelihoods (and, as they land, sample-quality metrics) written as eval.json / eval.md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.eval.likelihood import likelihood_report


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    n: int = 10000,
    k: int = 1000,
    seed: int = 0,
    device: str = "auto",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its dataset's test split and write ``eval.json`` and ``eval.md`` into it.

    Args:
        n: test images to use (the first n of the split).
        k: importance samples per image for the IWAE bound.
    """
    from genmodels.errors import ConfigError
    from genmodels.training import load_run

    if n < 1 or k < 1:
        raise ConfigError(f"-n and --k must be >= 1, got n={n}, k={k}")
    run = load_run(run_dir, device=device)
    ds = run.load_data("test")
    x = torch.from_numpy(ds.images[:n]).float().div_(255.0)
    y = torch.from_numpy(ds.labels[:n]) if ds.labels is not None else None
    report: dict[str, Any] = {
        "run": str(run.path),
        "model_name": run.model_name,
        "family": run.family,
        "step": run.step,
        "weights": run.weights,
        "dataset": ds.name,
        "split": ds.split,
        "n": len(x),
        "wall_time_s": run.meta.get("wall_time_s"),
        "sampling_options": options or {},
    }
    lines = [f"{run.model_name} on {ds.name} {ds.split} ({len(x)} images), step {run.step}"]
    model = run.model
    if callable(getattr(model, "nll", None)):
        if getattr(model, "has_likelihood", True):
            lik = likelihood_report(model, x, y, seed=seed, k=k)
            report["likelihood"] = lik
            opts = ", ".join(f"{key}={v}" for key, v in lik["options"].items())
            for name in lik["nats"]:
                lines.append(
                    f"  test NLL ({name}{', ' + opts if opts else ''}) {lik['nats'][name]:.2f} nats "
                    f"({lik['bpd'][name]:.4f} bits/dim) on {lik['data']} images"
                )
        else:
            lines.append(
                "  no likelihood: a Bernoulli decoder on grey levels is not a distribution of the data "
                "(train with model.binarize=dynamic or model.likelihood=logistic for one)"
            )
    if callable(getattr(model, "reconstruct", None)):
        with torch.no_grad():
            rec = torch.cat(
                [
                    model.reconstruct(
                        x[i : i + 500].to(run.device),
                        **(
                            {"y": y[i : i + 500].to(run.device)}
                            if getattr(model, "conditional", False) and y is not None
                            else {}
                        ),
                    )
                    .float()
                    .cpu()
                    for i in range(0, len(x), 500)
                ]
            )
        mse = float((rec - x).square().mean())
        report["reconstruction_mse"] = mse
        lines.append(f"  reconstruction MSE {mse:.5f} (pixels in [0, 1])")
    t0 = time.perf_counter()
    run.sample(min(1000, max(100, n)), seed=seed, **(options or {}))
    secs = time.perf_counter() - t0
    report["seconds_per_1000_samples"] = round(secs * 1000 / min(1000, max(100, n)), 3)
    lines.append(f"  sampling: {report['seconds_per_1000_samples']:.2f} s per 1,000 samples")
    report["summary_lines"] = lines
    _write(run.path, report)
    return report


def _write(run_dir: Path, report: dict[str, Any]) -> None:
    def plain(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        return v

    tmp = run_dir / ".eval.json.tmp"
    tmp.write_text(json.dumps({k: plain(v) for k, v in report.items()}, indent=1, default=plain))
    os.replace(tmp, run_dir / "eval.json")
    md = [
        "# Evaluation",
        "",
        *[f"    {line}" if i else f"**{line}**" for i, line in enumerate(report["summary_lines"])],
    ]
    (run_dir / "eval.md").write_text("\n".join(md) + "\n")


__all__ = ["evaluate_run", "likelihood_report"]
