"""Run directories: creating, locking, training into, and loading them back.

A run directory holds::

    config.yaml      the resolved config (model_name, model, train, data)
    run.json         what was trained on what, versions, status, steps and wall time
    metrics.jsonl    one record per logging step;  tb/  TensorBoard events
    samples/         a grid every train.sample_every steps, and final.png
    checkpoints/     step-XXXXXXXX/ directories and the ``latest`` pointer
    loss.png         loss curves, written at the end
    .lock            held (flock) by the one process training into the run
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from genmodels.config import from_dict
from genmodels.errors import CheckpointError, ConfigError, GenmodelsError
from genmodels.models import MODELS, make_config, model_spec
from genmodels.training import distributed
from genmodels.training.checkpoint import latest_checkpoint, load_checkpoint
from genmodels.training.config import DataConfig, TrainConfig, resolve_run_config
from genmodels.training.trainer import Trainer, TrainResult, derive_seed, images_tensor, pick_device


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def versions() -> dict[str, str]:
    from genmodels import __version__

    return {"genmodels": __version__, "torch": torch.__version__, "python": platform.python_version()}


def load_data(data: DataConfig, split: str = "train") -> Any:
    """The ImageDataset a DataConfig names."""
    from genmodels.data import load_dataset

    return load_dataset(
        data.dataset,
        split,
        data_dir=data.data_dir,
        image_size=data.image_size,
        channels=data.channels,
        limit=data.limit if split == "train" else None,
    )


def build_model(name: str, dataset: Any = None, **model_overrides: Any) -> nn.Module:
    """Build a registered model for a dataset's image shape and classes.

    Args:
        name: a model name (``conv-vae``) or family name (``vae``).
        dataset: an ImageDataset, a dataset name, a (C, H, W) shape, or None for 1x28x28 / 10 classes.
        model_overrides: model config fields (``latent_dim=2``).
    """
    cfg = resolve_run_config(name, sets={f"model.{k}": v for k, v in model_overrides.items()})
    shape, classes = (1, 28, 28), 10
    if isinstance(dataset, str):
        from genmodels.data import load_dataset

        dataset = load_dataset(dataset, "train")
    if isinstance(dataset, tuple | list):
        shape = tuple(dataset)
    elif dataset is not None:
        shape, classes = dataset.shape, max(dataset.num_classes, 1)
    model_cfg = make_config(cfg["model_name"], {**cfg["model"], "image_shape": list(shape), "num_classes": classes})
    return model_spec(cfg["model_name"]).build(model_cfg)


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

    def sample(
        self, n: int, *, seed: int = 0, labels: torch.Tensor | None = None, batch: int = 500, **options: Any
    ) -> torch.Tensor:
        """n samples in [0, 1], (n, C, H, W), on the CPU; deterministic for a seed.

        Args:
            options: family-specific sampling options the model's ``sample`` accepts (a diffusion
                model's ``sampler`` and ``steps``, a GAN's ``truncation``, ...); None values are dropped.
        """
        options = check_sample_options(self.model, self.model_name, options)
        g = torch.Generator(device=self.device).manual_seed(seed)
        out = []
        with torch.no_grad():
            for i in range(0, n, batch):
                lab = labels[i : i + batch].to(self.device) if labels is not None else None
                out.append(self.model.sample(min(batch, n - i), generator=g, labels=lab, **options).float().cpu())
        return torch.cat(out) if out else torch.empty(0)

    def load_data(self, split: str = "train") -> Any:
        return load_data(self.data_config, split)


def check_sample_options(model: nn.Module, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Drop unset options and refuse any the model's ``sample`` does not take, naming the ones it does."""
    import inspect

    options = {k: v for k, v in options.items() if v is not None}
    params = inspect.signature(model.sample).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    accepted = [
        k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in ("generator", "labels")
    ]
    for key in options:
        if key not in accepted:
            takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes no sampling options"
            raise ConfigError(f"{name} does not take the sampling option '{key}'; {takes}")
    return options


