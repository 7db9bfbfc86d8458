"""Training and data configs, and how a run's full config is resolved from its sources.

Precedence, lowest first: dataclass defaults; the model's registry defaults; the family's
recommended YAML (when a family name such as ``vae`` is given), then its ``by_shape`` rules that match
the data's shape; ``--config FILE.yaml``; ``--set key=value``; explicit CLI flags (``--steps``,
``--batch-size``, ...).

``by_shape`` (family YAMLs only) is a list of rules, applied in order, each ``{when: {...}, model: {...},
train: {...}}``; ``when`` may test ``channels`` (1 or 3), ``min_size`` and ``max_size`` (the image's
larger side), and a rule applies when all its tests hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from typing import Any

from genmodels.config import field_names, from_dict, load_yaml, to_dict
from genmodels.data.config import DataConfig
from genmodels.errors import ConfigError, closest, unknown
from genmodels.models import FAMILIES, MODELS, make_config, model_spec

SCHEDULES = ("constant", "cosine", "linear")
MAX_BATCH = 16384  # global batch; each process's share is further limited by the Trainer
MAX_GRID = 32
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SWITCHES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    steps: int | None = 2000  # optimiser steps (generator steps for GANs); null = until max_time
    max_time: float | None = None  # wall-clock minutes; training stops at whichever limit comes first
    batch_size: int = 128  # global batch (split across processes under torchrun)
    lr: float = 1e-3
    lr_d: float | None = None  # discriminator learning rate (two time-scale rule); null = lr
    betas: tuple[float, float] = (0.9, 0.999)  # Adam betas
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    schedule: str = "constant"  # constant | cosine | linear decay after warm-up
    warmup_steps: int = 0  # linear learning-rate warm-up
    min_lr_ratio: float = 0.0  # the decayed schedules end at lr * min_lr_ratio
    grad_clip: float | None = None  # clip the global gradient norm to this value
    ema_decay: float | None = None  # EMA of weights, e.g. 0.999; sampling uses it; null = off
    ema_warmup: bool = True  # decay_t = min(ema_decay, (1 + t) / (10 + t)), so early EMA tracks fast
    # fp32 | bf16 (autocast, CPU or CUDA) | fp16 (CUDA, loss scaling) | auto (bf16 where it runs natively and,
    # timed on this model's step on this machine, is faster than fp32)
    precision: str = "fp32"
    channels_last: str | bool = "auto"  # auto (measured per model step on this machine) | on | off
    compile: str | bool = "auto"  # torch.compile the training step: auto (tried when the run is long enough to repay
    #   the compile time, kept where the compiled step is faster) | on | off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    log_every: int = 50  # steps between metrics.jsonl / TensorBoard records
    sample_every: int = 500  # steps between sample grids (0 = only at the end)
    ckpt_every: int = 1000  # steps between checkpoints (0 = only at the end)
    ckpt_minutes: float = 5.0  # also checkpoint after this many minutes without one
    keep_checkpoints: int = 2  # older checkpoints are deleted
    grid: int = 5  # sample grids are grid x grid images
    grid_seconds: float = 30.0  # a grid stops adding rows after this long (or 5% of the training time): slow samplers
    monitor_classes: int = 0  # at every sample grid, classify this many samples with the feature net and warn
    #   when their class coverage falls (mode collapse); 0 = off; GANs default to 500
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        if self.steps is None and self.max_time is None:
            raise ConfigError("train.steps and train.max_time are both null; set one (--steps N or --max-time M)")
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"train.steps must be >= 0, got {self.steps}")
        if self.max_time is not None and not self.max_time > 0:
            raise ConfigError(f"train.max_time must be > 0 minutes, got {self.max_time}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ConfigError(
                f"train.batch_size must be in 1..{MAX_BATCH:,}, got {self.batch_size:,}; a larger global batch "
                "needs several processes (torchrun)"
            )
        for key in ("lr", "lr_d"):
            v = getattr(self, key)
            if v is not None and not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"train.{key} must be a positive number, got {v}")
        if self.schedule not in SCHEDULES:
            raise unknown("learning-rate schedule", self.schedule, SCHEDULES)
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)
        for key in ("channels_last", "compile"):
            v = getattr(self, key)
            if isinstance(v, bool):  # YAML reads on / off / true / false as booleans
                setattr(self, key, "on" if v else "off")
            if getattr(self, key) not in SWITCHES:
                raise unknown(f"train.{key} setting", getattr(self, key), SWITCHES)
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"train.grad_clip must be > 0, got {self.grad_clip}")
        for key in ("log_every", "sample_every", "ckpt_every", "warmup_steps", "grid", "monitor_classes"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")
        if not self.grid_seconds > 0:
            raise ConfigError(f"train.grid_seconds must be > 0, got {self.grid_seconds}")
        if self.grid > MAX_GRID:
            raise ConfigError(f"train.grid must be at most {MAX_GRID} (a {MAX_GRID}x{MAX_GRID} grid), got {self.grid}")
        if self.monitor_classes > 10_000:
            raise ConfigError(f"train.monitor_classes must be at most 10000 samples, got {self.monitor_classes}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be in [0, 1), got {list(self.betas)}")


SECTIONS = ("model", "train", "data")


def family_defaults(family: str) -> dict[str, Any]:
    """The recommended config of a family, from the packaged ``configs/<family>.yaml``."""
    text = resources.files("genmodels").joinpath("configs", f"{family}.yaml").read_text()
    import yaml

    return yaml.safe_load(text) or {}


def resolve_name(name: str) -> tuple[str, dict[str, Any]]:
    """(model name, family YAML) for a model or family name; unknown names suggest the closest."""
    if name in MODELS:
        return name, {}
    if name in FAMILIES:
        fam = family_defaults(name)
        # FAMILIES is the one source of a family's pick (``genmodels models`` prints it); the YAML repeats it
        # for the reader and must agree (tested).
        if fam.get("model_name", FAMILIES[name]) != FAMILIES[name]:
            raise ConfigError(f"configs/{name}.yaml names {fam['model_name']} but the family picks {FAMILIES[name]}")
        return FAMILIES[name], fam
    raise unknown("model", name, [*MODELS, *FAMILIES])


SHAPE_TESTS = ("channels", "min_size", "max_size")


def shape_rules(family_layer: dict[str, Any], shape: tuple[int, ...] | list[int] | None) -> list[dict[str, Any]]:
    """The ``by_shape`` rules of a family YAML that apply to images of ``shape`` (C, H, W), in order,
    each as a {section: values} layer. None matches no rule."""
    rules = family_layer.get("by_shape") or []
    if not isinstance(rules, list):
        raise ConfigError("by_shape in a family config must be a list of {when: ..., model: ..., train: ...}")
    out = []
    for rule in rules:
        when = rule.get("when") if isinstance(rule, dict) else None
        if not isinstance(when, dict) or not set(when) <= set(SHAPE_TESTS):
            raise ConfigError(f"a by_shape rule needs when: with keys among {', '.join(SHAPE_TESTS)}; got {rule!r}")
        if shape is None:
            continue
        c, side = shape[0], max(shape[1:])
        ok = when.get("channels", c) == c and side >= when.get("min_size", side) and side <= when.get("max_size", side)
        if ok:
            out.append({k: v for k, v in rule.items() if k != "when"})
    return out


def _merge_layer(into: dict[str, dict[str, Any]], layer: dict[str, Any], origin: str) -> None:
    """Merge a {section: {key: value}} layer, rejecting unknown sections."""
    for section, values in layer.items():
        if section in ("model_name", "by_shape"):
            continue
        if section not in SECTIONS:
            guess = closest(section, SECTIONS)
            hint = f"did you mean '{guess}'?" if guess else f"valid sections: {', '.join(SECTIONS)}"
            raise ConfigError(f"unknown config section '{section}' in {origin}; {hint}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section '{section}' in {origin} must be a mapping of key: value")
        into[section].update(values)


def _route_sets(sets: dict[str, Any], model_name: str) -> dict[str, dict[str, Any]]:
    """Route ``--set`` keys to sections: ``train.lr`` explicitly, or a bare key to the one section having it."""
    spec = model_spec(model_name)
    owners = {
        "model": field_names(spec.config_cls),
        "train": field_names(TrainConfig),
        "data": field_names(DataConfig),
    }
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in sets.items():
        section, dot, rest = key.partition(".")
        if dot:
            if section not in SECTIONS:
                raise unknown("config section", section, SECTIONS)
            out[section][rest] = value
            continue
        having = [s for s, names in owners.items() if key in names]
        if len(having) == 1:
            out[having[0]][key] = value
        elif len(having) > 1:
            raise ConfigError(f"--set {key} is ambiguous; write {' or '.join(f'{s}.{key}' for s in having)}")
        else:
            every = [f"{s}.{n}" for s, names in owners.items() for n in names]
            guess = closest(key, [*every, *(n for names in owners.values() for n in names)])
            hint = f"did you mean '{guess}'?" if guess else "see genmodels train --help"
            raise ConfigError(f"unknown config key '{key}'; {hint}")
    return out


def resolve_run_config(
    name: str,
    *,
    config_file: str | None = None,
    sets: dict[str, Any] | None = None,
    flags: dict[str, dict[str, Any]] | None = None,
    shape: tuple[int, ...] | list[int] | None = None,
) -> dict[str, Any]:
    """The full, checked run config as a plain dict: ``{model_name, model, train, data}``.

    The model section is complete except for ``image_shape`` / ``num_classes``, which come from the
    dataset when the model is built. ``shape`` (C, H, W) of the training images selects the family's
    ``by_shape`` rules; None applies none.
    """
    model_name, family_layer = resolve_name(name)
    file_layer = load_yaml(config_file) if config_file else {}
    file_model = file_layer.get("model_name")
    if file_model is not None and file_model != model_name:
        if name not in FAMILIES:
            raise ConfigError(f"{config_file} is a config for {file_model}, not {name}; name {file_model} or drop it")
        model_name, family_layer = resolve_name(str(file_model))
    layers: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    layers["train"].update(model_spec(model_name).train_defaults)
    _merge_layer(layers, family_layer, f"the '{name}' family defaults")
    for rule in shape_rules(family_layer, shape):
        _merge_layer(layers, rule, f"the '{name}' family's by_shape rules")
    if file_layer:
        _merge_layer(layers, file_layer, str(config_file))
    _merge_layer(layers, _route_sets(sets or {}, model_name), "--set")
    for section, values in (flags or {}).items():
        layers[section].update(values)
    model_values = layers["model"] if shape is None else {"image_shape": list(shape), **layers["model"]}
    model_cfg = make_config(model_name, model_values)
    train_cfg = from_dict(TrainConfig, layers["train"], section="train")
    data_cfg = from_dict(DataConfig, layers["data"], section="data")
    return {
        "model_name": model_name,
        "model": to_dict(model_cfg),
        "train": to_dict(train_cfg),
        "data": to_dict(data_cfg),
    }
