"""The model registry: every model name, its family, and how to build it.

Adding a model costs one file (or a config of an existing family), one line here, and one tiny
test config (``tests/test_contract.py``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from genmodels.config import from_dict
from genmodels.errors import ConfigError, unknown
from genmodels.models import autoencoder, diffusion, gan, pixelcnn, translation, vae, vqvae
from genmodels.models.base import Batch, LossOutput, ModelSpec

# Adam(2e-4, beta1 0.5): the DCGAN paper's setting (Radford et al. 2016, Sec. 4), kept by most GANs since.
GAN_TRAIN = {"lr": 2e-4, "betas": (0.5, 0.999)}
KERAS_ADAM = {"lr": 1e-3, "betas": (0.9, 0.999)}  # Keras' Adam() defaults
# pix2pix and CycleGAN train with Adam(2e-4, 0.5) (Isola et al. Sec. 3.3, Zhu et al. Sec. 4); no class monitor
# (a translator has no samples to classify).
TRANSLATOR_TRAIN = {"lr": 2e-4, "betas": (0.5, 0.999), "monitor_classes": 0}
TUTORIAL_VAE = {"arch": "mlp", "hidden": (128,), "latent_dim": 2, "act": "relu", "likelihood": "bernoulli"}

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
    "vq-vae": ModelSpec(
        "autoencoder",
        vqvae.VQVAEConfig,
        vqvae.build,
        "VQ-VAE (van den Oord et al. 2017): a grid of discrete codes, EMA codebook with dead-code restarts",
    ),
    "mlp-vae": ModelSpec(
        "vae",
        vae.VAEConfig,
        vae.build,
        "MLP VAE (Kingma & Welling 2014), Gaussian posterior and prior",
        {"arch": "mlp"},
    ),
    "tutorial-vae": ModelSpec(
        "vae",
        vae.VAEConfig,
        vae.build,
        "tutorial: the one-hidden-layer VAE (784-128-2, 2-128-784 sigmoid), Adam 1e-3",
        TUTORIAL_VAE,
        KERAS_ADAM,
    ),
    "broken-vae": ModelSpec(
        "vae",
        vae.VAEConfig,
        vae.build,
        "tutorial: the tutorial VAE with the much-copied broken objective (one head as mean and log-variance)",
        {
            "arch": "mlp",
            "hidden": (128,),
            "latent_dim": 2,
            "act": "relu",
            "likelihood": "bernoulli",
            "objective": "broken",
        },
        KERAS_ADAM,
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
    "ddpm": ModelSpec(
        "diffusion",
        diffusion.DiffusionConfig,
        diffusion.build,
        "DDPM (Ho et al. 2020): U-Net denoiser, DDPM / DDIM / DPM-Solver++ samplers, a likelihood bound",
    ),
    "cddpm": ModelSpec(
        "diffusion",
        diffusion.DiffusionConfig,
        diffusion.build,
        "class-conditional DDPM with classifier-free guidance (Ho and Salimans 2022)",
        {"conditional": True},
    ),
    "masked-pixelcnn": ModelSpec(
        "pixelcnn",
        pixelcnn.PixelCNNConfig,
        pixelcnn.build,
        "PixelCNN (van den Oord et al. 2016a): masked convolutions (A, then B), exact likelihood",
        {"arch": "masked"},
    ),
    "gated-pixelcnn": ModelSpec(
        "pixelcnn",
        pixelcnn.PixelCNNConfig,
        pixelcnn.build,
        "Gated PixelCNN (van den Oord et al. 2016b): vertical + horizontal stacks, no blind spot",
        {"arch": "gated"},
    ),
    "conditional-pixelcnn": ModelSpec(
        "pixelcnn",
        pixelcnn.PixelCNNConfig,
        pixelcnn.build,
        "class-conditional Gated PixelCNN (van den Oord et al. 2016b, Eq. 4)",
        {"arch": "gated", "conditional": True},
    ),
    "pixelsnail": ModelSpec(
        "pixelcnn",
        pixelcnn.PixelCNNConfig,
        pixelcnn.build,
        "PixelSNAIL (Chen et al. 2018): causal convolutions and causal self-attention, every earlier pixel seen",
        {"arch": "snail", "channels": 64, "layers": 2, "res_blocks": 2, "first_kernel": 5},
    ),
    "conditional-pixelsnail": ModelSpec(
        "pixelcnn",
        pixelcnn.PixelCNNConfig,
        pixelcnn.build,
        "class-conditional PixelSNAIL: a per-class bias in every gate",
        {"arch": "snail", "channels": 64, "layers": 2, "res_blocks": 2, "first_kernel": 5, "conditional": True},
    ),
    "gan-mlp": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "the classic Keras-tutorial MLP GAN (G 100-256-512-1024-784, D 784-512-256-1), reproduced exactly",
        {"arch": "mlp", "latent_dim": 100, "init": "keras", "bn_momentum": 0.2, "bn_eps": 1e-3, "keras_compat": True},
        GAN_TRAIN,
    ),
    "keras-gan-1h": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "tutorial: the Keras GAN with one hidden layer each (G 100-128-784 ReLU/sigmoid, D 784-128-1), Adam 1e-3",
        {
            "arch": "mlp",
            "latent_dim": 100,
            "g_hidden": (128,),
            "d_hidden": (128,),
            "act": "relu",
            "output": "sigmoid",
            "g_norm": "none",
            "init": "keras",
            "keras_compat": True,
        },
        KERAS_ADAM,
    ),
    "tf-gan": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "tutorial: the TensorFlow MLP GAN (G 100-128-256-512-784 ReLU/tanh, D 784-512-256-128-1 logits), Adam 1e-4",
        {
            "arch": "mlp",
            "latent_dim": 100,
            "g_hidden": (128, 256, 512),
            "d_hidden": (512, 256, 128),
            "act": "relu",
            "output": "tanh",
            "g_norm": "none",
            "init": "keras",
        },
        {"lr": 1e-4, "betas": (0.9, 0.999)},
    ),
    "dcgan": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "DCGAN (Radford et al. 2016): conv G and D with batch norm, non-saturating loss",
        {"arch": "dcgan", "loss": "bce", "d_norm": "batch"},
        GAN_TRAIN,
    ),
    "wgan-gp": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "WGAN-GP (Gulrajani et al. 2017): DCGAN nets, layer-norm critic, gradient penalty, 5 critic steps",
        {"arch": "dcgan", "loss": "wgan-gp", "d_norm": "layer", "n_critic": 5, "gp_lambda": 10.0},
        {"lr": 1e-4, "betas": (0.0, 0.9)},
    ),
    "sngan": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "SN-GAN (Miyato et al. 2018): hinge loss, spectrally normalised DCGAN discriminator",
        {"arch": "dcgan", "loss": "hinge", "spectral_norm": True, "d_norm": "none"},
        GAN_TRAIN,
    ),
    "cgan": ModelSpec(
        "gan",
        gan.GANConfig,
        gan.build,
        "class-conditional SN-GAN: one-hot labels into G, projection discriminator (Miyato & Koyama 2018)",
        {"arch": "dcgan", "loss": "hinge", "spectral_norm": True, "d_norm": "none", "conditional": True},
        GAN_TRAIN,
    ),
    "pix2pix": ModelSpec(
        "translation",
        translation.TranslatorConfig,
        translation.build,
        "pix2pix (Isola et al. 2017): U-Net G, PatchGAN D, L1 + adversarial; paired translation data",
        {"method": "pix2pix"},
        TRANSLATOR_TRAIN,
    ),
    "cyclegan": ModelSpec(
        "translation",
        translation.TranslatorConfig,
        translation.build,
        "CycleGAN (Zhu et al. 2017): two generators, two PatchGAN Ds, cycle + identity losses; unpaired data",
        {"method": "cyclegan"},
        TRANSLATOR_TRAIN,
    ),
    "l1-unet": ModelSpec(
        "translation",
        translation.TranslatorConfig,
        translation.build,
        "the translators' baseline: pix2pix's U-Net trained on the L1 loss alone, no adversary",
        {"method": "l1"},
        {**TRANSLATOR_TRAIN, "betas": (0.9, 0.999)},
    ),
}

# A family's own name picks its recommended model: the one source of that pick, printed by ``genmodels models``
# and trained by ``genmodels train FAMILY``; the tuned settings live in genmodels/configs/<family>.yaml.
FAMILIES: dict[str, str] = {
    "autoencoder": "conv-ae",
    "vae": "conv-vae",
    "diffusion": "ddpm",
    "pixelcnn": "masked-pixelcnn",
    "gan": "dcgan",
    "translation": "pix2pix",
}


def model_spec(name: str) -> ModelSpec:
    """The registry entry for a model name (not a family name)."""
    if name not in MODELS:
        raise unknown("model", name, [*MODELS, *FAMILIES])
    return MODELS[name]


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """The config dataclass of model ``name``: its registry defaults updated with ``values``."""
    spec = model_spec(name)
    return from_dict(spec.config_cls, {**spec.config_defaults, **(values or {})}, section="model")


MAX_WIDTH = 4096  # channels / hidden units / latent size of one layer
MAX_PARAMETERS = 500_000_000  # 2 GB of fp32 weights, before optimiser state: more is a typo on these machines
WIDTH_FIELDS = (
    "channels",
    "hidden",
    "g_hidden",
    "d_hidden",
    "g_channels",
    "d_channels",
    "head_channels",
    "latent_dim",
    "width",
    "d_width",
)


def check_size(name: str, config: Any) -> None:
    """Refuse a model config too large to build here, with one line, before any memory is allocated.

    Every layer width is at most ``MAX_WIDTH``; where the model can be built on torch's meta device (no
    memory), its parameter count is at most ``MAX_PARAMETERS``.
    """
    import torch

    for key in WIDTH_FIELDS:
        value = getattr(config, key, None)
        widths = value if isinstance(value, tuple | list) else [value] if isinstance(value, int) else []
        if any(int(w) > MAX_WIDTH for w in widths):
            raise ConfigError(
                f"model.{key}={list(widths) if len(widths) > 1 else widths[0]} is too large; "
                f"each width must be at most {MAX_WIDTH}"
            )
    try:
        with torch.device("meta"):
            model = model_spec(name).build(config)
    except (RuntimeError, NotImplementedError):  # a model that computes values while it is built: widths only
        return
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise ConfigError(
            f"{name} with this config has {n:,} parameters, more than {MAX_PARAMETERS:,}; make it smaller"
        )


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
    "check_size",
    "make_config",
    "model_spec",
]
