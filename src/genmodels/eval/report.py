"""One evaluation protocol for every family: sample quality on the feature network, likelihoods where
defined, classifier tests for conditional models; written as ``eval.json`` and ``eval.md``.

Samples are quantised to uint8 before they are scored, so a run evaluated directly and the same
samples saved with ``genmodels sample -o FILE.npz`` and scored with ``genmodels evaluate --samples``
go through exactly the same code and get exactly the same numbers.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.errors import ConfigError, DataError, GenmodelsError
from genmodels.eval.likelihood import likelihood_report

GRID_NAME = "eval_samples.png"  # the sample grid the leaderboard shows
GRID_N = 64


def sample_metrics(
    samples: torch.Tensor,
    net: Any,
    ref: Any,
    *,
    train_images: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every sample-quality metric of uint8 samples (M, C, H, W) against a real reference.

    Args:
        net: the dataset's FeatureNet.
        ref: the ``Reference`` of the real test images (features, statistics, radii, images).
        train_images: the training split (uint8) for the memorisation check; None skips it.

    Returns:
        ``{"fid", "kid", "precision", "recall", "density", "coverage", "class_coverage",
        "memorisation", "n_samples", "n_reference", "seconds"}``; ``seconds`` splits the time
        into features and each metric (sampling is timed separately by the caller).
    """
    from genmodels.eval.metrics import class_coverage, frechet_distance, kid, memorisation, prdc
    from genmodels.eval.metrics import feature_statistics as stats
    from genmodels.eval.reference import pixel_nn_distances, train_nn_distances

    if samples.dtype != torch.uint8:
        raise ConfigError("sample_metrics takes uint8 samples (quantise with genmodels.viz.to_uint8)")
    secs: dict[str, float] = {}
    t = time.perf_counter()
    feats, classes = net.features_and_classes(samples)
    secs["features"] = time.perf_counter() - t
    if not torch.isfinite(feats).all():
        raise GenmodelsError("the feature network gave non-finite features for these samples; are they NaN?")
    out: dict[str, Any] = {"n_samples": len(samples), "n_reference": ref.n}
    t = time.perf_counter()
    out["fid"] = frechet_distance(*stats(feats), ref.mu, ref.sigma)
    secs["fid"] = time.perf_counter() - t
    t = time.perf_counter()
    out["kid"] = kid(ref.features, feats, seed=seed)
    secs["kid"] = time.perf_counter() - t
    t = time.perf_counter()
    out.update(prdc(ref.features, feats, k_pr=3, k_dc=5, real_radii=ref.radii))
    secs["prdc"] = time.perf_counter() - t
    if classes is not None and ref.classes is not None:
        t = time.perf_counter()
        out["class_coverage"] = class_coverage(classes, ref.classes, net.config.num_classes)
        secs["class_coverage"] = time.perf_counter() - t
    if train_images is not None:
        t = time.perf_counter()
        test_nn = train_nn_distances(ref, train_images)
        secs["memorisation_reference"] = time.perf_counter() - t
        t = time.perf_counter()
        out["memorisation"] = memorisation(pixel_nn_distances(samples, train_images), test_nn)
        out["memorisation"]["n_train"] = len(train_images)
        secs["memorisation"] = time.perf_counter() - t
    out["seconds"] = {k: round(v, 2) for k, v in secs.items()}
    return out


FEATURES = ("auto", "inception")


def _feature_setup(
    dataset: Any, n: int, device: str, features: str = "auto", inception_weights: str | None = None
) -> tuple[Any, Any, str | None]:
    """(feature net, reference) for a test split, or (None, None, why not).

    Args:
        features: "auto" (the dataset's shipped feature net) or "inception" (optional, see eval.inception).
    """
    from genmodels.eval.features import load_feature_net
    from genmodels.eval.reference import real_reference

    if features not in FEATURES:
        from genmodels.errors import unknown

        raise unknown("feature space", features, FEATURES)
    if features == "inception":
        from genmodels.eval.inception import load_inception

        net = load_inception(inception_weights, device=device)  # a missing file is the user's error: raise
    else:
        try:
            net = load_feature_net(dataset.name, device=device)
        except GenmodelsError as e:
            return None, None, str(e)
    if net.config.image_shape is not None and tuple(net.config.image_shape) != tuple(dataset.shape):
        why = (
            f"the {dataset.name} feature net takes {list(net.config.image_shape)} images but the run's data are "
            f"{list(dataset.shape)} (a data.image_size / data.channels override); sample metrics need the native size"
        )
        return None, None, why
    t = time.perf_counter()
    ref = real_reference(net, dataset, n=n)
    net.reference_seconds = time.perf_counter() - t
    return net, ref, None


