"""The model registry: every model name, its family, and how to build it.

Adding a model costs one file (or a config of an existing family), one line here, and one tiny
test config (``tests/test_contract.py``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from genmodels.config import from_dict
from genmodels.errors import unknown
from genmodels.models import autoencoder, vae
from genmodels.models.base import Batch, LossOutput, ModelSpec

MODELS: dict[str, ModelSpec] = {
    "mlp-ae": ModelSpec(
        "autoencoder",
        autoencoder.AEConfig,
        autoencoder.build,
        "the classic MLP autoencoder 784-128-64-32-16-8-4-2 and its mirror",
        {"arch": "mlp"},
    ),
    "conv-ae": ModelSpec(
        "autoencoder",
        autoencoder.AEConfig,
        autoencoder.build,
        "conv autoencoder (residual stages, strided convs)",
        {"arch": "conv", "latent_dim": 16, "act": "silu"},
    ),
    "mlp-vae": ModelSpec(
        "vae",
        vae.VAEConfig,
        vae.build,
        "MLP VAE (Kingma & Welling 2014), Gaussian posterior and prior",
        {"arch": "mlp"},
    ),
    "conv-vae": ModelSpec(
        "vae",
        vae.VAEConfig,
        vae.build,
        "conv VAE with residual stages; beta-VAE via model.beta",
        {"arch": "conv"},
    ),
    "cvae": ModelSpec(
        "vae",
        vae.VAEConfig,
        vae.build,
        "class-conditional conv VAE (Sohn et al. 2015)",
        {"arch": "conv", "conditional": True},
    ),
}

# A family's own name picks its recommended model; the tuned settings live in genmodels/configs/<family>.yaml.
FAMILIES: dict[str, str] = {"autoencoder": "conv-ae", "vae": "conv-vae"}


def model_spec(name: str) -> ModelSpec:
    """The registry entry for a model name (not a family name)."""
    if name not in MODELS:
        raise unknown("model", name, [*MODELS, *FAMILIES])
    return MODELS[name]


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config dataclass of model ``name``: its registry defaults updated with ``values``."""
    spec = model_spec(name)
    return from_dict(spec.config_cls, {**spec.config_defaults, **(values or {})}, section="model")


def build_from_config(name: str, config: Any) -> nn.Module:
    """Build model ``name`` from a finished config dataclass."""
    return model_spec(name).build(config)


__all__ = [
    "FAMILIES",
    "MODELS",
    "Batch",
    "LossOutput",
    "ModelSpec",
    "build_from_config",
    "make_config",
    "model_spec",
]
