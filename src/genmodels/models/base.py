"""The contracts every model family implements, and the registry entry that describes one model.

The Trainer chooses its step kind by protocol, never by a model name:
- single-objective models implement ``loss(batch) -> LossOutput``;
- adversarial models implement ``discriminator_loss`` / ``generator_loss``, expose
  ``generator_parameters()`` / ``discriminator_parameters()`` and say how many critic steps
  they take per generator step (``n_critic``).

Pixel scaling happens at one boundary: a ``Batch`` carries images as float32 in [0, 1]
(exact multiples of 1/255 for 8-bit data); each model maps to its own range inside and back
to [0, 1] in ``sample`` / ``reconstruct`` / ``decode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class Batch:
    """One training batch.

    Args:
        x: images, float32 (B, C, H, W) in [0, 1].
        y: integer class labels (B,), or None for unlabelled data.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None


@dataclass
class LossOutput:
    """What a loss returns: the scalar to minimise and named scalars to log (already detached)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class SingleObjective(Protocol):
    """A model trained by minimising one loss."""

    def loss(self, batch: Batch) -> LossOutput: ...


@runtime_checkable
class Adversarial(Protocol):
    """A model trained by alternating discriminator (critic) and generator updates."""

    n_critic: int

    def discriminator_loss(self, batch: Batch) -> LossOutput: ...

    def generator_loss(self, batch: Batch) -> LossOutput: ...

    def generator_parameters(self) -> Iterator[nn.Parameter]: ...

    def discriminator_parameters(self) -> Iterator[nn.Parameter]: ...


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: how to build a named model and what it is.

    Args:
        family: the family name ("autoencoder", "vae", ...).
        config_cls: the family's config dataclass.
        build: ``build(config) -> nn.Module``.
        description: one line for ``genmodels models``.
        config_defaults: config fields this name sets (e.g. ``{"arch": "conv"}``).
        train_defaults: TrainConfig fields this model prefers (e.g. GAN Adam betas).
    """

    family: str
    config_cls: type
    build: Callable[[Any], nn.Module]
    description: str
    config_defaults: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] images to [-1, 1] (the range of tanh outputs)."""
    return x * 2.0 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map [-1, 1] model outputs back to [0, 1], clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)
