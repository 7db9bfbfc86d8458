"""Multi-layer perceptrons."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

from genmodels.errors import unknown
from genmodels.nets.linear import Linear

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "silu": lambda: nn.SiLU(),
    "gelu": lambda: nn.GELU(),
    "tanh": lambda: nn.Tanh(),
    "elu": lambda: nn.ELU(),
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, leaky_relu (slope 0.2), silu, gelu, tanh, elu)."""
    if name not in ACTIVATIONS:
        raise unknown("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def mlp(dims: Sequence[int], act: str = "relu", *, final_act: str | None = None) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with ``act`` between them.

    Args:
        dims: layer widths, input first; at least two entries.
        act: activation after every hidden layer.
        final_act: activation after the last layer, or None for a linear output.
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(Linear(d_in, d_out))
        last = i == len(dims) - 2
        if not last:
            layers.append(activation(act))
        elif final_act is not None:
            layers.append(activation(final_act))
    return nn.Sequential(*layers)
