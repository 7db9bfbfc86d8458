"""Shared test helpers: real images at test-friendly sizes, and tiny model configs."""

from __future__ import annotations

import numpy as np
import torch

# One tiny config per registered model (a test fails when a model has none): small enough to
# train a few steps in well under a second.
TINY: dict[str, dict] = {
    "mlp-ae": {"hidden": [32, 16], "latent_dim": 2},
    "conv-ae": {"channels": [8, 16], "blocks": 0, "latent_dim": 4},
    "vq-vae": {"channels": [8, 16], "res_blocks": 1, "res_channels": 4, "code_dim": 4, "codebook_size": 8},
    "mlp-vae": {"hidden": [32], "latent_dim": 4},
    "tutorial-vae": {"hidden": [32]},
    "broken-vae": {"hidden": [32]},
    "conv-vae": {"channels": [8, 16], "blocks": 0, "latent_dim": 4},
    "cvae": {"channels": [8, 16], "blocks": 0, "latent_dim": 4},
    "ddpm": {"channels": [8, 16], "groups": 4, "timesteps": 50, "sampling_steps": 4, "nll_timesteps": 4},
    "cddpm": {"channels": [8, 16], "groups": 4, "timesteps": 50, "sampling_steps": 4, "nll_timesteps": 4},
    "masked-pixelcnn": {"channels": 6, "layers": 1, "first_kernel": 3, "output": "logistic", "mixtures": 2},
    "gated-pixelcnn": {"channels": 6, "layers": 2, "first_kernel": 3, "output": "logistic", "mixtures": 2},
    "conditional-pixelcnn": {"channels": 6, "layers": 2, "first_kernel": 3, "output": "bernoulli"},
    "pixelsnail": {"channels": 6, "layers": 1, "res_blocks": 1, "first_kernel": 3, "output": "logistic", "mixtures": 2},
    "conditional-pixelsnail": {"channels": 6, "layers": 1, "res_blocks": 1, "first_kernel": 3, "output": "bernoulli"},
    "gan-mlp": {"g_hidden": [16, 32], "d_hidden": [32, 16], "latent_dim": 8},
    "keras-gan-1h": {"g_hidden": [16], "d_hidden": [16], "latent_dim": 8},
    "tf-gan": {"g_hidden": [16, 32], "d_hidden": [32, 16], "latent_dim": 8},
    "dcgan": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8},
    "wgan-gp": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8, "n_critic": 2},
    "sngan": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8},
    "cgan": {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8},
    "pix2pix": {"width": 4, "d_width": 4, "depth": 2},
    "cyclegan": {"width": 4, "d_width": 4, "depth": 2},
    "l1-unet": {"width": 4, "depth": 2},
}
# Translators train on a translation dataset (a source and a target image stacked along the channels).
TRANSLATORS = ("pix2pix", "cyclegan", "l1-unet")
TRANSLATION_DATA = "edges:digits"


def data_of(name: str) -> str:
    """The small dataset a model's tests train on: digits, or their sketches beside them for a translator."""
    return TRANSLATION_DATA if name in TRANSLATORS else "digits"


def stacked(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) images as translation pairs (N, 2C, H, W): each image beside its negative."""
    return torch.cat([images, 255 - images], dim=1)


def digits_images(n: int | None = None, size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Real handwritten digits (scikit-learn's bundled set) as uint8 (N, 1, size, size) and labels."""
    from genmodels.data import load_dataset

    ds = load_dataset("digits", "train", image_size=size if size != 28 else None)
    imgs, labels = ds.images, ds.labels
    if n is not None:
        imgs, labels = imgs[:n], labels[:n]
    return torch.from_numpy(np.ascontiguousarray(imgs)), torch.from_numpy(labels)


def nn_distance(samples: torch.Tensor, data: torch.Tensor) -> float:
    """Mean distance from each sample to its nearest data image (both flattened, in [0, 1])."""
    d = torch.cdist(samples.flatten(1).float(), data.flatten(1).float())
    return float(d.min(1).values.mean())