def _load_train(load: Any) -> tuple[np.ndarray | None, str | None]:
    try:
        return load().images, None
    except (DataError, GenmodelsError) as e:
        return None, f"training images not available ({e}); memorisation check skipped"


def _net_info(net: Any) -> dict[str, Any]:
    card = net.card
    return {
        "dataset": net.dataset,
        "sha256": net.sha256,
        "feature_dim": net.feature_dim,
        "test_accuracy": card.get("test_accuracy"),
        "train_data": card.get("train_data"),
    }


def evaluate_run(
    run_dir: str | os.PathLike,
    *,
    n: int = 10000,
    k: int = 1000,
    nll_n: int | None = None,
    seed: int = 0,
    device: str = "auto",
    options: dict[str, Any] | None = None,
    cas: bool = True,
    cas_samples: int = 10000,
    weights: str = "ema",
    features: str = "auto",
    inception_weights: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run on its dataset's test split and write ``eval.json`` and ``eval.md`` into it.

    Args:
        n: samples to draw and real test images to compare them with (capped at the test split's size).
        k: importance samples per image for the IWAE bound.
        nll_n: test images for the likelihood (default min(n, 1000): the bound with k = 1000 costs k
            decoder passes per image).
        options: sampling options for the model's ``sample`` (sampler, steps, guidance, ...).
        cas: run the classifier tests (CAS, augmentation) for class-conditional models.
        cas_samples: generated images those tests train on (capped at the training split's size).
        features: "auto" (the dataset's shipped feature net) or "inception" (needs pytorch-fid and the
            weights file ``inception_weights``; see ``genmodels.eval.inception``).

    Returns:
        the report written to eval.json; ``summary_lines`` is what eval.md and the CLI show.
    """
    from genmodels.runs import load_run

    if n < 1 or k < 1 or (nll_n is not None and nll_n < 1):
        raise ConfigError(f"-n, --k and --nll-n must be >= 1, got n={n}, k={k}, nll_n={nll_n}")
    run = load_run(run_dir, device=device, weights=weights)
    ds = run.load_data("test")
    n_eval = min(n, len(ds))
    x = torch.from_numpy(ds.images[:n_eval]).float().div_(255.0)
    y = torch.from_numpy(ds.labels[:n_eval]) if ds.labels is not None else None
    nll_n = min(nll_n or min(n_eval, 1000), n_eval)
    report: dict[str, Any] = {
        "run": str(run.path),
        "model_name": run.model_name,
        "family": run.family,
        "step": run.step,
        "weights": run.weights,
        "dataset": ds.name,
        "split": ds.split,
        "n": n_eval,
        "wall_time_s": run.meta.get("wall_time_s"),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "sampling_options": options or {},
    }
    lines = [f"{run.model_name} on {ds.name} {ds.split}, step {run.step} ({run.weights} weights), {n_eval} samples"]
    model = run.model
    if callable(getattr(model, "nll", None)):
        _add_likelihood(report, lines, model, x[:nll_n], y[:nll_n] if y is not None else None, seed, k)
    if callable(getattr(model, "reconstruct", None)):
        report["reconstruction_mse"] = _reconstruction_mse(model, x, y, run.device)
        lines.append(f"  reconstruction MSE {report['reconstruction_mse']:.5f} (pixels in [0, 1])")
    conditional = bool(getattr(model, "conditional", False))
    labels = None
    if conditional and y is not None:
        labels = y  # the test split's own labels: the samples' class histogram then matches the data's
    t0 = time.perf_counter()
    samples = run.sample(n_eval, seed=seed, labels=labels, **(options or {}))
    secs = time.perf_counter() - t0
    report["seconds_per_1000_samples"] = round(secs * 1000 / n_eval, 3)
    lines.append(f"  sampling: {report['seconds_per_1000_samples']:.2f} s per 1,000 samples")
    from genmodels.viz import save_grid, to_uint8

    samples_u8 = torch.from_numpy(to_uint8(samples))
    save_grid(samples_u8[:GRID_N].numpy(), run.path / GRID_NAME, nrow=8)
    _add_sample_metrics(
        report, lines, samples_u8, ds, n_eval, seed, device, lambda: run.load_data("train"), features, inception_weights
    )
    if conditional and cas and "fid" in report and features == "auto":
        report["classifier_tests"] = _classifier_tests(run, ds, seed, device, cas_samples)
        lines += _cas_lines(report["classifier_tests"])
    report["summary_lines"] = lines
    write_report(run.path, report)
    return report


def _add_likelihood(
    report: dict[str, Any], lines: list[str], model: Any, x: torch.Tensor, y: torch.Tensor | None, seed: int, k: int
) -> None:
    if not getattr(model, "has_likelihood", True):
        lines.append(
            "  no likelihood: a Bernoulli decoder on grey levels is not a distribution of the data "
            "(train with model.binarize=dynamic or model.likelihood=logistic for one)"
        )
        return
    lik = likelihood_report(model, x, y, seed=seed, k=k)
    report["likelihood"] = lik
    opts = ", ".join(f"{key}={v}" for key, v in lik["options"].items())
    for name in lik["nats"]:
        lines.append(
            f"  test NLL ({name}{', ' + opts if opts else ''}) {lik['nats'][name]:.2f} nats "
            f"({lik['bpd'][name]:.4f} bits/dim) on {lik['n']} {lik['data']} images"
        )


def _reconstruction_mse(model: Any, x: torch.Tensor, y: torch.Tensor | None, dev: torch.device) -> float:
    use_y = getattr(model, "conditional", False) and y is not None
    with torch.no_grad():
        rec = torch.cat(
            [
                model.reconstruct(x[i : i + 500].to(dev), **({"y": y[i : i + 500].to(dev)} if use_y else {}))
                .float()
                .cpu()
                for i in range(0, len(x), 500)
            ]
        )
    return float((rec - x).square().mean())


def _add_sample_metrics(
    report: dict[str, Any],
    lines: list[str],
    samples_u8: torch.Tensor,
    ds: Any,
    n_ref: int,
    seed: int,
    device: str,
    load_train: Any,
    features: str = "auto",
    inception_weights: str | None = None,
) -> None:
    t0 = time.perf_counter()
    net, ref, why = _feature_setup(ds, n_ref, device, features, inception_weights)
    if net is None:
        report["sample_metrics_skipped"] = why
        lines.append(f"  sample metrics skipped: {why}")
        return
    train_images, why_train = _load_train(load_train)
    m = sample_metrics(samples_u8, net, ref, train_images=train_images, seed=seed)
    report.update(m)
    report["feature_net"] = _net_info(net)
    report["metric_seconds"] = round(time.perf_counter() - t0, 2)
    report["reference_seconds"] = round(getattr(net, "reference_seconds", 0.0), 2)
    kd = m["kid"]
    space = (
        "Inception-v3 pool3 features"
        if net.dataset == "inception"
        else f"features of the {ds.name} feature net (test accuracy {net.card.get('test_accuracy')})"
    )
    lines.append(
        f"  FID {m['fid']:.3f}   KID {1000 * kd['mean']:.3f} +- {1000 * kd['std']:.3f} (x 1e-3)   "
        f"on {net.feature_dim}-d {space}"
    )
    lines.append(
        f"  precision {m['precision']:.3f}  recall {m['recall']:.3f} (k=3)   "
        f"density {m['density']:.3f}  coverage {m['coverage']:.3f} (k=5)"
    )
    if "class_coverage" in m:
        cc = m["class_coverage"]
        lines.append(f"  classes covered {cc['covered']:.2f}   KL(sample classes || data classes) {cc['kl']:.4f} nats")
    if "memorisation" in m:
        mm = m["memorisation"]
        lines.append(
            f"  memorisation: nearest-training-image distance {mm['sample_nn_mean']:.3f} (test images "
            f"{mm['test_nn_mean']:.3f}, ratio {mm['ratio']:.3f}); near copies {100 * mm['near_copies']:.2f}%"
        )
    else:
        report["memorisation_skipped"] = why_train
        lines.append(f"  {why_train}")
    lines.append(
        f"  metrics took {report['metric_seconds']:.1f} s for {m['n_samples']} samples "
        f"(reference statistics {report['reference_seconds']:.1f} s, cached after the first time)"
    )


def _classifier_tests(run: Any, test: Any, seed: int, device: str, n_generated: int) -> dict[str, Any]:
    from genmodels.eval.classifier_tests import classifier_tests

    train = run.load_data("train")
    if train.labels is None or test.labels is None:
        return {"skipped": "the dataset has no labels"}
    k = int(run.model.config.num_classes)
    n_gen = min(n_generated, len(train))
    return classifier_tests(
        lambda labels: run.sample(len(labels), seed=seed + 1, labels=labels),
        train.images,
        train.labels,
        test.images,
        test.labels,
        num_classes=k,
        dataset=test.name,
        n_generated=n_gen,
        small_per_class=max(1, min(100, len(train) // (10 * k))),
        seed=seed,
        device=device,
    )


def _cas_lines(ct: dict[str, Any]) -> list[str]:
    if "cas" not in ct:
        return [f"  classifier tests skipped: {ct.get('skipped')}"]
    return [
        f"  classification accuracy score (trained on {ct['n_generated']} samples): {ct['cas']:.4f}  "
        f"(trained on {ct['n_real']} real images: {ct['real']:.4f})",
        f"  augmentation: {ct['n_small_real']} real images {ct['small_real']:.4f} -> plus the samples "
        f"{ct['small_real_plus_generated']:.4f} ({100 * ct['augmentation_gain']:+.2f} points)",
    ]


def load_samples_file(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (N, C, H, W) and optional labels from an .npz as ``genmodels sample -o FILE.npz`` writes."""
    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise ConfigError(f"--samples takes an .npz file (key 'images', uint8 N x C x H x W), got {p}")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {key: f[key] for key in ("images", "labels") if key in f.files}
            files = list(f.files)
    except (OSError, ValueError) as e:
        raise GenmodelsError(f"cannot read {p}: {e}; write it with genmodels sample -o FILE.npz") from None
    if "images" not in arrays:
        raise ConfigError(f"{p} has no 'images' array (it has: {', '.join(files)}); save samples under 'images'")
    images, labels = arrays["images"], arrays.get("labels")
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ConfigError(f"{p}: 'images' must be uint8 N x C x H x W, got {images.dtype} {list(images.shape)}")
    return torch.from_numpy(np.ascontiguousarray(images)), (torch.from_numpy(labels) if labels is not None else None)


def evaluate_samples(
    samples: str | os.PathLike | torch.Tensor,
    dataset: str,
    *,
    out: str | os.PathLike | None = None,
    n: int = 10000,
    name: str | None = None,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    meta: dict[str, Any] | None = None,
    features: str = "auto",
    inception_weights: str | None = None,
) -> dict[str, Any]:
    """Score a file (or tensor) of samples against a dataset's test split with the run protocol.

    Args:
        samples: an .npz path (key 'images', uint8 N x C x H x W) or images (uint8, or float in [0, 1]).
        dataset: the dataset whose test split is the reference (e.g. "fashion-mnist").
        out: directory for eval.json / eval.md / eval_samples.png (default: the file's folder).
        n: samples to score (the first n) and test images to compare with.
        name: the model's name in the report and the leaderboard (default: the file's stem).
        meta: extra report fields (e.g. ``{"family": "baseline", "step": 2300, "wall_time_s": 300}``).
        features, inception_weights: as ``evaluate_run`` takes them.
    """
    from genmodels.data import load_dataset
    from genmodels.viz import save_grid, to_uint8

    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    if isinstance(samples, str | os.PathLike):
        images, _ = load_samples_file(samples)
        out_dir = Path(out) if out is not None else Path(samples).resolve().parent
        name = name or Path(samples).stem
    else:
        images = torch.from_numpy(to_uint8(samples))
        if out is None:
            raise ConfigError("evaluate_samples of a tensor needs out=DIR for eval.json")
        out_dir, name = Path(out), name or "samples"
    test = load_dataset(dataset, "test", data_dir=data_dir)
    if tuple(images.shape[1:]) != tuple(test.shape):
        raise ConfigError(
            f"samples are {list(images.shape[1:])} images but {dataset} has {list(test.shape)}; "
            f"pass the dataset the samples imitate"
        )
    n_eval = min(n, len(images), len(test))
    images = images[:n_eval]
    report: dict[str, Any] = {
        "run": str(out_dir),
        "model_name": name,
        "family": "samples",
        "step": None,
        "dataset": test.name,
        "split": test.split,
        "n": n_eval,
        "wall_time_s": None,
        **(meta or {}),
    }
    lines = [f"{report['model_name']} on {test.name} {test.split}, {n_eval} samples from a file"]
    out_dir.mkdir(parents=True, exist_ok=True)
    save_grid(images[:GRID_N].numpy(), out_dir / GRID_NAME, nrow=8)
    _add_sample_metrics(
        report,
        lines,
        images,
        test,
        n_eval,
        seed,
        device,
        lambda: load_dataset(dataset, "train", data_dir=data_dir),
        features,
        inception_weights,
    )
    if "fid" not in report:
        raise GenmodelsError(f"cannot score samples of {dataset}: {report.get('sample_metrics_skipped')}")
    report["summary_lines"] = lines
    write_report(out_dir, report)
    return report


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    """Write ``eval.json`` (atomically) and ``eval.md`` into run_dir."""
    tmp = run_dir / ".eval.json.tmp"
    tmp.write_text(json.dumps({k: _plain(v) for k, v in report.items()}, indent=1, default=_plain))
    os.replace(tmp, run_dir / "eval.json")
    md = [
        "# Evaluation",
        "",
        *[f"    {line}" if i else f"**{line}**" for i, line in enumerate(report["summary_lines"])],
    ]
    if (run_dir / GRID_NAME).exists():
        md += ["", f"![samples]({GRID_NAME})"]
    (run_dir / "eval.md").write_text("\n".join(md) + "\n")


__all__ = ["evaluate_run", "evaluate_samples", "load_samples_file", "sample_metrics", "write_report"]