def read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist; pass the --out directory of a training run")
    if not path.exists():
        raise CheckpointError(
            f"{run_dir} is not a genmodels run (no config.yaml); pass a directory made by genmodels train"
        )
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise CheckpointError(f"{path} is not valid YAML; the run directory is damaged") from None
    if not isinstance(cfg, dict) or not {"model_name", "model", "train", "data"} <= set(cfg):
        raise CheckpointError(f"{path} lacks model_name/model/train/data; the run directory is damaged")
    return cfg


def read_meta(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


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
    run_dir = Path(path)
    cfg = read_config(run_dir)
    ckpt_root = run_dir / "checkpoints"
    if step is not None:
        ckpt = ckpt_root / f"step-{step:08d}"
        if not ckpt.is_dir():
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
    model_cfg = make_config(cfg["model_name"], cfg["model"])
    model = model_spec(cfg["model_name"]).build(model_cfg)
    state = loaded["ema"] if weights == "ema" and loaded["ema"] is not None else loaded["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt} does not fit model {cfg['model_name']}: {first}") from None
    model.to(pick_device(device)).eval()
    used = "ema" if weights == "ema" and loaded["ema"] is not None else "raw"
    return Run(run_dir, cfg, read_meta(run_dir), model, int(loaded["meta"]["step"]), used)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's writer lock; a second writer gets a clear error. The kernel drops the lock of
    a killed process, so a stale lock never blocks a resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
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


def default_out(model_name: str, dataset: str) -> Path:
    slug = dataset.replace(":", "-").replace("/", "_").strip("-_")[:40]
    return Path("runs") / f"{model_name}-{slug}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(
    model: str | None = None,
    dataset: str | None = None,
    *,
    steps: int | None = None,
    max_time: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    out: str | os.PathLike | None = None,
    config: str | None = None,
    overrides: dict[str, Any] | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
) -> Run:
    """Train a model into a run directory and return the loaded Run (the CLI's ``train``).

    Args:
        model: model or family name (not needed with ``resume``).
        dataset: dataset name (``fashion-mnist``, ``digits``, ``folder:PATH``, ``npz:PATH``).
        steps, max_time, batch_size, seed: the CLI flags; they override configs.
        out: run directory; default ``runs/<model>-<dataset>-<time>``.
        config: a YAML file with model/train/data sections.
        overrides: ``{"train.lr": 1e-3, "latent_dim": 2}`` as ``--set`` gives.
        resume: a run directory to continue; its saved config is used (steps / max_time may extend it).
    """
    flag_train: dict[str, Any] = {k: v for k, v in (("batch_size", batch_size), ("seed", seed)) if v is not None}
    if steps is not None or max_time is not None:  # --steps and --max-time replace each other
        flag_train.update(steps=steps, max_time=max_time)
    if not progress:
        flag_train["progress"] = False
    info = distributed.from_env()
    distributed.init_group(info)
    with contextlib.ExitStack() as stack:
        if info.enabled:  # leave the process group cleanly, or gloo aborts the process at exit
            stack.callback(distributed.shutdown)
        # Rank 0 resolves the config, names the run and takes its lock; the others follow its decision
        # (or stop with its error) instead of racing it.
        decision: tuple[Any, ...] = ("error", "rank 0 did not decide")
        if info.is_main:
            try:
                cfg, run_dir = _decide(model, dataset, config, overrides, resume, out, flag_train)
                stack.enter_context(run_lock(run_dir))
                decision = ("ok", cfg, str(run_dir))
            except GenmodelsError as e:
                decision = ("error", str(e))
                if not info.enabled:
                    raise
        decision = distributed.broadcast(decision, info)
        if decision[0] == "error":
            raise GenmodelsError(decision[1])
        cfg, run_dir = decision[1], Path(decision[2])
        train_cfg = from_dict(TrainConfig, cfg["train"], section="train")
        data_cfg = from_dict(DataConfig, cfg["data"], section="data")
        return _train_locked(run_dir, cfg, train_cfg, data_cfg, resume is not None, info)


