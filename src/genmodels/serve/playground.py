"""The models behind the web app: a cache of loaded runs, and the pictures it draws with them.

Everything here uses a model only through the protocols of ``genmodels.models.base``: every model is a
``Generative`` (``sample`` and its declared ``sample_options``); what else the app offers follows from
the capabilities it declares (``Decodable`` for interpolation and the 2-D explorer, ``Encodable``,
``HasPrior``, ``Completable``), checked with ``isinstance``, never by a model name. Each picture comes
back as PNG bytes at the data's own resolution (the browser scales it up).
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels import safeio
from genmodels.device import pick_device
from genmodels.errors import CheckpointError, ConfigError, GenmodelsError
from genmodels.models.base import (
    Completable,
    Encodable,
    Generative,
    HasPrior,
    Inpaints,
    Translates,
    check_sample_options,
    default_labels,
    has_latent,
    is_conditional,
    num_classes,
)
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
    class_codes: torch.Tensor | None = None  # latent arithmetic's class means (NaN: not made yet)


def png_bytes(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> bytes:
    """Images (N, C, H, W) in [0, 1] tiled into one PNG (white 2-pixel gaps); a single image has no frame."""
    from PIL import Image

    from genmodels.viz import make_grid, to_uint8

    grid = to_uint8(images)[0].transpose(1, 2, 0) if len(images) == 1 else make_grid(images, nrow, pad=pad)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # tiny images: speed matters more than bytes
    return buf.getvalue()


def sample_options(model: Any) -> list[dict[str, Any]]:
    """The sampling options a model declares (``model.sample_options``), for the browser's form:
    [{name, type ("int" | "float" | "str"), help, choices, minimum}]."""
    return [
        {
            "name": name,
            "type": opt.type.__name__,
            "help": opt.help,
            "choices": list(opt.choices) if opt.choices is not None else None,
            "minimum": opt.minimum,
        }
        for name, opt in (model.sample_options.items() if isinstance(model, Generative) else ())
    ]


def _inpaint_masks(model: Any) -> list[str]:
    """The named masks a model can fill (an autoregressive one only the bottom half)."""
    from genmodels.viz.inpainting import MASKS

    if not isinstance(model, Inpaints):
        return []
    return ["bottom"] if isinstance(model, Completable) else list(MASKS)


def _edit_kind(model: Any) -> str | None:
    """How a model edits: "sdedit" (diffusion), "latent" (an encoder: latent arithmetic), or None."""
    from genmodels.viz.editing import can_edit, is_diffusion

    if not can_edit(model):
        return None
    return "sdedit" if is_diffusion(model) else "latent"


def parse_mask(spec: str, height: int, width: int, seed: int) -> torch.Tensor:
    """A keep-mask (1, 1, H, W) from a request: a mask name, or H*W characters '0' (keep) / '1' (fill)
    in raster order, as the browser's drawing sends it."""
    from genmodels.viz.inpainting import MASKS, named_mask

    if spec in MASKS:
        return named_mask(spec, 1, height, width, torch.Generator().manual_seed(seed))
    if len(spec) != height * width or set(spec) - {"0", "1"}:
        raise ConfigError(
            f"mask must be one of {', '.join(MASKS)} or {height * width} characters 0 (keep) / 1 (fill), "
            f"got {len(spec)} characters"
        )
    fill = torch.tensor([c == "1" for c in spec]).view(1, 1, height, width)
    return (~fill).float()


def parse_options(run: Any, raw: dict[str, str]) -> dict[str, Any]:
    """Sampling options from request strings, typed and checked as the model declares them; blanks dropped."""
    return check_sample_options(run.model, run.model_name, {k: v for k, v in raw.items() if v.strip() != ""})


