"""Training into a run directory: resolve the config, take the run's lock, train, write the records.

The run directory's layout and the read side (``Run``, ``load_run``, the lock) live in
``genmodels.runs``; this module is the write side, used by the public ``genmodels.train``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from genmodels.checkpoints import latest_checkpoint
from genmodels.config import from_dict
from genmodels.errors import ConfigError, GenmodelsError
from genmodels.models import check_size, make_config, model_spec
from genmodels.models.base import Encodable, HasPrior, Translates, is_conditional
from genmodels.runs import (
    CODES,
    Run,
    load_data,
    load_run,
    read_config,
    read_meta,
    run_lock,
    vq_fingerprint,
    vq_run,
    write_meta,
)
from genmodels.seeding import derive_seed
from genmodels.training import distributed
from genmodels.training.batches import images_tensor
from genmodels.training.config import DataConfig, TrainConfig, resolve_name, resolve_run_config
from genmodels.training.trainer import Monitor, Trainer, TrainingDiverged, TrainResult

# (data config, image shape, device) -> a class monitor for the Trainer, or None; the evaluation
# layer provides one (``genmodels.eval.monitor.class_monitor``), so training never imports it.
MonitorFactory = Callable[[DataConfig, tuple[int, ...], torch.device], Monitor | None]

# What ``train --resume`` may change: the limits and the progress bar. Everything else would make the
# resumed run a different run than the one its checkpoints belong to.
RESUMABLE = ("steps", "max_time", "progress")
# Files genmodels itself leaves in a run directory before anything else: a directory holding only these
# counts as empty for a new run.
OWN_HIDDEN = frozenset({".lock", ".run.json.tmp", ".config.yaml.tmp"})


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def versions() -> dict[str, str]:
    from genmodels import __version__

    return {"genmodels": __version__, "torch": torch.__version__, "python": platform.python_version()}


def build_model(name: str, dataset: Any = None, **model_overrides: Any) -> nn.Module:
    """Build a registered model for a dataset's image shape and classes.

    Args:
        name: a model name (``conv-vae``) or family name (``vae``).
        dataset: an ImageDataset, a dataset name, a (C, H, W) shape, or None for 1x28x28 / 10 classes.
        model_overrides: model config fields (``latent_dim=2``).
    """
    shape, classes = (1, 28, 28), 10
    if isinstance(dataset, str):
        from genmodels.data import load_dataset

        dataset = load_dataset(dataset, "train")
    if isinstance(dataset, tuple | list):
        shape = tuple(dataset)
    elif dataset is not None:
        shape, classes = dataset.shape, max(dataset.num_classes, 1)
    cfg = resolve_run_config(name, sets={f"model.{k}": v for k, v in model_overrides.items()}, shape=shape)
    model_cfg = make_config(cfg["model_name"], {**cfg["model"], "image_shape": list(shape), "num_classes": classes})
    check_size(cfg["model_name"], model_cfg)
    return model_spec(cfg["model_name"]).build(model_cfg)


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
    monitor: MonitorFactory | None = None,
) -> Run:
    """Train a model into a run directory and return the loaded Run (the CLI's ``train``).

    Args:
        model: model or family name (not needed with ``resume``).
        dataset: dataset name (``fashion-mnist``, ``digits``, ``folder:PATH``, ``npz:PATH``).
        steps, max_time, batch_size, seed: the CLI flags; they override configs.
        out: run directory; default ``runs/<model>-<dataset>-<time>``.
        config: a YAML file with model/train/data sections.
        overrides: ``{"train.lr": 1e-3, "latent_dim": 2}`` as ``--set`` gives.
        resume: a run directory to continue; its saved config is used. Only ``steps`` / ``max_time`` (the
            limits: see ``Trainer``'s schedule for what extending does) and ``progress`` may be given.
        monitor: builds the class monitor that watches GAN samples for mode collapse (the public
            ``genmodels.train`` passes the evaluation's); None trains without one.
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
        ds = None
        if info.is_main:
            try:
                cfg, run_dir, ds = _decide(model, dataset, config, overrides, resume, out, flag_train)
                if not run_dir.exists():  # made here: removed again if training never starts (a data error)
                    stack.callback(_remove_if_only_lock, run_dir)
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
        return _train_locked(run_dir, cfg, train_cfg, data_cfg, resume is not None, info, monitor, ds)


def _remove_if_only_lock(run_dir: Path) -> None:
    """Remove a run directory this call created when it holds nothing but the lock file."""
    with contextlib.suppress(OSError):
        if {p.name for p in run_dir.iterdir()} <= {".lock"}:
            (run_dir / ".lock").unlink(missing_ok=True)
            run_dir.rmdir()


def _decide(
    model: str | None,
    dataset: str | None,
    config: str | None,
    overrides: dict[str, Any] | None,
    resume: str | os.PathLike | None,
    out: str | os.PathLike | None,
    flag_train: dict[str, Any],
) -> tuple[dict[str, Any], Path, Any]:
    """The resolved config and run directory of a new or resumed run, and the training data when it
    was loaded to resolve the config (a new run), else None."""
    if resume is not None:
        run_dir = Path(resume)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise ConfigError(f"--resume {run_dir} trains into {run_dir}; drop --out (a run cannot move on resume)")
        cfg = read_config(run_dir)
        if model is not None and model != cfg["model_name"]:
            raise ConfigError(f"--resume {run_dir} trains {cfg['model_name']}, not {model}; drop the model name")
        if dataset is not None or config is not None or overrides:
            raise ConfigError("--resume continues a run with its saved config; drop --dataset/--config/--set")
        for key, value in flag_train.items():
            if key not in RESUMABLE and value != cfg["train"].get(key):
                flag = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{flag} cannot change on resume (the run was trained with {key}={cfg['train'].get(key)}); "
                    f"only --steps, --max-time and --no-progress may be given with --resume"
                )
        cfg["train"].update({k: v for k, v in flag_train.items() if k in RESUMABLE})
        return cfg, run_dir, None
    if model is None:
        raise ConfigError("name a model to train (e.g. genmodels train vae --dataset digits); see genmodels models")
    flags = {"train": flag_train, "data": {"dataset": dataset} if dataset is not None else {}}
    if dataset is not None and dataset.startswith(CODES):
        overrides = _prior_overrides(model, dataset, overrides)
    cfg = resolve_run_config(model, config_file=config, sets=overrides, flags=flags)
    run_dir = Path(out) if out is not None else default_out(cfg["model_name"], cfg["data"]["dataset"])
    _check_new_run_dir(run_dir)
    # A family's recommended settings depend on the images' shape (its by_shape rules): resolve again
    # with the shape of the training data (loaded once; _train_locked reuses it).
    ds = load_data(from_dict(DataConfig, cfg["data"], section="data"), "train")
    cfg = resolve_run_config(model, config_file=config, sets=overrides, flags=flags, shape=ds.shape)
    return cfg, run_dir, ds


def _prior_overrides(model: str, dataset: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A prior over a VQ-VAE's K codes is a K-way softmax PixelCNN / PixelSNAIL; other models are refused."""
    name, _ = resolve_name(model)
    if model_spec(name).family != "pixelcnn":
        raise ConfigError(
            f"--prior-of trains an autoregressive prior; {model} is a {model_spec(name).family} model "
            f"(use pixelsnail, gated-pixelcnn or pixelcnn)"
        )
    vq = vq_run(dataset[len(CODES) :])
    k = vq.model.config.codebook_size
    given = dict(overrides or {})
    for key, need in (("model.output", "softmax"), ("model.levels", k)):
        if key in given and given[key] != need:
            raise ConfigError(f"a prior over {k} codes needs {key}={need}, got {given[key]}; drop that --set")
    return {"model.output": "softmax", "model.levels": k, **given}


def _check_new_run_dir(run_dir: Path) -> None:
    """A new run goes into a directory that does not exist or is empty: never over a user's files or a run."""
    if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
        raise ConfigError(f"--out {run_dir} exists and is not a directory; pick another --out")
    if not run_dir.exists():
        return
    if latest_checkpoint(run_dir / "checkpoints") is not None or (run_dir / "config.yaml").exists():
        raise GenmodelsError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another --out"
        )
    if any(p.name not in OWN_HIDDEN for p in run_dir.iterdir()):
        raise GenmodelsError(
            f"--out {run_dir} is a non-empty directory that is not a genmodels run; pick a new or empty --out "
            "(nothing in it was touched)"
        )


def _train_locked(
    run_dir: Path,
    cfg: dict[str, Any],
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    resuming: bool,
    info: distributed.DistInfo | None = None,
    monitor: MonitorFactory | None = None,
    ds: Any = None,
) -> Run:
    info = info or distributed.DistInfo()
    if ds is None:
        ds = load_data(data_cfg, "train")
    model_values = {**cfg["model"], "image_shape": list(ds.shape), "num_classes": max(ds.num_classes, 1)}
    model_cfg = make_config(cfg["model_name"], model_values)
    check_size(cfg["model_name"], model_cfg)
    cfg["model"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model_cfg.__dict__.items()}
    torch.manual_seed(derive_seed(train_cfg.seed, 0x1417))  # the initial weights follow --seed too
    model = model_spec(cfg["model_name"]).build(model_cfg)
    if isinstance(model, Translates):
        model.check_data(ds.pairing, data_cfg.dataset)
    elif ds.pairing:
        raise ConfigError(
            f"{data_cfg.dataset} is a translation dataset (each example a source and a target image); "
            f"{cfg['model_name']} does not translate: train pix2pix, cyclegan or l1-unet on it"
        )
    if is_conditional(model) and ds.labels is None:
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
        monitor=monitor(data_cfg, ds.shape, device)
        if monitor and train_cfg.monitor_classes and info.is_main and not ds.pairing
        else None,
    )
    trainer.model_name = cfg["model_name"]  # names its cached step plan (genmodels doctor)
    if resuming:  # rank 0 reads and verifies the checkpoint; every process continues from the same one
        ck = distributed.broadcast(trainer.read_checkpoint() if info.is_main else None, info)
        trainer.restore(checkpoint=ck)  # False when killed before its first checkpoint: start over
    status = "failed"
    try:
        result = trainer.fit()
        status = "interrupted" if result.stopped_by == "interrupt" else "finished"
    except TrainingDiverged:
        status = "diverged"
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if info.is_main:
            meta.update(
                {"status": status, "steps": trainer.step, "wall_time_s": round(trainer.elapsed, 2), "updated": _now()}
            )
            if trainer.plan is not None:  # how the steps ran on this machine, and why
                meta["training_step"] = {"plan": trainer.plan.describe(), "why": trainer.plan.why}
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
                **({"pairing": ds.pairing, "sides": list(ds.sides)} if ds.pairing else {}),
            },
            "versions": versions(),
            "status": "running",
            "command": " ".join(sys.argv),
            "parameters": sum(p.numel() for p in model.parameters()),
            "world_size": info.world,
        }
    )
    meta.setdefault("created", _now())
    if ds.name.startswith(CODES) and not resuming:
        vq = vq_run(ds.name[len(CODES) :])
        meta["prior_of"] = {"run": str(vq.path.resolve()), "step": vq.step, "sha256": vq_fingerprint(vq)}
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
    if not isinstance(model, Encodable):
        return
    cfg = read_config(run_dir)
    data_cfg = from_dict(DataConfig, cfg["data"], section="data")
    try:
        ds = load_data(data_cfg, "test")
    except GenmodelsError:  # a folder or array without a test split: show training images
        ds = load_data(data_cfg, "train")
    write_latent_figures(model, ds, run_dir, ema=trainer.ema)


def write_latent_figures(model: Any, ds: Any, out_dir: Path, ema: Any = None, n_scatter: int = 5000) -> list[Path]:
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
            if int(model.latent_dim) == 2:
                codes = latent_scatter(
                    model,
                    x,
                    y,
                    list(ds.classes),
                    out_dir / "latent_scatter.png",
                    title=f"{ds.name} {ds.split}: codes of {len(x)} images",
                )
                has_prior = isinstance(model, HasPrior)
                manifold_sheet(model, out_dir / "manifold.png", codes=None if has_prior else codes)
                written += [out_dir / "latent_scatter.png", out_dir / "manifold.png"]
    finally:
        model.train(was_training)
    return written