def _decide(
    model: str | None,
    dataset: str | None,
    config: str | None,
    overrides: dict[str, Any] | None,
    resume: str | os.PathLike | None,
    out: str | os.PathLike | None,
    flag_train: dict[str, Any],
) -> tuple[dict[str, Any], Path]:
    """The resolved config and run directory of a new or resumed run."""
    if resume is not None:
        run_dir = Path(resume)
        cfg = read_config(run_dir)
        if model is not None and model != cfg["model_name"]:
            raise ConfigError(f"--resume {run_dir} trains {cfg['model_name']}, not {model}; drop the model name")
        cfg["train"].update(flag_train)
        return cfg, run_dir
    if model is None:
        raise ConfigError("name a model to train (e.g. genmodels train vae --dataset digits); see genmodels models")
    flags = {"train": flag_train, "data": {"dataset": dataset} if dataset is not None else {}}
    cfg = resolve_run_config(model, config_file=config, sets=overrides, flags=flags)
    run_dir = Path(out) if out is not None else default_out(cfg["model_name"], cfg["data"]["dataset"])
    if latest_checkpoint(run_dir / "checkpoints") is not None:
        raise GenmodelsError(
            f"{run_dir} already holds a trained run; continue it with --resume {run_dir} or pick another --out"
        )
    return cfg, run_dir


def _class_monitor(
    data_cfg: DataConfig, shape: tuple[int, ...], device: torch.device
) -> Callable[[torch.Tensor], dict[str, float]] | None:
    """samples -> class coverage and KL against the test split, on the dataset's feature net; None
    (and one note) when the dataset has no feature net of this image shape."""
    from genmodels.eval.features import load_feature_net, shipped_feature_nets
    from genmodels.eval.metrics import class_coverage

    dataset = data_cfg.dataset
    card = shipped_feature_nets().get(dataset)
    if card is None or tuple(card["config"]["image_shape"]) != tuple(shape):
        print(f"note: no feature net for {dataset} at {tuple(shape)}; class coverage is not monitored", file=sys.stderr)
        return None
    net = load_feature_net(dataset, device)
    test = load_data(data_cfg, "test")
    real = net.classify(torch.from_numpy(test.images[:2000]).to(device).float() / 255.0)
    k = int(card["config"]["num_classes"])

    def monitor(samples: torch.Tensor) -> dict[str, float]:
        cc = class_coverage(net.classify(samples.float()), real, k)
        return {"class_coverage": float(cc["covered"]), "class_kl": float(cc["kl"])}

    return monitor


def _train_locked(
    run_dir: Path,
    cfg: dict[str, Any],
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    resuming: bool,
    info: distributed.DistInfo | None = None,
) -> Run:
    info = info or distributed.DistInfo()
    ds = load_data(data_cfg, "train")
    model_values = {**cfg["model"], "image_shape": list(ds.shape), "num_classes": max(ds.num_classes, 1)}
    model_cfg = make_config(cfg["model_name"], model_values)
    cfg["model"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model_cfg.__dict__.items()}
    torch.manual_seed(derive_seed(train_cfg.seed, 0x1417))  # the initial weights follow --seed too
    model = model_spec(cfg["model_name"]).build(model_cfg)
    if getattr(model, "conditional", False) and ds.labels is None:
        raise ConfigError(f"{cfg['model_name']} is class-conditional but dataset {data_cfg.dataset} has no labels")
    meta: dict[str, Any] = {}
    if info.is_main:
        _write_config(run_dir, cfg)
        meta = _start_meta(run_dir, cfg, ds, model, resuming, info)
    labels = torch.from_numpy(ds.labels) if ds.labels is not None else None
    device = distributed.device_for(info, train_cfg.device)
    trainer = Trainer(
        model,
        images_tensor(ds.images),
        labels,
        train_cfg,
        run_dir,
        rank=info.rank,
        world=info.world,
        device=device,
        monitor=_class_monitor(data_cfg, ds.shape, device) if train_cfg.monitor_classes and info.is_main else None,
    )
    if resuming:  # rank 0 reads and verifies the checkpoint; every process continues from the same one
        ck = distributed.broadcast(trainer.read_checkpoint() if info.is_main else None, info)
        trainer.restore(checkpoint=ck)  # False when killed before its first checkpoint: start over
    status = "diverged"
    try:
        result = trainer.fit()
        status = "interrupted" if result.stopped_by == "interrupt" else "finished"
    finally:
        if info.is_main:
            meta.update(
                {"status": status, "steps": trainer.step, "wall_time_s": round(trainer.elapsed, 2), "updated": _now()}
            )
            if trainer.history:
                meta["last_metrics"] = trainer.history[-1]
            write_meta(run_dir, meta)
    trainer.engine = None  # drop DistributedDataParallel (and its hold on the process group) before leaving it
    if not info.is_main:
        distributed.barrier(info)
        run = Run(run_dir, cfg, meta, trainer.model.eval(), trainer.step, "raw", extra={"result": result})
    else:
        _finish(run_dir, trainer, result)
        distributed.barrier(info)
        run = load_run(run_dir, device=str(trainer.device))
        run.extra["result"] = result
    # Every process leaves the group together: a gloo process that tears down while a peer is still busy
    # (rank 0 loading the finished run) is aborted by gloo ("terminate called without an active exception").
    distributed.barrier(info)
    return run


