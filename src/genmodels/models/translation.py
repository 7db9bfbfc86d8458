"""Image-to-image translation: pix2pix (Isola et al. 2017) for paired data, CycleGAN (Zhu et al. 2017) for
unpaired data, and the plain L1 U-Net (pix2pix without its adversary) as their baseline.

A translation dataset (``data.pairs``) stacks each example's source a and target b along the channels; a
batch's ``x`` is (B, 2C, H, W) and these models split it. Images are mapped to [-1, 1] inside (tanh
outputs). The losses, each a batch mean:

- pix2pix (Eq. 4): G* = arg min_G max_D L_cGAN(G, D) + lambda L_L1(G), with the conditional D seeing
  (a, b) or (a, G(a)) stacked; L_cGAN in the non-saturating form of ``gan.py``'s ``bce``:
  L_D = (softplus(-D(a, b)) + softplus(D(a, G(a)))) / 2 (the paper halves D's objective, Sec. 3.3),
  L_G = softplus(-D(a, G(a))) + lambda |G(a) - b|_1, lambda = 100.
- CycleGAN (Eq. 3, with the least-squares GAN of Sec. 4 and the identity loss of Sec. 5.2):
  L_D = ((D_B(b) - 1)^2 + D_B(G(a))^2) / 2 + ((D_A(a) - 1)^2 + D_A(F(b))^2) / 2,
  L_G = (D_B(G(a)) - 1)^2 + (D_A(F(b)) - 1)^2 + lambda (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)
        + lambda_id lambda (|G(b) - b|_1 + |F(a) - a|_1),  lambda = 10, lambda_id = 0.5.
  The paper's buffer of 50 past fakes for D is left out.
- L1 U-Net: |G(a) - b|_1 alone (the regression baseline: blurry where the target is uncertain).

``translate(x, direction)`` maps [0, 1] images of the source side to the target side ("forward": G) or,
for CycleGAN, back ("backward": F). Dropout (pix2pix's noise) is active in training only, so a
translation is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError, unknown
from genmodels.models.base import Batch, LossOutput, from_model_range, to_model_range
from genmodels.nets.translator import PatchDiscriminator, ResNetGenerator, UNetGenerator

METHODS = ("pix2pix", "cyclegan", "l1")
GENERATORS = ("unet", "resnet")
NORMS = ("instance", "batch", "none")


@dataclass
class TranslatorConfig:
    image_shape: tuple[int, int, int] = (2, 28, 28)  # (2C, H, W): source and target stacked, set from the dataset
    num_classes: int = 10  # set from the dataset; unused
    method: str = "pix2pix"  # pix2pix | cyclegan | l1 (the L1 U-Net baseline)
    generator: str = "unet"  # unet (pix2pix) | resnet (CycleGAN paper; H, W divisible by 4)
    width: int = 32  # the generator's first width (the paper: 64)
    depth: int = 5  # U-Net: at most this many 2x down-samplings (fewer where the size allows fewer)
    res_blocks: int = 6  # ResNet generator: residual blocks at 1/4 size (the paper: 6 at 128 px, 9 at 256)
    dropout: float = 0.5  # U-Net decoder dropout on its three innermost levels (training only)
    norm: str = "instance"  # instance | batch | none (generator and discriminator)
    d_width: int = 32  # PatchGAN's first width (the paper: 64)
    d_layers: int = 0  # PatchGAN stride-2 convs: 1 (16-px patches), 2 (34), 3 (70); 0 = 1 below 48 px, else 2
    l1_weight: float = 100.0  # pix2pix's lambda
    cycle_weight: float = 10.0  # CycleGAN's lambda
    identity_weight: float = 0.5  # CycleGAN's identity loss, in units of cycle_weight; 0 = off

    def __post_init__(self) -> None:
        self.image_shape = tuple(self.image_shape)  # type: ignore[assignment]
        for key, value, valid in (
            ("method", self.method, METHODS),
            ("generator", self.generator, GENERATORS),
            ("norm", self.norm, NORMS),
        ):
            if value not in valid:
                raise unknown(f"model.{key}", value, valid)
        c2, h, w = self.image_shape
        if c2 % 2 or c2 < 2:
            raise ConfigError(
                f"a translator's images stack a source and a target image along the channels; got {c2} channels. "
                "Train it on a translation dataset: pair:emoji,twemoji, colorize:NAME, edges:NAME or unpaired:A,B"
            )
        if h != w or h < 4 or h % 2:
            raise ConfigError(f"a translator needs square images of an even size of at least 4 px, got {h}x{w}")
        if self.generator == "resnet" and h % 4:
            raise ConfigError(f"the resnet generator needs a size divisible by 4, got {h}; use model.generator=unet")
        for key in ("width", "depth", "d_width"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        if self.res_blocks < 0 or self.d_layers not in (0, 1, 2, 3):
            raise ConfigError("model.res_blocks must be >= 0 and model.d_layers one of 0 (auto), 1, 2, 3")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for key in ("l1_weight", "cycle_weight", "identity_weight"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"model.{key} must be >= 0, got {getattr(self, key)}")

    @property
    def source_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one side."""
        c2, h, w = self.image_shape
        return (c2 // 2, h, w)

    @property
    def patch_layers(self) -> int:
        return self.d_layers or (1 if self.image_shape[1] < 48 else 2)


def _generator(cfg: TranslatorConfig) -> nn.Module:
    c, size, _ = cfg.source_shape
    if cfg.generator == "resnet":
        return ResNetGenerator(c, c, cfg.width, cfg.res_blocks, cfg.norm)
    return UNetGenerator(c, c, size, cfg.width, cfg.depth, cfg.norm, cfg.dropout)


class Translator(nn.Module):
    """What every translator shares: the split of a batch, ``translate`` and the data it trains on."""

    directions: ClassVar[tuple[str, ...]] = ("forward",)
    needs_pairs: ClassVar[bool] = True  # trains only on paired data (``ImageDataset.pairing == "paired"``)

    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        self.config = config
        self.G = _generator(config)

    def split(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b): the source and target halves of a batch, each (B, C, H, W) in [-1, 1]."""
        c = self.config.source_shape[0]
        x = to_model_range(batch.x)
        return x[:, :c], x[:, c:]

    def generator_for(self, direction: str) -> nn.Module:
        if direction not in self.directions:
            raise ConfigError(
                f"{self.config.method} translates {' and '.join(self.directions)}, not {direction!r}"
                + ("" if len(self.directions) > 1 else " (only cyclegan translates backward)")
            )
        return self.G

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor:
        """Source images (B, C, H, W) in [0, 1] -> the other side's (B, C, H, W) in [0, 1]."""
        g = self.generator_for(direction)
        return from_model_range(g(to_model_range(x)).float())

    def check_data(self, pairing: str, dataset: str) -> None:
        """Refuse data this translator cannot train on, with one line naming what it needs."""
        if not pairing:
            raise ConfigError(
                f"{self.config.method} trains on a translation dataset, not {dataset}: pair:emoji,twemoji, "
                f"colorize:NAME, edges:NAME{'' if self.needs_pairs else ' or unpaired:A,B'}"
            )
        if self.needs_pairs and pairing != "paired":
            raise ConfigError(
                f"{self.config.method} learns from paired images and {dataset} is unpaired; use a paired dataset "
                "(pair:A,B, colorize:NAME, edges:NAME) or train cyclegan"
            )


class L1Translator(Translator):
    """The regression baseline: a U-Net trained on |G(a) - b|_1 alone."""

    def loss(self, batch: Batch) -> LossOutput:
        a, b = self.split(batch)
        l1 = (self.G(a) - b).abs().mean()
        return LossOutput(l1, {"l1": l1.detach()})


class Pix2Pix(Translator):
    """pix2pix: U-Net G, conditional PatchGAN D on (a, b) stacked, non-saturating GAN loss + lambda L1."""

    n_critic = 1
    critic_methods: tuple[str, ...] = ("discriminator_loss",)

    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__(config)
        c = config.source_shape[0]
        self.D = PatchDiscriminator(2 * c, config.d_width, config.patch_layers, config.norm)

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return self.G.parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return self.D.parameters()

    def discriminator_loss(self, batch: Batch) -> LossOutput:
        a, b = self.split(batch)
        with torch.no_grad():
            fake = self.G(a)
        d_real, d_fake = self.D(torch.cat([a, b], 1)), self.D(torch.cat([a, fake], 1))
        loss = 0.5 * (F.softplus(-d_real).mean() + F.softplus(d_fake).mean())
        return LossOutput(loss, {"d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()})

    def generator_loss(self, batch: Batch) -> LossOutput:
        a, b = self.split(batch)
        fake = self.G(a)
        adv = F.softplus(-self.D(torch.cat([a, fake], 1))).mean()
        l1 = (fake - b).abs().mean()
        return LossOutput(adv + self.config.l1_weight * l1, {"g_adv": adv.detach(), "l1": l1.detach()})


class CycleGAN(Translator):
    """CycleGAN: G (a -> b) and F (b -> a), PatchGAN D_B and D_A, least-squares GAN + cycle + identity."""

    directions: ClassVar[tuple[str, ...]] = ("forward", "backward")
    needs_pairs: ClassVar[bool] = False
    n_critic = 1
    critic_methods: tuple[str, ...] = ("discriminator_loss",)

    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__(config)
        c = config.source_shape[0]
        self.F = _generator(config)
        self.D_A = PatchDiscriminator(c, config.d_width, config.patch_layers, config.norm)
        self.D_B = PatchDiscriminator(c, config.d_width, config.patch_layers, config.norm)

    def generator_for(self, direction: str) -> nn.Module:
        super().generator_for(direction)  # refuses a direction it lacks
        return self.F if direction == "backward" else self.G

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(self.G.parameters(), self.F.parameters())

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        return itertools.chain(self.D_A.parameters(), self.D_B.parameters())

    def discriminator_loss(self, batch: Batch) -> LossOutput:
        a, b = self.split(batch)
        with torch.no_grad():
            fake_b, fake_a = self.G(a), self.F(b)
        loss_b = 0.5 * ((self.D_B(b) - 1).pow(2).mean() + self.D_B(fake_b).pow(2).mean())
        loss_a = 0.5 * ((self.D_A(a) - 1).pow(2).mean() + self.D_A(fake_a).pow(2).mean())
        return LossOutput(loss_a + loss_b, {"d_a": loss_a.detach(), "d_b": loss_b.detach()})

    def generator_loss(self, batch: Batch) -> LossOutput:
        a, b = self.split(batch)
        fake_b, fake_a = self.G(a), self.F(b)
        adv = (self.D_B(fake_b) - 1).pow(2).mean() + (self.D_A(fake_a) - 1).pow(2).mean()
        cycle = (self.F(fake_b) - a).abs().mean() + (self.G(fake_a) - b).abs().mean()
        loss = adv + self.config.cycle_weight * cycle
        metrics = {"g_adv": adv.detach(), "cycle": cycle.detach()}
        if self.config.identity_weight > 0:
            idt = (self.G(b) - b).abs().mean() + (self.F(a) - a).abs().mean()
            loss = loss + self.config.identity_weight * self.config.cycle_weight * idt
            metrics["identity"] = idt.detach()
        return LossOutput(loss, metrics)


def build(config: TranslatorConfig) -> Translator:
    return {"pix2pix": Pix2Pix, "cyclegan": CycleGAN, "l1": L1Translator}[config.method](config)
