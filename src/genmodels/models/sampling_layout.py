"""The memory layout a model samples in on this machine: channels_last where its sampling networks run
faster so, measured, never assumed (``Run.sample_batches`` applies it before a draw).

Only the layout is chosen here. Sampling precision is the model's own setting (a diffusion model's
``model.precision``: bf16 autocast where native); torch.compile is not used for sampling: on the 2-core
machines it costs more than it saves on the draws this project makes (README "Speed": the diffusion
U-Net's compile takes about 43 s and saves about 7 s per 1,000 DPM-Solver++ samples; DCGAN's generator
8.5 s for 0.3 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from genmodels.device import MARGIN, cached_decision, fastest, remember_decision
from genmodels.models.base import architecture_key, has_convolutions

SAMPLE_PREFIX = "sample-layout "
SAMPLING_NETWORKS = ("denoiser", "generator", "decoder")  # what a family's sampler runs, batch after batch
SAMPLE_PROBE_BATCH = 500  # the batch Run.sample draws in: the layout is timed there, whatever a job's n


def sampling_networks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in (getattr(model, n, None) for n in SAMPLING_NETWORKS) if isinstance(m, torch.nn.Module)]


def sampling_layout(model: torch.nn.Module, model_name: str, mode: str) -> tuple[bool, str]:
    """Whether this model samples faster with its weights channels_last, and why: its sampling networks'
    forward passes, on the inputs a real draw gives them (captured from a 2-image draw, repeated to
    ``SAMPLE_PROBE_BATCH``, under the draw's autocast), timed interleaved in both layouts; channels_last
    only when faster by more than ``MARGIN``. Cached per machine and model; ``mode`` is GENMODELS_FASTPATHS.
    The layout changes no result beyond float rounding (the kernels sum in another order)."""
    nets = sampling_networks(model)
    if mode == "off":
        return False, "GENMODELS_FASTPATHS=off: contiguous"
    if not nets or not any(has_convolutions(n) for n in nets):
        return False, "no convolutional sampling network"
    device = next(model.parameters()).device
    digest = architecture_key(model, model=model_name, device=device.type, batch=SAMPLE_PROBE_BATCH)
    key = f"{SAMPLE_PREFIX}{model_name} {digest}"
    cached = cached_decision(key)
    if cached is not None:
        return bool(cached["chosen"]), f"{cached['why']} (measured earlier on this machine)"
    if mode == "on":
        return True, "GENMODELS_FASTPATHS=on: channels_last, untimed"
    calls = _captured_calls(model, nets)
    if not calls:
        return False, "the sampler ran none of its networks"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def side(channels_last: bool) -> Callable[[], None]:
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

        def run() -> None:
            with torch.no_grad():
                for net, args, kwargs, dtype in calls:
                    with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                        net(*args, **kwargs)
            sync()

        return run

    try:
        times = fastest({False: lambda: side(False), True: lambda: side(True)})
    finally:
        model.to(memory_format=torch.contiguous_format)
    chosen = times[True] < (1 - MARGIN) * times[False]
    why = (
        f"timed the sampling networks at batch {SAMPLE_PROBE_BATCH}: contiguous {1e3 * times[False]:.1f} ms, "
        f"channels_last {1e3 * times[True]:.1f} ms: " + ("channels_last" if chosen else "contiguous")
    )
    measured = {"contiguous_ms": 1e3 * times[False], "channels_last_ms": 1e3 * times[True]}
    stored = remember_decision(key, {"chosen": chosen, "why": why, "measured": measured}, first_wins=True)
    return bool(stored["chosen"]), stored["why"]  # another process's verdict where it timed this model first


def _captured_calls(model: torch.nn.Module, nets: list[torch.nn.Module]) -> list[tuple[Any, ...]]:
    """Each sampling network's first call in a 2-image draw, as (net, args, kwargs, autocast dtype), its
    batch repeated to ``SAMPLE_PROBE_BATCH``; the random state is left as it was."""
    calls: dict[torch.nn.Module, tuple[Any, ...]] = {}

    def grow(v: Any) -> Any:
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 2:
            return v[torch.arange(SAMPLE_PROBE_BATCH, device=v.device) % 2].contiguous()
        return v

    def hook(net: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if net not in calls:
            dev = next(net.parameters()).device.type
            dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
            calls[net] = (net, tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}, dtype)

    handles = [n.register_forward_pre_hook(hook, with_kwargs=True) for n in nets]
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), torch.no_grad():
            model.sample(2, generator=torch.Generator(device=device).manual_seed(0))  # type: ignore[operator]
    finally:
        for h in handles:
            h.remove()
    return list(calls.values())


__all__ = ["SAMPLE_PREFIX", "sampling_layout", "sampling_networks"]