def _start_meta(
    run_dir: Path, cfg: dict[str, Any], ds: Any, model: nn.Module, resuming: bool, info: distributed.DistInfo
) -> dict[str, Any]:
    meta = read_meta(run_dir) if resuming else {}
    meta.update(
        {
            "model_name": cfg["model_name"],
            "family": model_spec(cfg["model_name"]).family,
            "dataset": {
                "name": ds.name,
                "shape": list(ds.shape),
                "classes": list(ds.classes),
                "n_train": len(ds),
                "source": ds.source,
            },
            "versions": versions(),
            "status": "running",
            "command": " ".join(sys.argv),
            "parameters": sum(p.numel() for p in model.parameters()),
            "world_size": info.world,
        }
    )
    meta.setdefault("created", _now())
    write_meta(run_dir, meta)
    return meta


def _write_config(run_dir: Path, cfg: dict[str, Any]) -> None:
    tmp = run_dir / ".config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.replace(tmp, run_dir / "config.yaml")


def _finish(run_dir: Path, trainer: Trainer, result: TrainResult) -> None:
    """End-of-run pictures: loss curves, and the latent maps of 2-D latent models."""
    from genmodels.training.logger import read_metrics
    from genmodels.viz import plot_losses

    records = read_metrics(run_dir / "metrics.jsonl")
    if records:
        plot_losses(records, run_dir / "loss.png", title=f"{run_dir.name} ({result.step} steps)")
    model = trainer.model
    if not callable(getattr(model, "reconstruct", None)):
        return
    cfg = read_config(run_dir)
    data_cfg = from_dict(DataConfig, cfg["data"], section="data")
    try:
        ds = load_data(data_cfg, "test")
    except GenmodelsError:  # a folder or array without a test split: show training images
        ds = load_data(data_cfg, "train")
    write_latent_figures(model, ds, run_dir, ema=trainer.ema)


def write_latent_figures(
    model: nn.Module, ds: Any, out_dir: Path, ema: Any = None, n_scatter: int = 5000
) -> list[Path]:
    """Reconstructions of test images, and for a 2-D latent the scatter and manifold figures."""
    from genmodels.viz import latent_scatter, manifold_sheet, reconstruction_sheet

    x = torch.from_numpy(ds.images[:n_scatter]).float().div_(255.0)
    y = torch.from_numpy(ds.labels[:n_scatter]) if ds.labels is not None else None
    written = [out_dir / "reconstructions.png"]
    was_training = model.training
    model.eval()
    try:
        with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
            reconstruction_sheet(model, x[:50], y[:50] if y is not None else None, written[0])
            if int(getattr(model, "latent_dim", 0)) == 2:
                codes = latent_scatter(
                    model,
                    x,
                    y,
                    list(ds.classes),
                    out_dir / "latent_scatter.png",
                    title=f"{ds.name} {ds.split}: codes of {len(x)} images",
                )
                has_prior = callable(getattr(model, "nll", None))
                manifold_sheet(model, out_dir / "manifold.png", codes=None if has_prior else codes)
                written += [out_dir / "latent_scatter.png", out_dir / "manifold.png"]
    finally:
        model.train(was_training)
    return written
