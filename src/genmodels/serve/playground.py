"""The models behind the web app: a cache of loaded runs, and the pictures it draws with them.

Everything here uses a model only through the public protocol every family shares (``sample``) and
the optional methods some families have (``decode`` and ``latent_dim``, ``encode``, ``sample_prior``,
``complete``, ``observe``), found by ``callable`` checks, never by a model name. Each picture comes
back as PNG bytes at the data's own resolution (the browser scales it up).
"""

from __future__ import annotations

import inspect
import io
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.errors import ConfigError, GenmodelsError
from genmodels.serve.runs import latest_step

MAX_IMAGES = 64  # per generate request
MAX_PATH_STEPS = 16  # images along one interpolation
MAX_COMPLETIONS = 8  # completions of one test image
LATENT_POINTS = 1000  # test images encoded for the 2-D explorer's map


@dataclass
class Loaded:
    """One loaded run and the things derived from it, guarded by one lock (one computation at a time)."""

    run: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    latent_map: dict[str, Any] | None = None


def png_bytes(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> bytes:
    """Images (N, C, H, W) in [0, 1] tiled into one PNG (white 2-pixel gaps); a single image has no frame."""
    from PIL import Image

    from genmodels.viz import make_grid, to_uint8

    grid = to_uint8(images)[0].transpose(1, 2, 0) if len(images) == 1 else make_grid(images, nrow, pad=pad)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # tiny images: speed matters more than bytes
    return buf.getvalue()


def _labels_kw(model: Any, y: torch.Tensor | None) -> dict[str, Any]:
    """decode/encode take ``y`` only on conditional models (an autoencoder's take none)."""
    return {"y": y} if getattr(model, "conditional", False) else {}


def sample_options(model: Any) -> list[dict[str, Any]]:
    """The keyword options a model's ``sample`` takes besides generator/labels: [{name, type, default}]."""
    out = []
    for name, p in inspect.signature(model.sample).parameters.items():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or name in ("generator", "labels"):
            continue
        ann = str(p.annotation)  # a string under ``from __future__ import annotations``: "int | None", ...
        kind = "int" if re.search(r"\bint\b", ann) else "float" if re.search(r"\bfloat\b", ann) else "str"
        default = None if p.default is inspect.Parameter.empty else p.default
        out.append({"name": name, "type": kind, "default": default})
    return out


def parse_options(model: Any, raw: dict[str, str]) -> dict[str, Any]:
    """Sampling options from request strings, typed as the model's ``sample`` declares them; blanks dropped."""
    kinds = {o["name"]: o["type"] for o in sample_options(model)}
    out: dict[str, Any] = {}
    for name, text in raw.items():
        if text.strip() == "":
            continue
        if name not in kinds:
            takes = ", ".join(kinds) or "none"
            raise ConfigError(f"this model's sample takes no option '{name}'; it takes: {takes}")
        try:
            out[name] = int(text) if kinds[name] == "int" else float(text) if kinds[name] == "float" else text
        except ValueError:
            raise ConfigError(f"option {name} must be a{'n int' if kinds[name] == 'int' else ' number'}") from None
    return out


class Playground:
    """Loaded runs (an LRU cache keyed by run path, checkpoint step and weights) and the pictures drawn with them.

    Args:
        device: where models run ("auto" picks CUDA when present).
        max_models: runs kept loaded at once.
    """

    def __init__(self, device: str = "auto", max_models: int = 6) -> None:
        self.device = device
        self.max_models = max_models
        self._models: OrderedDict[tuple[str, int, str], Loaded] = OrderedDict()
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # guards the two caches
        self._loading: dict[tuple[str, int, str], threading.Lock] = {}

    # ----------------------------------------------------------------- loading

    def get(self, path: Path, step: int | None = None, weights: str = "ema") -> Loaded:
        """The loaded run at ``step`` (default: the checkpoint ``latest`` names now, so a run still
        training is reloaded once it writes a newer checkpoint)."""
        from genmodels.errors import CheckpointError
        from genmodels.training import load_run

        if weights not in ("ema", "raw"):
            raise ConfigError(f"weights must be 'ema' or 'raw', got {weights!r}")
        if step is None:
            step = latest_step(path)
            if step is None:
                raise CheckpointError(f"run {path.name} has no checkpoint yet; wait for its first one")
        key = (str(path), int(step), weights)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one thread loads a run; others asking for it wait and then share it
            with self._lock:
                if key in self._models:
                    return self._models[key]
            loaded = Loaded(load_run(path, weights=weights, device=self.device, step=int(step)))
            with self._lock:
                self._models[key] = loaded
                self._loading.pop(key, None)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
        return loaded

    def test_split(self, run: Any) -> Any:
        """The run's test split (the training split for data without one), cached."""
        key = json.dumps(run.config["data"], sort_keys=True)
        with self._lock:
            if key in self._data:
                return self._data[key]
        try:
            ds = run.load_data("test")
        except GenmodelsError:  # a folder or array without a test split
            ds = run.load_data("train")
        with self._lock:
            self._data[key] = ds
            while len(self._data) > 3:
                self._data.popitem(last=False)
        return ds

    # ----------------------------------------------------------------- what a model offers

    @staticmethod
    def info(run: Any) -> dict[str, Any]:
        """What the app can do with a run's model, found from its methods and attributes."""
        model = run.model
        conditional = bool(getattr(model, "conditional", False))
        k = int(model.config.num_classes) if conditional else 0
        names = (run.meta.get("dataset") or {}).get("classes") or []
        latent_dim = int(getattr(model, "latent_dim", 0) or 0)
        latent = latent_dim > 0 and callable(getattr(model, "decode", None))
        return {
            "model_name": run.model_name,
            "step": run.step,
            "weights": run.weights,
            "image_shape": list(getattr(model.config, "image_shape", [])),
            "parameters": sum(p.numel() for p in model.parameters()),
            "conditional": conditional,
            "classes": [str(names[i]) if i < len(names) else str(i) for i in range(k)],
            "latent_dim": latent_dim if latent else None,
            "interpolate": latent,
            "explore": latent and latent_dim == 2,
            "encode": callable(getattr(model, "encode", None)),
            "complete": callable(getattr(model, "complete", None)),
            "sample_options": sample_options(model),
        }

    def _label(self, run: Any, label: int | None) -> int | None:
        if label is None:
            return None
        if not getattr(run.model, "conditional", False):
            raise ConfigError(f"class {label} was given but {run.model_name} is not class-conditional")
        k = int(run.model.config.num_classes)
        if not 0 <= label < k:
            raise ConfigError(f"class must be in 0..{k - 1}, got {label}")
        return label

    # ----------------------------------------------------------------- pictures

    def generate(self, loaded: Loaded, n: int, seed: int, label: int | None, options: dict[str, str]) -> bytes:
        """n samples as one PNG grid: the images ``genmodels sample RUN -n N --seed S`` draws.

        Args:
            label: the class for every image of a conditional model; None cycles through the classes.
            options: the model's sampling options as request strings (``steps``, ``sampler``, ...).
        """
        run = loaded.run
        if not 1 <= n <= MAX_IMAGES:
            raise ConfigError(f"n must be in 1..{MAX_IMAGES}, got {n}")
        label = self._label(run, label)
        labels = None
        if getattr(run.model, "conditional", False):
            k = int(run.model.config.num_classes)
            labels = torch.full((n,), label) if label is not None else torch.arange(n) % k
        opts = parse_options(run.model, options)
        with loaded.lock:
            images = run.sample(n, seed=seed, labels=labels, **opts)
        return png_bytes(images, nrow=min(n, 8))

    @torch.no_grad()
    def _endpoints(self, loaded: Loaded, seeds: tuple[int, int], y: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
        """The latents of the samples drawn with two seeds, (2, latent_dim), and whether to slerp.

        A prior's draws (``sample_prior``, or N(0, I) for a model without an encoder, as GANs draw)
        are joined by slerp, which keeps the typical norm of a Gaussian all along the path (White 2016);
        an autoencoder has no prior, so its two samples are encoded and joined by a straight line.
        """
        run, model = loaded.run, loaded.run.model
        dev = run.device
        z = []
        for s in seeds:
            g = torch.Generator(device=dev).manual_seed(s)
            if callable(getattr(model, "sample_prior", None)):
                z.append(model.sample_prior(1, g))
            elif callable(getattr(model, "encode", None)):
                x = run.sample(1, seed=s, labels=y[:1].cpu() if y is not None else None).to(dev)
                z.append(model.encode(x, **_labels_kw(model, y[:1] if y is not None else None)))
            else:
                z.append(torch.randn(1, int(model.latent_dim), generator=g, device=dev))
        slerp = not callable(getattr(model, "encode", None)) or callable(getattr(model, "sample_prior", None))
        return torch.cat(z).float(), slerp

    @torch.no_grad()
    def interpolate(self, loaded: Loaded, seed_a: int, seed_b: int, steps: int, label: int | None) -> bytes:
        """A row of ``steps`` images decoded along the path between the latents of two samples."""
        from genmodels.viz import slerp

        run, model = loaded.run, loaded.run.model
        self._need_latent(run)
        if not 2 <= steps <= MAX_PATH_STEPS:
            raise ConfigError(f"steps must be in 2..{MAX_PATH_STEPS}, got {steps}")
        label = self._label(run, label)
        dev = run.device
        y = self._class_tensor(run, label, 1)
        with loaded.lock:
            z, use_slerp = self._endpoints(loaded, (seed_a, seed_b), y)
            t = torch.linspace(0, 1, steps, device=dev)
            a, b = z[:1], z[1:]
            path = slerp(a, b, t)[0] if use_slerp else a + t[:, None] * (b - a)
            yy = y.expand(steps) if y is not None else None
            images = model.decode(path, **_labels_kw(model, yy)).float().cpu()
        return png_bytes(images, nrow=steps)

    def _class_tensor(self, run: Any, label: int | None, n: int) -> torch.Tensor | None:
        """Labels (n,) for a conditional model's decoder: the chosen class, or class 0."""
        if not getattr(run.model, "conditional", False):
            return None
        return torch.full((n,), label or 0, dtype=torch.long, device=run.device)

    @staticmethod
    def _need_latent(run: Any) -> None:
        if not (int(getattr(run.model, "latent_dim", 0) or 0) > 0 and callable(getattr(run.model, "decode", None))):
            raise ConfigError(f"{run.model_name} has no latent space to decode (it has no decode method)")

    @torch.no_grad()
    def decode_point(self, loaded: Loaded, z: list[float], label: int | None) -> bytes:
        """One image decoded from one latent point: the explorer's request, a few ms of compute."""
        run, model = loaded.run, loaded.run.model
        self._need_latent(run)
        d = int(model.latent_dim)
        if len(z) != d or not all(np.isfinite(z)):
            raise ConfigError(f"z must be {d} finite numbers separated by commas, got {len(z)}")
        label = self._label(run, label)
        zt = torch.tensor([z], dtype=torch.float32, device=run.device)
        with loaded.lock:
            image = model.decode(zt, **_labels_kw(model, self._class_tensor(run, label, 1))).float().cpu()
        return png_bytes(image)

    @torch.no_grad()
    def latent_map(self, loaded: Loaded) -> dict[str, Any]:
        """The 2-D explorer's map: the latent region to explore and test images' codes to draw on it.

        With an encoder: the codes of up to LATENT_POINTS test images (coloured by class), and the region
        their 1st..99th percentiles span plus a margin (as ``manifold_sheet`` does for autoencoders); a
        model with a prior (``sample_prior``) or without an encoder (a GAN's N(0, I)) also gets the prior's
        [-3, 3] square, where its samples come from.
        """
        if loaded.latent_map is not None:
            return loaded.latent_map
        run, model = loaded.run, loaded.run.model
        if int(getattr(model, "latent_dim", 0) or 0) != 2:
            raise ConfigError(f"the explorer needs a 2-D latent; {run.model_name} has latent_dim={model.latent_dim}")
        out: dict[str, Any] = {"range": [[-3.0, 3.0], [-3.0, 3.0]], "points": [], "labels": []}
        if callable(getattr(model, "encode", None)):
            ds = self.test_split(run)
            x = torch.from_numpy(ds.images[:LATENT_POINTS]).float().div_(255.0).to(run.device)
            y = torch.from_numpy(ds.labels[:LATENT_POINTS]).to(run.device) if ds.labels is not None else None
            with loaded.lock:
                parts = [
                    model.encode(x[i : i + 500], **_labels_kw(model, y[i : i + 500] if y is not None else None))
                    for i in range(0, len(x), 500)
                ]
            codes = torch.cat(parts).float().cpu().numpy()
            lo, hi = np.percentile(codes, 1, axis=0), np.percentile(codes, 99, axis=0)
            margin = 0.15 * np.maximum(hi - lo, 1e-3)
            lo, hi = lo - margin, hi + margin
            if callable(getattr(model, "sample_prior", None)):
                lo, hi = np.minimum(lo, -3.0), np.maximum(hi, 3.0)
            out["range"] = [[float(lo[i]), float(hi[i])] for i in range(2)]
            out["points"] = np.round(codes, 4).tolist()
            out["labels"] = y.cpu().tolist() if y is not None else []
        loaded.latent_map = out
        return out

    def test_image(self, loaded: Loaded, index: int) -> bytes:
        """Test image ``index`` of the run's dataset as a PNG."""
        ds = self.test_split(loaded.run)
        if not 0 <= index < len(ds):
            raise ConfigError(f"index must be in 0..{len(ds) - 1} (the {ds.split} split's size), got {index}")
        return png_bytes(torch.from_numpy(ds.images[index : index + 1]).float().div_(255.0))

    @torch.no_grad()
    def complete(
        self, loaded: Loaded, index: int, rows: int, samples: int, seed: int, label: int | None, options: dict[str, str]
    ) -> bytes:
        """One row: test image ``index`` with only its top ``rows`` kept (the rest grey), ``samples``
        completions of it, and the original, as ``genmodels complete`` draws them."""
        run, model = loaded.run, loaded.run.model
        if not callable(getattr(model, "complete", None)):
            raise ConfigError(f"{run.model_name} cannot complete images; that needs an autoregressive model")
        ds = self.test_split(run)
        if not 0 <= index < len(ds):
            raise ConfigError(f"index must be in 0..{len(ds) - 1} (the {ds.split} split's size), got {index}")
        h = int(ds.images.shape[2])
        if not 0 <= rows <= h:
            raise ConfigError(f"rows must be in 0..{h} (the image height), got {rows}")
        if not 1 <= samples <= MAX_COMPLETIONS:
            raise ConfigError(f"samples must be in 1..{MAX_COMPLETIONS}, got {samples}")
        label = self._label(run, label)
        y = None
        if getattr(model, "conditional", False):
            cls = label if label is not None else int(ds.labels[index]) if ds.labels is not None else 0
            y = torch.full((samples,), cls, dtype=torch.long, device=run.device)
        opts = {k: v for k, v in parse_options(model, options).items() if k in _complete_params(model)}
        x = torch.from_numpy(ds.images[index : index + 1]).float().div_(255.0).to(run.device)
        g = torch.Generator(device=run.device).manual_seed(seed)
        with loaded.lock:
            if callable(getattr(model, "observe", None)):  # binarised models: every completion keeps the same rows
                x = model.observe(x, g).float()
            done = model.complete(x.repeat(samples, 1, 1, 1), rows, generator=g, labels=y, **opts).float().cpu()
        x = x.cpu()
        kept = x.clone()
        kept[:, :, rows:] = 0.5
        return png_bytes(torch.cat([kept, done, x]), nrow=samples + 2)


def _complete_params(model: Any) -> set[str]:
    return set(inspect.signature(model.complete).parameters)
