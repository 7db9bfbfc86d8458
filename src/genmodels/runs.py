"""The run directory as an object: reading a run back (``Run``, ``load_run``) and the one-writer lock.

A run directory holds::

    config.yaml      the resolved config (model_name, model, train, data)
    run.json         what was trained on what, versions, status, steps and wall time
    metrics.jsonl    one record per logging step;  tb/  TensorBoard events
    samples/         a grid every train.sample_every steps, and final.png
    checkpoints/     step-XXXXXXXX/ directories and the ``latest`` pointer
    loss.png         loss curves, written at the end
    .lock            held (flock) by the one process training into the run

Used by the CLI, the evaluation and the web app; it imports no training code. Every file it reads
goes through ``safeio``: confined to the run directory, a regular file, size-limited, UTF-8.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from genmodels import safeio
from genmodels.checkpoints import latest_checkpoint, load_checkpoint, step_dir
from genmodels.config import from_dict
from genmodels.data.config import DataConfig
from genmodels.device import pick_device
from genmodels.errors import CheckpointError, ConfigError, GenmodelsError
from genmodels.models import MODELS, make_config, model_spec
from genmodels.models.base import Generative, check_labels, check_sample_options

MAX_SAMPLES = 1_000_000  # per sample call: 1e6 28x28 images are 0.8 GB of uint8; more is a typo
MAX_SAMPLE_BATCH = 4096  # images per network call when sampling


CODES = "codes:"  # a dataset of a finished VQ-VAE run's codes: codes:RUN_DIR (``train --prior-of RUN_DIR``)


def load_data(data: DataConfig, split: str = "train") -> Any:
    """The ImageDataset a DataConfig names (``codes:RUN_DIR``: that VQ-VAE run's codes of its own split)."""
    from genmodels.data import load_dataset

    if data.dataset.startswith(CODES):
        return code_dataset(data.dataset[len(CODES) :], split)

    return load_dataset(
        data.dataset,
        split,
        data_dir=data.data_dir,
        image_size=data.image_size,
        channels=data.channels,
        limit=data.limit if split == "train" else None,
    )


@dataclass
class Run:
    """A trained (or training) run loaded back from its directory."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    model: nn.Module
    step: int
    weights: str  # "ema" or "raw"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.config["model_name"]

    @property
    def family(self) -> str:
        return MODELS[self.model_name].family

    @property
    def data_config(self) -> DataConfig:
        return from_dict(DataConfig, self.config["data"], section="data")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def sample_batches(
        self, n: int, *, seed: int = 0, labels: torch.Tensor | None = None, batch: int = 500, **options: Any
    ) -> Iterator[torch.Tensor]:
        """n samples in [0, 1] as (b, C, H, W) CPU batches; the same images as ``sample`` for a seed.

        Args:
            options: the sampling options the model declares (``model.sample_options``: a diffusion
                model's ``sampler`` and ``steps``, a GAN's ``truncation``, ...); None values are dropped.

        Raises:
            ConfigError: n or batch out of range, labels out of range, or an option the model does not take.
        """
        if not isinstance(self.model, Generative):
            raise ConfigError(
                f"{self.model_name} is a translator and draws no samples; translate images with "
                f"genmodels translate {self.path} --input test -o out.png"
            )
        if not 0 <= n <= MAX_SAMPLES:
            raise ConfigError(f"the number of samples must be in 0..{MAX_SAMPLES:,}, got {n:,}")
        if not 1 <= batch <= MAX_SAMPLE_BATCH:
            raise ConfigError(f"the sampling batch must be in 1..{MAX_SAMPLE_BATCH}, got {batch}")
        options = check_sample_options(self.model, self.model_name, options)
        check_labels(self.model, labels)
        g = torch.Generator(device=self.device).manual_seed(check_seed(seed))
        self.sampling_layout()
        with torch.no_grad():
            for i in range(0, n, batch):
                lab = labels[i : i + batch].to(self.device) if labels is not None else None
                yield self.model.sample(min(batch, n - i), generator=g, labels=lab, **options).float().cpu()

    def sampling_layout(self) -> tuple[bool, str]:
        """The memory layout this run samples in here (channels_last where measured faster: see
        ``models.sampling_layout``), applied to the model on first use; (channels_last, why)."""
        if "sampling_layout" not in self.extra:
            from genmodels.device import mode
            from genmodels.models.sampling_layout import sampling_layout

            channels_last, why = sampling_layout(self.model, self.model_name, mode())
            if channels_last:
                self.model.to(memory_format=torch.channels_last)
            self.extra["sampling_layout"] = (channels_last, why)
        return self.extra["sampling_layout"]

    def sample(
        self, n: int, *, seed: int = 0, labels: torch.Tensor | None = None, batch: int = 500, **options: Any
    ) -> torch.Tensor:
        """n samples in [0, 1], (n, C, H, W), on the CPU; deterministic for a seed (see ``sample_batches``)."""
        out = list(self.sample_batches(n, seed=seed, labels=labels, batch=batch, **options))
        if not out:
            return torch.empty(0, *self.model.config.image_shape)
        return torch.cat(out)

    def load_data(self, split: str = "train") -> Any:
        """The run's data split; for a prior over VQ-VAE codes, the VQ-VAE's images (what samples imitate)."""
        if "vq_run" in self.extra:
            return self.extra["vq_run"].load_data(split)
        return load_data(self.data_config, split)


def check_seed(seed: int) -> int:
    """A seed torch accepts (0 <= seed < 2**64), or one ConfigError line."""
    if not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"--seed must be an integer in 0..2**64-1, got {seed}")
    return seed


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.yaml``, checked to be a genmodels run config.

    Raises:
        CheckpointError: the directory or file is missing, refused (symlink out, not a regular file,
            too large, not UTF-8), not YAML, or lacks or mistypes a section.
    """
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; pass the --out directory of a training run")
    try:
        text = safeio.read_text(path, run_dir, what="run config")
    except FileNotFoundError:
        raise CheckpointError(
            f"{run_dir} is not a genmodels run (no config.yaml); pass a directory made by genmodels train"
        ) from None
    except safeio.FileRefused as e:
        raise CheckpointError(str(e)) from None
    try:
        cfg = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        raise CheckpointError(f"{path} is not valid YAML; the run directory is damaged") from None
    if not isinstance(cfg, dict) or not {"model_name", "model", "train", "data"} <= set(cfg):
        raise CheckpointError(f"{path} lacks model_name/model/train/data; the run directory is damaged")
    if not isinstance(cfg["model_name"], str) or cfg["model_name"] not in MODELS:
        raise CheckpointError(
            f"{path} names no known model (model_name: {str(cfg['model_name'])[:40]!r}); it is damaged"
        )
    for section in ("model", "train", "data"):
        if not isinstance(cfg[section], dict):
            raise CheckpointError(f"{path}: section '{section}' is not a mapping; the run directory is damaged")
    return cfg


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run's ``run.json``, or {} when it is missing, refused or damaged (it is informational only)."""
    try:
        meta = safeio.read_json(run_dir / "run.json", run_dir, what="run record")
    except (OSError, safeio.FileRefused):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    tmp = run_dir / ".run.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, run_dir / "run.json")


def load_run(path: str | os.PathLike, *, weights: str = "ema", device: str = "cpu", step: int | None = None) -> Run:
    """Load a run's model from its latest (or given step's) checkpoint, in eval mode.

    Args:
        weights: "ema" uses the EMA weights when the run kept them, "raw" the trained weights.
        device: where to put the model ("auto" picks CUDA when present).
    """
    if weights not in ("ema", "raw"):
        raise ConfigError(f"weights must be 'ema' or 'raw', got {weights!r}")
    target = pick_device(device)
    run_dir = Path(path)
    cfg = read_config(run_dir)
    ckpt_root = run_dir / "checkpoints"
    if step is not None:
        ckpt = step_dir(ckpt_root, step)
        if ckpt is None:
            have = sorted(p.name for p in ckpt_root.glob("step-*"))
            raise CheckpointError(
                f"run {run_dir} has no checkpoint at step {step}; it has: {', '.join(have) or 'none'}"
            )
    else:
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            raise CheckpointError(
                f"run {run_dir} has no checkpoint yet; train it first (genmodels train --resume {run_dir})"
            )
    loaded = load_checkpoint(ckpt)
    try:
        model_cfg = make_config(cfg["model_name"], cfg["model"])
    except ConfigError as e:
        raise CheckpointError(f"{run_dir}/config.yaml is damaged: {e}") from None
    model = model_spec(cfg["model_name"]).build(model_cfg)
    state = loaded["ema"] if weights == "ema" and loaded["ema"] is not None else loaded["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt} does not fit model {cfg['model_name']}: {first}") from None
    model.to(target).eval()
    used = "ema" if weights == "ema" and loaded["ema"] is not None else "raw"
    # The weight files' SHA-256s as state.json records them (load_checkpoint verified them): the checkpoint's identity.
    files = dict(loaded["meta"]["files"])
    run = Run(run_dir, cfg, read_meta(run_dir), model, int(loaded["meta"]["step"]), used, {"checkpoint_files": files})
    return attach_prior(run) if str(cfg["data"].get("dataset", "")).startswith(CODES) else run


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's writer lock; a second writer gets a clear error. The kernel drops the lock of
    a killed process, so a stale lock never blocks a resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / ".lock"
    if lock.is_symlink() or (lock.exists() and not lock.is_file()):
        raise GenmodelsError(f"{lock} is not a regular file; remove it to train into {run_dir}")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise GenmodelsError(
                f"run {run_dir} is being trained by {holder}; wait for it to finish or pick another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}".encode(), 0)
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- priors over VQ-VAE codes


def vq_run(path: str | os.PathLike) -> Run:
    """A finished VQ-VAE run to train or use a prior on, or one error line that says what it is instead."""
    from genmodels.models.vqvae import VQVAE

    run_dir = Path(path)
    try:
        run = load_run(run_dir)
    except GenmodelsError as e:
        raise ConfigError(f"--prior-of {run_dir}: {e}") from None
    if not isinstance(run.model, VQVAE):
        raise ConfigError(
            f"--prior-of {run_dir} is a {run.model_name} run; a prior is trained on the codes of a vq-vae run "
            f"(genmodels train vq-vae --dataset NAME --out RUN)"
        )
    status = run.meta.get("status")
    if status != "finished":
        raise ConfigError(
            f"--prior-of {run_dir}: the vq-vae run is {status or 'not finished'}; "
            f"finish it first (genmodels train --resume {run_dir})"
        )
    return run


def vq_fingerprint(run: Run) -> str:
    """SHA-256 over the step and the weight files' digests of the checkpoint a run was loaded from (the
    digests load_checkpoint verified, so no file is read again)."""
    import hashlib

    files = run.extra["checkpoint_files"]
    h = hashlib.sha256(f"step {run.step}".encode())
    for name in ("model.safetensors", "ema.safetensors"):
        if name in files:
            h.update(str(files[name]).encode())
    return h.hexdigest()


def code_dataset(path: str, split: str) -> Any:
    """The codes (uint8 (N, 1, h, w), values 0..K-1) of a finished VQ-VAE run's own ``split``, with its labels."""
    from genmodels.data.dataset import ImageDataset

    run = vq_run(path)
    images = run.load_data(split)
    model = run.model
    codes = []
    with torch.no_grad():
        for i in range(0, len(images.images), 500):
            x = torch.from_numpy(images.images[i : i + 500]).to(run.device).float().div_(255.0)
            codes.append(model.encode_codes(x).to(torch.uint8).cpu()[:, None])
    grid = torch.cat(codes).numpy() if codes else torch.empty(0, 1, *model.config.grid, dtype=torch.uint8).numpy()
    return ImageDataset(
        name=CODES + str(Path(path).resolve()),
        split=split,
        images=grid,
        labels=images.labels,
        classes=list(images.classes),
        source=f"codes of the vq-vae run {path} (step {run.step}) of {images.name} {split}",
    )


class CodePrior(nn.Module):
    """A prior over VQ-VAE codes and the VQ-VAE that decodes them: ``sample`` gives images."""

    def __init__(self, prior: nn.Module, vq: nn.Module) -> None:
        super().__init__()
        self.prior, self.vq = prior, vq
        self.config = vq.config  # image_shape: what samples look like
        self.sample_options = prior.sample_options
        self.conditional = prior.conditional

    @torch.no_grad()
    def sample_codes(self, n: int, **kwargs: Any) -> torch.Tensor:
        """(n, h, w) code indices drawn from the prior."""
        return torch.round(self.prior.sample(n, **kwargs)[:, 0] * 255.0).long()

    @torch.no_grad()
    def sample(self, n: int, **kwargs: Any) -> torch.Tensor:
        return self.vq.decode_codes(self.sample_codes(n, **kwargs))


def attach_prior(run: Run) -> Run:
    """A prior run loaded with its VQ-VAE: checks that the VQ-VAE has not changed since the prior was trained."""
    recorded = run.meta.get("prior_of") or {}
    path = run.config["data"]["dataset"][len(CODES) :]
    vq = vq_run(path)
    if recorded.get("sha256") != vq_fingerprint(vq):
        raise CheckpointError(
            f"the vq-vae run {path} changed since the prior {run.path} was trained on its codes (its checkpoint "
            f"is not the one recorded in {run.path}/run.json); train the prior again with --prior-of {path}"
        )
    vq.model.to(run.device)
    run.model = CodePrior(run.model, vq.model).eval()
    run.extra["vq_run"] = vq
    return run
