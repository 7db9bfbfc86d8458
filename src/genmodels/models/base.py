"""The contracts every model family implements, the capabilities some have, and the registry entry.

Everything a caller may do with a model is declared here as a typed Protocol and checked with
``isinstance`` (or the ``is_conditional`` / ``has_latent`` helpers), never by a ``getattr`` probe
or a model name:

- training: ``SingleObjective`` (``loss(batch) -> LossOutput``) or ``Adversarial``
  (``discriminator_loss`` / ``generator_loss``, the two parameter sets, ``n_critic`` and the
  ``critic_methods`` each critic update calls);
- every model is a ``Generative``: ``sample``, ``conditional``, ``config.image_shape`` and
  ``config.num_classes``, and ``sample_options`` declaring its typed sampling options;
- capabilities: ``Decodable`` (a latent space, ``decode``), ``Encodable`` (``encode`` and
  ``reconstruct``), ``HasPrior`` (``sample_prior``), ``Completable`` (``complete`` from kept rows),
  ``Observes`` (``observe``: the data the model sees, e.g. binarised), ``HasLikelihood`` (``nll``),
  ``FitsToData`` (``fit_to_data`` after training);
- ``Translates``: an image-to-image translator (``translate``), which is not a ``Generative``.

Pixel scaling happens at one boundary: a ``Batch`` carries images as float32 in [0, 1]
(exact multiples of 1/255 for 8-bit data); each model maps to its own range inside and back
to [0, 1] in ``sample`` / ``reconstruct`` / ``decode``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

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
    # What one critic update calls, each an optimiser step: usually ("discriminator_loss",); the classic
    # Keras GAN takes two (its two train_on_batch calls: the real batch, then the fakes).
    critic_methods: tuple[str, ...]

    def discriminator_loss(self, batch: Batch) -> LossOutput: ...

    def generator_loss(self, batch: Batch) -> LossOutput: ...

    def generator_parameters(self) -> Iterator[nn.Parameter]: ...

    def discriminator_parameters(self) -> Iterator[nn.Parameter]: ...


@dataclass(frozen=True)
class SampleOption:
    """One sampling option a model's ``sample`` takes besides ``generator`` and ``labels``.

    Args:
        type: ``int``, ``float`` or ``str``: what a command-line or web-form string is parsed to.
        help: one line for the user.
        choices: the valid values of a ``str`` option, or None.
        minimum: the smallest valid value of a number, or None.
    """

    type: type
    help: str
    choices: Sequence[str] | None = None
    minimum: float | None = None

    def parse(self, name: str, value: Any, what: str = "sampling") -> Any:
        """``value`` (a string or a number) as this option's type, checked; a ConfigError names the fix."""
        from genmodels.errors import ConfigError

        try:
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                out: Any = int(value)
            elif self.type is float:
                out = float(value)
                if out != out or out in (float("inf"), float("-inf")):
                    raise ValueError
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} option {name} must be a {self.type.__name__}, got {value!r}") from None
        if self.choices is not None and out not in self.choices:
            raise ConfigError(f"{what} option {name} must be one of {', '.join(self.choices)}, got {out!r}")
        if self.minimum is not None and out < self.minimum:
            raise ConfigError(f"{what} option {name} must be >= {self.minimum:g}, got {out}")
        return out


@runtime_checkable
class Generative(Protocol):
    """What every registered model is: a sampler of images in [0, 1] with the dataset's shape.

    ``sample(n, *, generator=None, labels=None, **options)`` takes the options ``sample_options``
    declares; ``config`` has ``image_shape`` (C, H, W) and ``num_classes``.
    """

    config: Any
    conditional: bool
    sample_options: ClassVar[dict[str, SampleOption]]

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, labels: torch.Tensor | None = None, **options: Any
    ) -> torch.Tensor: ...