class Playground:
    """Loaded runs (an LRU cache keyed by run path, checkpoint step and weights) and the pictures drawn with them.

    Args:
        device: where models run ("auto" picks CUDA when present).
        max_models: runs kept loaded at once.
    """

    def __init__(self, device: str = "auto", max_models: int = 6) -> None:
        self.device = pick_device(device)  # a bad name is refused here, before the app serves anything
        self.max_models = max_models
        self._models: OrderedDict[tuple[str, int, str], Loaded] = OrderedDict()
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # guards the two caches
        self._loading: dict[tuple[str, int, str], threading.Lock] = {}

    # ----------------------------------------------------------------- loading

    def get(self, path: Path, step: int | None = None, weights: str = "ema") -> Loaded:
        """The loaded run at ``step`` (default: the checkpoint ``latest`` names now, so a run still
        training is reloaded once it writes a newer checkpoint)."""
        from genmodels.runs import load_run

        if weights not in ("ema", "raw"):
            raise ConfigError(f"weights must be 'ema' or 'raw', got {weights!r}")
        if step is None:
            try:
                step = latest_step(path)
            except safeio.FileRefused as e:
                raise CheckpointError(str(e)) from None
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
            loaded = Loaded(load_run(path, weights=weights, device=str(self.device), step=int(step)))
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
        """What the app can do with a run's model, from the capabilities it declares."""
        model = run.model
        conditional = is_conditional(model)
        k = num_classes(model) if conditional else 0
        names = (run.meta.get("dataset") or {}).get("classes") or []
        latent = has_latent(model)
        latent_dim = int(model.latent_dim) if latent else None
        return {
            "model_name": run.model_name,
            "step": run.step,
            "weights": run.weights,
            "image_shape": list(model.config.image_shape),
            "parameters": sum(p.numel() for p in model.parameters()),
            "conditional": conditional,
            "classes": [str(names[i]) if i < len(names) else str(i) for i in range(k)],
            "latent_dim": latent_dim,
            "interpolate": latent,
            "explore": latent_dim == 2,
            "encode": isinstance(model, Encodable),
            "complete": isinstance(model, Completable),
            "inpaint": isinstance(model, Inpaints),
            "inpaint_masks": _inpaint_masks(model),
            "edit": _edit_kind(model),
            "dataset_classes": [str(c) for c in names],
            "generate": isinstance(model, Generative),
            "translate": list(model.directions) if isinstance(model, Translates) else [],
            "sides": list((run.meta.get("dataset") or {}).get("sides") or []),
            "sample_options": sample_options(model),
        }

    def _label(self, run: Any, label: int | None) -> int | None:
        if label is None:
            return None
        if not is_conditional(run.model):
            raise ConfigError(f"class {label} was given but {run.model_name} is not class-conditional")
        k = num_classes(run.model)
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
        labels = torch.full((n,), label) if label is not None else default_labels(run.model, n)
        opts = parse_options(run, options)
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
            if isinstance(model, HasPrior):
                z.append(model.sample_prior(1, g))
            elif isinstance(model, Encodable):
                x = run.sample(1, seed=s, labels=y[:1].cpu() if y is not None else None).to(dev)
                z.append(model.encode(x, y[:1] if y is not None else None))
            else:
                z.append(torch.randn(1, int(model.latent_dim), generator=g, device=dev))
        slerp = isinstance(model, HasPrior) or not isinstance(model, Encodable)
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
            images = model.decode(path, yy).float().cpu()
        return png_bytes(images, nrow=steps)

    def _class_tensor(self, run: Any, label: int | None, n: int) -> torch.Tensor | None:
        """Labels (n,) for a conditional model's decoder: the chosen class, or class 0."""
        if not is_conditional(run.model):
            return None
        return torch.full((n,), label or 0, dtype=torch.long, device=run.device)

    @staticmethod
    def _need_latent(run: Any) -> None:
        if not has_latent(run.model):
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
            image = model.decode(zt, self._class_tensor(run, label, 1)).float().cpu()
        return png_bytes(image)

    @torch.no_grad()
    def latent_map(self, loaded: Loaded) -> dict[str, Any]:
        """The 2-D explorer's map: the latent region to explore and test images' codes to draw on it.

        With an encoder: the codes of up to LATENT_POINTS test images (coloured by class), and the region
        their 1st..99th percentiles span plus a margin (as ``manifold_sheet`` does for autoencoders); a
        model with a prior (``HasPrior``) or without an encoder (a GAN's N(0, I)) also gets the prior's
        [-3, 3] square, where its samples come from.
        """
        if loaded.latent_map is not None:
            return loaded.latent_map
        run, model = loaded.run, loaded.run.model
        if not (has_latent(model) and int(model.latent_dim) == 2):
            dim = int(model.latent_dim) if has_latent(model) else "none"
            raise ConfigError(f"the explorer needs a 2-D latent; {run.model_name} has latent_dim={dim}")
        out: dict[str, Any] = {"range": [[-3.0, 3.0], [-3.0, 3.0]], "points": [], "labels": []}
        if isinstance(model, Encodable):
            ds = self.test_split(run)
            x = torch.from_numpy(ds.images[:LATENT_POINTS]).float().div_(255.0).to(run.device)
            y = torch.from_numpy(ds.labels[:LATENT_POINTS]).to(run.device) if ds.labels is not None else None
            with loaded.lock:
                parts = [
                    model.encode(x[i : i + 500], y[i : i + 500] if y is not None and is_conditional(model) else None)
                    for i in range(0, len(x), 500)
                ]
            codes = torch.cat(parts).float().cpu().numpy()
            lo, hi = np.percentile(codes, 1, axis=0), np.percentile(codes, 99, axis=0)
            margin = 0.15 * np.maximum(hi - lo, 1e-3)
            lo, hi = lo - margin, hi + margin
            if isinstance(model, HasPrior):
                lo, hi = np.minimum(lo, -3.0), np.maximum(hi, 3.0)
            out["range"] = [[float(lo[i]), float(hi[i])] for i in range(2)]
            out["points"] = np.round(codes, 4).tolist()
            out["labels"] = y.cpu().tolist() if y is not None else []
        loaded.latent_map = out
        return out

    def test_image(self, loaded: Loaded, index: int) -> bytes:
        """Test image ``index`` of the run's dataset as a PNG (a translator's: the source side)."""
        x = self._test_input(loaded, index)[1]
        if isinstance(loaded.run.model, Translates):
            x = x[:, : loaded.run.model.config.source_shape[0]]
        return png_bytes(x)

    def translate(self, loaded: Loaded, index: int, n: int, direction: str) -> bytes:
        """Test examples ``index`` .. ``index + n - 1`` in columns: the input, its translation and the other
        side's image (the target), as ``genmodels translate RUN --input test`` draws them."""
        from genmodels.viz.translation import split_pairs, translate_images

        run, model = loaded.run, loaded.run.model
        if not isinstance(model, Translates):
            raise ConfigError(
                f"{run.model_name} is not a translator; translation works with pix2pix, cyclegan, l1-unet"
            )
        if not 1 <= n <= MAX_COMPLETIONS:
            raise ConfigError(f"n must be in 1..{MAX_COMPLETIONS}, got {n}")
        model.generator_for(direction)
        ds = self.test_split(run)
        if not 0 <= index < len(ds):
            raise ConfigError(f"index must be in 0..{len(ds) - 1} (the {ds.split} split's size), got {index}")
        a, b = split_pairs(torch.from_numpy(ds.images[index : index + n]).float().div_(255.0))
        src, other = (a, b) if direction == "forward" else (b, a)
        with loaded.lock:
            out = translate_images(model, src, direction)
        return png_bytes(torch.cat([src, out, other]), nrow=len(src))

    def complete(
        self, loaded: Loaded, index: int, rows: int, samples: int, seed: int, label: int | None, options: dict[str, str]
    ) -> bytes:
        """One row: test image ``index`` with only its top ``rows`` kept (the rest grey), ``samples``
        completions of it, and the original, as ``genmodels complete`` draws them (``complete_images``)."""
        from genmodels.viz.completion import complete_images, completion_sheet

        run, model = loaded.run, loaded.run.model
        if not isinstance(model, Completable):
            raise ConfigError(f"{run.model_name} cannot complete images; that needs an autoregressive model")
        _, x, own = self._test_input(loaded, index)
        if not 1 <= samples <= MAX_COMPLETIONS:
            raise ConfigError(f"samples must be in 1..{MAX_COMPLETIONS}, got {samples}")
        label = self._label(run, label)
        y = None
        if is_conditional(model):
            y = torch.tensor([label if label is not None else own if own is not None else 0], dtype=torch.long)
        opts = parse_options(run, options)
        g = torch.Generator(device=run.device).manual_seed(seed)
        with loaded.lock:
            result = complete_images(model, x, rows, samples=samples, generator=g, labels=y, **opts)
        return png_bytes(completion_sheet(result, rows), nrow=samples + 2)

    def _test_input(self, loaded: Loaded, index: int) -> tuple[Any, torch.Tensor, int | None]:
        """(the split, test image ``index`` as (1, C, H, W) in [0, 1], its label or None), index checked."""
        ds = self.test_split(loaded.run)
        if not 0 <= index < len(ds):
            raise ConfigError(f"index must be in 0..{len(ds) - 1} (the {ds.split} split's size), got {index}")
        x = torch.from_numpy(ds.images[index : index + 1]).float().div_(255.0)
        own = int(ds.labels[index]) if ds.labels is not None else None
        return ds, x, own

    def inpaint(
        self, loaded: Loaded, index: int, mask: str, samples: int, seed: int, label: int | None, options: dict[str, str]
    ) -> bytes:
        """One row: test image ``index`` with the mask's pixels grey, ``samples`` inpaintings, the original,
        as ``genmodels inpaint`` draws them (``inpaint_images``)."""
        from genmodels.viz.inpainting import METHODS, inpaint_images, inpaint_sheet

        run, model = loaded.run, loaded.run.model
        if not isinstance(model, Inpaints):
            raise ConfigError(f"{run.model_name} cannot inpaint; inpainting works with {METHODS}")
        if not 1 <= samples <= MAX_COMPLETIONS:
            raise ConfigError(f"samples must be in 1..{MAX_COMPLETIONS}, got {samples}")
        _, x, own = self._test_input(loaded, index)
        _, h, w = model.config.image_shape
        keep = parse_mask(mask, h, w, seed)
        label = self._label(run, label)
        y = None
        if is_conditional(model):
            y = torch.tensor([label if label is not None else own if own is not None else 0], dtype=torch.long)
        opts = {k: v for k, v in options.items() if v.strip() != ""}
        g = torch.Generator(device=run.device).manual_seed(seed)
        with loaded.lock:
            result = inpaint_images(model, x, keep, samples=samples, generator=g, labels=y, **opts)
        return png_bytes(inpaint_sheet(result), nrow=samples + 2)

    def edit(
        self,
        loaded: Loaded,
        index: int,
        strength: float,
        to_class: int | None,
        samples: int,
        seed: int,
        options: dict[str, str],
    ) -> bytes:
        """One row: test image ``index`` and its edits, as ``genmodels edit`` draws them: SDEdit at
        ``strength`` (towards ``to_class`` with a conditional diffusion model), or latent arithmetic from
        the image's class to ``to_class``."""
        from genmodels.viz.editing import class_codes, edit_sheet, latent_edit_images, sdedit_images

        run, model = loaded.run, loaded.run.model
        kind = _edit_kind(model)
        if kind is None:
            from genmodels.viz.editing import METHODS

            raise ConfigError(f"{run.model_name} cannot edit images; editing works with {METHODS}")
        if not 1 <= samples <= MAX_COMPLETIONS:
            raise ConfigError(f"samples must be in 1..{MAX_COMPLETIONS}, got {samples}")
        _, x, own = self._test_input(loaded, index)
        g = torch.Generator(device=run.device).manual_seed(seed)
        if kind == "sdedit":
            y = None
            if is_conditional(model):
                cls = self._label(run, to_class) if to_class is not None else own if own is not None else 0
                y = torch.tensor([cls])
            elif to_class is not None:
                raise ConfigError(
                    f"{run.model_name} is not class-conditional: editing towards a class needs a conditional "
                    "diffusion model (train cddpm) or a vae / autoencoder (latent arithmetic)"
                )
            opts = parse_options(run, options)
            opts.pop("eta", None)
            with loaded.lock:
                result = sdedit_images(model, x, strength, samples=samples, generator=g, labels=y, **opts)
            return png_bytes(edit_sheet(result), nrow=samples + 1)
        if to_class is None:
            raise ConfigError(f"{run.model_name} edits by latent arithmetic between classes; choose a target class")
        if own is None:
            raise ConfigError(f"{run.model_name}'s test images have no labels; latent arithmetic needs them")
        with loaded.lock:
            codes = None
            if not is_conditional(model):
                made = loaded.class_codes
                if made is not None and not 0 <= to_class < len(made):
                    raise ConfigError(f"the target class must be in 0..{len(made) - 1}, got {to_class}")
                if made is None or bool(torch.isnan(made[[own, to_class]]).any()):
                    train = run.load_data("train")
                    if train.labels is None:
                        raise ConfigError("the training images have no labels; latent arithmetic needs classes")
                    k = int(train.labels.max()) + 1
                    if not 0 <= to_class < k:
                        raise ConfigError(f"the target class must be in 0..{k - 1}, got {to_class}")
                    loaded.class_codes = class_codes(
                        model, train.images, train.labels, k, classes={own, to_class}, generator=g, codes=made
                    )
                codes = loaded.class_codes
            src, tgt = torch.tensor([own]), torch.tensor([to_class])
            result = latent_edit_images(model, x, src, tgt, codes, generator=g)
        return png_bytes(edit_sheet(result), nrow=2)