@runtime_checkable
class Decodable(Protocol):
    """A model with a latent space: ``decode(z (B, latent_dim), y=None) -> (B, C, H, W)`` in [0, 1]."""

    latent_dim: int

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Encodable(Protocol):
    """A model that maps images to codes: ``encode(x, y=None) -> (B, latent_dim)`` (the posterior mean of a
    VAE) and ``reconstruct(x, y=None) -> (B, C, H, W)`` in [0, 1]."""

    latent_dim: int

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...

    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Invertible(Protocol):
    """A latent model without an encoder whose codes are found by fitting (a GAN's generator inversion):
    ``invert(x, y=None, *, generator=None, **options) -> (B, latent_dim)``."""

    latent_dim: int

    def invert(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> torch.Tensor: ...


@runtime_checkable
class HasPrior(Protocol):
    """A latent model with a prior to draw codes from: ``sample_prior(n, generator) -> (n, latent_dim)``."""

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class Observes(Protocol):
    """A model that sees a transformed version of the data (binarised): ``observe(x, generator)``."""

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class Completable(Protocol):
    """An autoregressive model that completes images from their top ``rows`` rows (raster order).

    ``complete(x (B, C, H, W) in [0, 1], rows, *, generator, labels, **options)`` returns (B, C, H, W)
    with rows ``:rows`` exactly as given (after ``observe``) and the rest sampled.
    """

    def complete(
        self,
        x: torch.Tensor,
        rows: int,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor: ...

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class Inpaints(Protocol):
    """A model that fills the unknown pixels of images: ``inpaint(x, keep, *, generator, labels, **options)``.

    x (B, C, H, W) in [0, 1]; keep (B or 1, 1 or C, H, W), 1 where a pixel is known. Returns (B, C, H, W)
    in [0, 1]. ``inpaint_options`` declares the options (diffusion: RePaint's steps and jumps; VAE and
    autoencoder: the latent fit's steps). A model may refuse masks its method cannot use (an
    autoregressive model needs the unknown pixels to come after all known ones in raster order).
    """

    inpaint_options: ClassVar[dict[str, SampleOption]]

    def inpaint(
        self,
        x: torch.Tensor,
        keep: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor: ...


@runtime_checkable
class Editable(Protocol):
    """A model that edits images by noising and denoising them (SDEdit): ``edit(x, strength, *, generator,
    labels, **options)`` with x (B, C, H, W) in [0, 1] and strength in (0, 1]; ``edit_timestep(strength)``
    is the noise level an edit starts from. A class-conditional model edits towards ``labels``."""

    def edit(
        self,
        x: torch.Tensor,
        strength: float,
        *,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        **options: Any,
    ) -> torch.Tensor: ...

    def edit_timestep(self, strength: float, sampler: str | None = None, steps: int | None = None) -> int: ...


@runtime_checkable
class Translates(Protocol):
    """An image-to-image translator (pix2pix, CycleGAN): ``translate(x, direction) -> (B, C, H, W)`` in [0, 1]
    from source images x (B, C, H, W) in [0, 1]. It trains on a translation dataset, whose images stack the
    source and the target along the channels, so ``config.image_shape`` is (2C, H, W) and
    ``config.source_shape`` (C, H, W). ``directions``: ("forward",) or ("forward", "backward");
    ``check_data(pairing, dataset)`` refuses data it cannot learn from. Not a ``Generative``: it has no
    ``sample``."""

    directions: tuple[str, ...]

    def translate(self, x: torch.Tensor, direction: str = "forward") -> torch.Tensor: ...

    def check_data(self, pairing: str, dataset: str) -> None: ...


@runtime_checkable
class HasLikelihood(Protocol):
    """A model with an exact likelihood or a bound: ``nll(x, y, ...) -> {name: (B,) nats}``.

    ``has_likelihood`` is False for a configuration without a proper one (a VAE whose Gaussian decoder
    has no discretisation); ``likelihood_data`` names the data the nats are of ("8-bit", "binarised").
    """

    has_likelihood: bool
    likelihood_data: str

    def nll(self, x: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class FitsToData(Protocol):
    """A model that fits something to the training data once training ends (a VAE's mixture prior):
    ``fit_to_data(images (N, C, H, W), labels, *, generator) -> {name: value}``."""

    def fit_to_data(
        self, images: torch.Tensor, labels: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> dict[str, float]: ...


def has_convolutions(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def architecture_key(network: nn.Module, /, **facts: Any) -> str:
    """16 hex digits naming a model's architecture (its tensors' names, shapes and dtypes) together with
    ``facts`` (JSON values): what a decision timed on this model, cached per machine, is valid for."""
    import hashlib
    import json

    doc = {"tensors": [[k, list(v.shape), str(v.dtype)] for k, v in network.state_dict().items()], **facts}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def is_conditional(model: Any) -> bool:
    """Whether ``model`` is class-conditional (a Generative whose ``conditional`` is true)."""
    return isinstance(model, Generative) and bool(model.conditional)


def num_classes(model: Any) -> int:
    """The number of classes a conditional model was built for."""
    return int(model.config.num_classes)


def has_latent(model: Any) -> bool:
    """Whether ``model`` has a latent space to decode from (latent_dim > 0)."""
    return isinstance(model, Decodable) and int(model.latent_dim) > 0


def default_labels(model: Any, n: int, device: torch.device | str | None = None) -> torch.Tensor | None:
    """The labels to sample ``n`` images with when the user names no class: every class in turn
    (0, 1, ..., K-1, 0, ...) for a conditional model, None otherwise. (n,) int64."""
    if not is_conditional(model):
        return None
    return torch.arange(n, device=device) % num_classes(model)


def check_labels(model: Any, labels: torch.Tensor | None) -> None:
    """Refuse labels outside 0..K-1 for a conditional model with one clear error."""
    from genmodels.errors import ConfigError

    if labels is None or not is_conditional(model) or labels.numel() == 0:
        return
    k = num_classes(model)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= k:
        raise ConfigError(f"class labels must be in 0..{k - 1}; got {lo if lo < 0 else hi}")


def check_sample_options(
    model: Any,
    name: str,
    options: dict[str, Any],
    declared: dict[str, SampleOption] | None = None,
    what: str = "sampling",
) -> dict[str, Any]:
    """The options the model's ``sample`` declares (or ``declared``: its ``inpaint_options``, ...), parsed
    to their types; None values dropped. ``what`` names the options in errors.

    Raises:
        ConfigError: an option the model does not take (naming those it does) or a bad value.
    """
    from genmodels.errors import ConfigError

    declared = model.sample_options if declared is None else declared
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        if key not in declared:
            takes = f"it takes: {', '.join(declared)}" if declared else f"it takes no {what} options"
            raise ConfigError(f"{name} does not take the {what} option '{key}'; {takes}")
        out[key] = declared[key].parse(key, value, what)
    return out


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
