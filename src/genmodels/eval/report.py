"""One evaluation protocol for every family: sample quality on the feature network, likelihoods where
defined, classifier tests for conditional models; written as ``eval.json`` and ``eval.md``.

Samples are quantised to uint8 before they are scored, so a run evaluated directly and the same
samples saved with ``genmodels sample -o FILE.npz`` and scored with ``genmodels evaluate --samples``
go through exactly the same code and get exactly the same numbers.

A plain evaluation sizes its two model-dependent costs to time budgets, so it ends in about a minute
on two CPU cores whatever the family: the sample count (up to 10,000; fewer, in steps of the ladder
``SAMPLE_COUNTS``, when the sampler's measured speed says more would take over ``SAMPLE_BUDGET_S``;
when not even the fewest fit, only a probe's grid and its pixel statistics) and
the likelihood (a cheap estimate, stopped after ``LIKELIHOOD_BUDGET_S``). An explicit ``n`` fixes the
sample count, and explicit ``k`` / ``nll_n`` or ``full_likelihood`` fix the likelihood estimate; the
report records what was computed and why.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genmodels.errors import ConfigError, DataError, GenmodelsError
from genmodels.eval.likelihood import likelihood_report
from genmodels.models.base import Encodable, HasLikelihood, is_conditional

GRID_NAME = "eval_samples.png"  # the sample grid the leaderboard shows
GRID_N = 64
DEFAULT_N = 10000  # samples of a plain evaluation when sampling is fast enough
# The sample counts a plain evaluation picks from (the largest that fits SAMPLE_BUDGET_S); FID and
# precision / recall of fewer than the last are too biased to rank models, so below it only the grid.
SAMPLE_COUNTS = (10000, 5000, 2000, 1000, 500)
SAMPLE_BUDGET_S = 30.0
# Samples drawn to time the sampler before committing to hundreds; when not even the fewest of SAMPLE_COUNTS
# fit, these are the evaluation's samples (a 4 x 4 grid). An autoregressive sampler makes H x W sequential
# passes whatever the batch, so even this many cost it tens of seconds on two cores.
PROBE_N = 16
# A probe's small batch, with the first call's set-up, costs a batched sampler 2.5-3x per image what the
# batches of 500 after it do (measured on a busy 2-core machine: DDPM U-Net 158-196 vs 59 ms, conv VAE 9 vs
# 3.3 ms, DCGAN 11 vs 4.4 ms), so the fewest are tried when the probe projects them under PROBE_SLACK budgets;
# the draw itself then stops on measured time. (A PixelCNN's probe projects hours.)
PROBE_SLACK = 4.0
LIKELIHOOD_BUDGET_S = 10.0
# The likelihood of a plain evaluation: a VAE's -ELBO and IWAE bound with k = 20 on up to 500 test
# images (about 10,000 decoder passes), within LIKELIHOOD_BUDGET_S; the full one is the tight IWAE bound.
CHEAP_K, CHEAP_NLL_N = 20, 500
FULL_K, FULL_NLL_N = 1000, 1000
RECONSTRUCTION_N = 1000  # test images for the reconstruction error: its mean is stable to <1% by then
CAS_SAMPLES = 2000  # generated images the classifier tests of a plain evaluation train on
KID_SUBSETS, KID_SUBSET = 100, 1000
PROGRESS_EVERY_S = 10.0  # seconds between plain progress lines when stderr is not a terminal


class Progress:
    """Progress of one long step on stderr: a tqdm bar on a terminal, else a plain line at most every
    ``PROGRESS_EVERY_S`` seconds (a log file gets no carriage-return bars). Call it with the count done.

    A timer thread keeps it alive between counts, so a step stuck in one long call (16 PixelCNN samples are
    one call of about a minute on two cores) still shows its elapsed time.
    """

    def __init__(self, total: int, what: str, *, enabled: bool = True, unit: str = "img") -> None:
        self.total, self.what, self.enabled = total, what, enabled
        self.t0 = self.last = time.monotonic()
        self.done = 0
        self.bar = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if enabled:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=what, unit=unit, disable=None, leave=False, mininterval=1.0)
            self.bar = None if bar.disable else bar
            threading.Thread(target=self._tick, daemon=True).start()

    def _tick(self) -> None:
        while not self._closed.wait(max(PROGRESS_EVERY_S, 0.5)):
            with self._lock:
                if self._closed.is_set():
                    return
                if self.bar is not None:
                    self.bar.refresh()  # moves the elapsed time on
                elif time.monotonic() - self.last >= PROGRESS_EVERY_S:
                    self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        print(
            f"evaluate: {self.what} {self.done:,}/{self.total:,} ({self.last - self.t0:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    def __call__(self, done: int) -> None:
        with self._lock:
            step, self.done = done - self.done, done
            if self.bar is not None:
                self.bar.update(step)
            elif self.enabled and time.monotonic() - self.last >= PROGRESS_EVERY_S and done < self.total:
                self._line()
        if done >= self.total:
            self.close()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def sample_metrics(
    samples: torch.Tensor,
    net: Any,
    ref: Any,
    *,
    train_images: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Every sample-quality metric of uint8 samples (M, C, H, W) against a real reference.

    Args:
        net: the dataset's FeatureNet.
        ref: the ``Reference`` of the real test images (features, statistics, radii, images).
        train_images: the training split (uint8) for the memorisation check; None skips it.
        progress: show the progress of the features and the nearest-training-image search on stderr.

    Returns:
        ``{"fid", "kid", "precision", "recall", "density", "coverage", "class_coverage",
        "memorisation", "n_samples", "n_reference", "seconds"}``; ``seconds`` splits the time
        into features and each metric (sampling is timed separately by the caller).
    """
    from genmodels.eval.metrics import class_coverage, frechet_distance, kid, memorisation, prdc
    from genmodels.eval.metrics import feature_statistics as stats
    from genmodels.eval.reference import features_and_classes, pixel_nn_distances, train_nn_distances

    if samples.dtype != torch.uint8:
        raise ConfigError("sample_metrics takes uint8 samples (quantise with genmodels.viz.to_uint8)")
    secs: dict[str, float] = {}
    t = time.perf_counter()
    with Progress(len(samples), "sample features", enabled=progress) as bar:
        feats, classes = features_and_classes(net, samples, bar)
    secs["features"] = time.perf_counter() - t
    if not torch.isfinite(feats).all():
        raise GenmodelsError("the feature network gave non-finite features for these samples; are they NaN?")
    out: dict[str, Any] = {"n_samples": len(samples), "n_reference": ref.n}
    t = time.perf_counter()
    out["fid"] = frechet_distance(*stats(feats), ref.mu, ref.sigma)
    secs["fid"] = time.perf_counter() - t
    t = time.perf_counter()
    out["kid"] = kid(ref.features, feats, seed=seed, subset_size=KID_SUBSET, subsets=KID_SUBSETS)
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
        with Progress(ref.n, "test images' nearest training images", enabled=progress) as bar:
            test_nn = train_nn_distances(ref, train_images, progress=bar)
        secs["memorisation_reference"] = time.perf_counter() - t
        t = time.perf_counter()
        with Progress(len(samples), "samples' nearest training images", enabled=progress) as bar:
            sample_nn = pixel_nn_distances(samples, train_images, progress=bar)
        out["memorisation"] = memorisation(sample_nn, test_nn)
        out["memorisation"]["n_train"] = len(train_images)
        secs["memorisation"] = time.perf_counter() - t
    out["seconds"] = {k: round(v, 2) for k, v in secs.items()}
    return out


FEATURES = ("auto", "inception")


def _feature_setup(
    dataset: Any,
    n: int,
    device: str,
    features: str = "auto",
    inception_weights: str | None = None,
    progress: bool = False,
) -> tuple[Any, Any, str | None, float]:
    """(feature net, reference, None, seconds the reference took) for a test split, or (None, None, why not, 0).

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
            return None, None, str(e), 0.0
    if net.config.image_shape is not None and tuple(net.config.image_shape) != tuple(dataset.shape):
        why = (
            f"the {dataset.name} feature net takes {list(net.config.image_shape)} images but the run's data are "
            f"{list(dataset.shape)} (a data.image_size / data.channels override); sample metrics need the native size"
        )
        return None, None, why, 0.0
    t = time.perf_counter()
    with Progress(min(n, len(dataset)), "test-image features", enabled=progress) as bar:
        ref = real_reference(net, dataset, n=n, progress=bar)
    return net, ref, None, time.perf_counter() - t


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
    n: int | None = None,
    k: int | None = None,
    nll_n: int | None = None,
    full_likelihood: bool = False,
    seed: int = 0,
    device: str = "auto",
    options: dict[str, Any] | None = None,
    cas: bool = True,
    cas_samples: int | None = None,
    weights: str = "ema",
    features: str = "auto",
    inception_weights: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run on its dataset's test split and write ``eval.json`` and ``eval.md`` into it.

    Args:
        n: samples to draw and real test images to compare them with (capped at the test split's size).
            None: up to ``DEFAULT_N``, stopping at one of ``SAMPLE_COUNTS`` when more would take over
            ``SAMPLE_BUDGET_S`` (see ``_auto_samples``); the report's ``sample_count`` says why.
        k: importance samples per image of a VAE's IWAE bound (default ``CHEAP_K``, or ``FULL_K``).
        nll_n: test images for the likelihood (default ``CHEAP_NLL_N`` within ``LIKELIHOOD_BUDGET_S``,
            or ``FULL_NLL_N``); given, all of them are scored, whatever the time.
        full_likelihood: the tight estimate: k = ``FULL_K`` on ``FULL_NLL_N`` images, no time budget.
        options: sampling options for the model's ``sample`` (sampler, steps, guidance, ...).
        cas: run the classifier tests (CAS, augmentation) for class-conditional models.
        cas_samples: generated images those tests train on (default min(n, ``CAS_SAMPLES``); capped at
            the training split's size).
        features: "auto" (the dataset's shipped feature net) or "inception" (needs pytorch-fid and the
            weights file ``inception_weights``; see ``genmodels.eval.inception``).
        progress: show the progress of each long step on stderr.

    Returns:
        the report written to eval.json; ``summary_lines`` is what eval.md and the CLI show.
    """
    from genmodels.runs import load_run

    for flag, v in (("-n", n), ("--k", k), ("--nll-n", nll_n), ("--cas-samples", cas_samples)):
        if v is not None and v < 1:
            raise ConfigError(f"{flag} must be >= 1, got {v}")
    run = load_run(run_dir, device=device, weights=weights)
    from genmodels.models.base import Translates

    if isinstance(run.model, Translates):  # a translator has no samples: its translations of the test split
        from genmodels.eval.translation import evaluate_translation

        return evaluate_translation(run_dir, n=n, run=run)
    ds = _test_split(run)
    cap = min(n or DEFAULT_N, len(ds))
    y = torch.from_numpy(ds.labels[:cap]) if ds.labels is not None else None
    model = run.model
    report: dict[str, Any] = {
        "run": str(run.path),
        "model_name": run.model_name,
        "family": run.family,
        "step": run.step,
        "weights": run.weights,
        "dataset": ds.name,
        "split": ds.split,
        "wall_time_s": run.meta.get("wall_time_s"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "sampling_options": options or {},
    }
    lines: list[str] = []
    if isinstance(model, HasLikelihood):
        _add_likelihood(report, lines, model, ds, cap, seed, k, nll_n, full_likelihood, progress, run.config["model"])
    if isinstance(model, Encodable):
        m = min(cap, RECONSTRUCTION_N)
        x = torch.from_numpy(ds.images[:m]).float().div_(255.0)
        report["reconstruction_mse"] = _reconstruction_mse(model, x, y[:m] if y is not None else None, run.device)
        report["reconstruction_n"] = m
        lines.append(f"  reconstruction MSE {report['reconstruction_mse']:.5f} (pixels in [0, 1], {m} test images)")
    conditional = is_conditional(model)
    # A conditional model samples with the test split's own labels: its class histogram then matches the data's.
    labels = y if conditional and y is not None else None
    t0 = time.perf_counter()
    if n is None:
        samples_u8, secs, note = _auto_samples(run, cap, seed, labels, options or {}, progress)
        report["sample_count"] = {"chosen": "auto", "budget_s": SAMPLE_BUDGET_S, "note": note}
    else:
        samples_u8, note = _draw(run, cap, seed, labels, options or {}, progress), None
        secs = time.perf_counter() - t0
        report["sample_count"] = {"chosen": "-n"}
    n_eval = report["n"] = report["sample_count"]["n"] = len(samples_u8)
    report["seconds_per_1000_samples"] = round(secs * 1000 / n_eval, 3)
    head = f"{run.model_name} on {ds.name} {ds.split}, step {run.step} ({run.weights} weights), {n_eval} samples"
    lines.insert(0, head)
    if note:
        lines.insert(1, f"  {note}")
    lines.append(f"  sampling: {report['seconds_per_1000_samples']:.2f} s per 1,000 samples")
    from genmodels.viz import save_grid

    save_grid(samples_u8[:GRID_N].numpy(), run.path / GRID_NAME, nrow=_grid_rows(n_eval))
    _add_pixel_stats(report, lines, samples_u8, ds, cap)
    if note and n_eval < min(*SAMPLE_COUNTS, cap):
        report["sample_metrics_skipped"] = note
    else:
        _add_sample_metrics(
            report,
            lines,
            samples_u8,
            ds,
            n_eval,
            seed,
            device,
            lambda: run.load_data("train"),
            features,
            inception_weights,
            progress,
        )
    if conditional and cas and "fid" in report and features == "auto":
        n_gen = cas_samples or min(n_eval, CAS_SAMPLES)
        report["classifier_tests"] = _classifier_tests(run, ds, seed, device, n_gen, options or {}, progress)
        lines += _cas_lines(report["classifier_tests"])
    report["summary_lines"] = lines
    write_report(run.path, report)
    return report


def _test_split(run: Any) -> Any:
    """The run's test split, or one error line that names what to do when its dataset has none."""
    try:
        return run.load_data("test")
    except DataError as e:
        if run.data_config.dataset.startswith("folder:") and "no test split" in str(e):
            raise DataError(
                f"{run.data_config.dataset} has no test split to compare samples with: move its images into "
                "PATH/train/<class>/ and held-out ones into PATH/test/<class>/ (the run need not be retrained), or "
                "write samples with genmodels sample RUN -n 10000 -o s.npz and score them with genmodels evaluate "
                "--samples s.npz --dataset npz:FILE (an .npz holding test_images)"
            ) from None
        raise


def _draw(
    run: Any,
    n: int,
    seed: int,
    labels: torch.Tensor | None,
    options: dict[str, Any],
    progress: bool,
    stop: Callable[[int, float], bool] | None = None,
) -> torch.Tensor:
    """n samples as uint8 (n, C, H, W): the same images as ``genmodels sample RUN -n n --seed seed``.

    Args:
        stop: asked after each batch with (samples drawn, seconds taken); True ends the draw there. The
            batches come in order from one generator, so the first m samples of a draw of n are the m
            samples a draw of m gives (for m a multiple of the sampling batch, or all of them).
    """
    from genmodels.viz import to_uint8

    out = torch.empty(n, *run.model.config.image_shape, dtype=torch.uint8)
    done = 0
    t0 = time.perf_counter()
    with Progress(n, "sampling", enabled=progress) as bar:
        for b in run.sample_batches(n, seed=seed, labels=labels[:n] if labels is not None else None, **options):
            out[done : done + len(b)] = torch.from_numpy(to_uint8(b))
            done += len(b)
            bar(done)
            if stop is not None and done < n and stop(done, time.perf_counter() - t0):
                break
    return out[:done]


def _auto_samples(
    run: Any, cap: int, seed: int, labels: torch.Tensor | None, options: dict[str, Any], progress: bool
) -> tuple[torch.Tensor, float, str | None]:
    """The samples of a plain evaluation: up to ``cap``, stopping at the largest of SAMPLE_COUNTS the
    sampler's measured speed says fits SAMPLE_BUDGET_S. A timed probe of PROBE_N samples first checks that
    the fewest fit; when they do not (an autoregressive sampler on a CPU), the probe's samples are all
    there is: enough for the grid and the pixel statistics, too few for the feature metrics.

    Returns:
        (uint8 samples, seconds they took, a note for the report when fewer than ``cap`` were drawn).
    """
    m = min(PROBE_N, cap)
    t0 = time.perf_counter()
    probe = _draw(run, m, seed, labels, options, progress)
    probe_secs = time.perf_counter() - t0
    stops = [c for c in sorted(SAMPLE_COUNTS) if c < cap] + [cap]
    per = probe_secs / m  # at batch m, and with the first call's set-up: no less than at batch 500
    if m == cap:
        return probe, probe_secs, None
    if per * stops[0] > PROBE_SLACK * SAMPLE_BUDGET_S:
        note = (
            f"sample metrics skipped: sampling takes {_duration(per)} per image here, so the {stops[0]:,} that "
            f"FID and precision / recall need at least would take {_duration(per * stops[0])} ({cap:,}: "
            f"{_duration(per * cap)}); only {m} drawn, for the grid and pixel statistics; pass -n {stops[0]} "
            f"(or up to -n {cap}) for the sample metrics"
        )
        return probe, probe_secs, note

    def stop(done: int, secs: float) -> bool:
        # At each count of the ladder: go on only if the next one is projected to fit the budget.
        return done in stops and secs / done * stops[stops.index(done) + 1] > SAMPLE_BUDGET_S

    t0 = time.perf_counter()
    samples = _draw(run, cap, seed, labels, options, progress, stop)
    secs = time.perf_counter() - t0
    if len(samples) == cap:
        return samples, secs, None
    per = secs / len(samples)
    note = (
        f"{len(samples):,} samples, not {cap:,}: sampling takes {_duration(per)} per image here ({cap:,} would "
        f"take {_duration(per * cap)}, over the {SAMPLE_BUDGET_S:g} s budget); pass -n {cap} to draw them all"
    )
    return samples, secs, note


def _grid_rows(n: int) -> int:
    return 8 if n >= GRID_N else max(1, math.isqrt(n))


def _duration(s: float) -> str:
    if s < 1.0:
        return f"{1000 * s:.0f} ms"
    if s < 120.0:
        return f"{s:.1f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _add_pixel_stats(report: dict[str, Any], lines: list[str], samples_u8: torch.Tensor, ds: Any, n_real: int) -> None:
    """The samples' gray-level histogram against the first n_real test images' (``metrics.pixel_stats``)."""
    from genmodels.eval.metrics import pixel_stats

    if tuple(samples_u8.shape[1:]) != tuple(ds.shape):
        return
    ps = pixel_stats(samples_u8, torch.from_numpy(ds.images[:n_real]))
    ps.update(n_samples=len(samples_u8), n_real=min(n_real, len(ds)))
    report["pixel_stats"] = ps
    lines.append(
        f"  pixel intensities: histogram TV {ps['pixel_hist_tv']:.4f}, W1 {ps['pixel_w1']:.2f} gray levels; "
        f"black {100 * ps['black_share']:.1f}% (test images {100 * ps['real_black_share']:.1f}%), "
        f"levels 1-5 {100 * ps['near_black_share']:.1f}% ({100 * ps['real_near_black_share']:.1f}%)"
    )


def _add_likelihood(
    report: dict[str, Any],
    lines: list[str],
    model: Any,
    ds: Any,
    cap: int,
    seed: int,
    k: int | None,
    nll_n: int | None,
    full: bool,
    progress: bool,
    model_config: dict[str, Any],
) -> None:
    if not model.has_likelihood:
        lines.append(
            "  no likelihood: a Bernoulli decoder on grey levels is not a distribution of the data "
            "(train with model.binarize=dynamic or model.likelihood=logistic for one)"
        )
        return
    explicit = full or k is not None or nll_n is not None
    k = k or (FULL_K if full else CHEAP_K)
    n = min(nll_n or min(cap, FULL_NLL_N if full else CHEAP_NLL_N), len(ds))
    x = torch.from_numpy(ds.images[:n]).float().div_(255.0)
    y = torch.from_numpy(ds.labels[:n]) if ds.labels is not None else None
    budget = None if explicit else LIKELIHOOD_BUDGET_S
    with Progress(n, "likelihood", enabled=progress) as bar:
        lik = likelihood_report(model, x, y, seed=seed, k=k, budget_s=budget, progress=bar)
    lik["estimate"] = "full" if full else "explicit" if explicit else "cheap"
    lik["budget_s"] = budget
    # The run's own settings of its estimate (a diffusion model's Monte-Carlo timesteps, model.nll_timesteps).
    lik["model_options"] = {key: v for key, v in model_config.items() if key.startswith("nll_")}
    report["likelihood"] = lik
    opts = ", ".join(f"{key}={v}" for key, v in {**lik["options"], **lik["model_options"]}.items())
    for name in lik["nats"]:
        lines.append(
            f"  test NLL ({name}{', ' + opts if opts else ''}) {lik['nats'][name]:.2f} +- "
            f"{lik['stderr_nats'][name]:.2f} nats ({lik['bpd'][name]:.4f} bits/dim) on {lik['n']} {lik['data']} images"
        )
    full_is = f"the k={FULL_K} bound on {FULL_NLL_N} images" if "k" in lik["options"] else f"{FULL_NLL_N} images"
    if lik["n"] < n:
        lines.append(
            f"  (the likelihood stopped after {lik['n']} of {n} images at its {budget:g} s budget; "
            f"pass --nll-n {n} for all of them, --full-likelihood for {full_is})"
        )
    elif not explicit and "k" in lik["options"]:
        lines.append(f"  (a quick bound: --full-likelihood gives {full_is})")


def _reconstruction_mse(model: Any, x: torch.Tensor, y: torch.Tensor | None, dev: torch.device) -> float:
    use_y = is_conditional(model) and y is not None
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), 500):
            yb = y[i : i + 500].to(dev) if use_y and y is not None else None
            parts.append(model.reconstruct(x[i : i + 500].to(dev), yb).float().cpu())
    rec = torch.cat(parts)
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
    progress: bool = False,
) -> None:
    t0 = time.perf_counter()
    net, ref, why, ref_seconds = _feature_setup(ds, n_ref, device, features, inception_weights, progress)
    if net is None:
        report["sample_metrics_skipped"] = why
        lines.append(f"  sample metrics skipped: {why}")
        return
    train_images, why_train = _load_train(load_train)
    m = sample_metrics(samples_u8, net, ref, train_images=train_images, seed=seed, progress=progress)
    report.update(m)
    report["feature_net"] = _net_info(net)
    report["metric_seconds"] = round(time.perf_counter() - t0, 2)
    report["reference_seconds"] = round(ref_seconds, 2)
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


def _classifier_tests(
    run: Any, test: Any, seed: int, device: str, n_generated: int, options: dict[str, Any], progress: bool
) -> dict[str, Any]:
    from genmodels.eval.classifier_tests import classifier_tests
    from genmodels.models.base import num_classes

    train = run.load_data("train")
    if train.labels is None or test.labels is None:
        return {"skipped": "the dataset has no labels"}
    k = num_classes(run.model)
    n_gen = min(n_generated, len(train))
    with Progress(4, "classifier tests", enabled=progress, unit="classifier") as bar:
        return classifier_tests(
            lambda labels: _draw(run, len(labels), seed + 1, labels, options, progress),
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
            progress=bar,
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
    """uint8 images (N, C, H, W) and optional labels from an .npz as ``genmodels sample -o FILE.npz`` writes.

    Raises:
        GenmodelsError: one line for a missing, special (FIFO, directory), truncated or corrupt file.
    """
    import zipfile
    import zlib

    from genmodels import safeio

    p = Path(path)
    if p.suffix.lower() != ".npz":
        raise ConfigError(f"--samples takes an .npz file (key 'images', uint8 N x C x H x W), got {p}")
    redo = "write it again with genmodels sample RUN -n N -o FILE.npz"
    try:
        with os.fdopen(safeio.open_regular(p, None, limit=safeio.LARGE_FILE, what="samples file"), "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise GenmodelsError(f"samples file {p} does not exist; {redo}") from None
    if magic != b"PK\x03\x04":  # np.load would read a .npy (or try a pickle) instead of a zip archive
        raise GenmodelsError(f"{p} is not an .npz (zip) archive (empty, truncated or another format); {redo}")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {key: f[key] for key in ("images", "labels") if key in f.files}
            files = list(f.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenmodelsError(f"cannot read {p} ({why}): truncated or corrupt? {redo}") from None
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
    n: int | None = None,
    name: str | None = None,
    seed: int = 0,
    device: str = "auto",
    data_dir: str | None = None,
    meta: dict[str, Any] | None = None,
    features: str = "auto",
    inception_weights: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a file (or tensor) of samples against a dataset's test split with the run protocol.

    Args:
        samples: an .npz path (key 'images', uint8 N x C x H x W) or images (uint8, or float in [0, 1]).
        dataset: the dataset whose test split is the reference (e.g. "fashion-mnist").
        out: directory for eval.json / eval.md / eval_samples.png (default: the file's folder).
        n: samples to score (the first n) and test images to compare with (default ``DEFAULT_N``).
        name: the model's name in the report and the leaderboard (default: the file's stem).
        meta: extra report fields (e.g. ``{"family": "baseline", "step": 2300, "wall_time_s": 300}``).
        features, inception_weights, progress: as ``evaluate_run`` takes them.
    """
    from genmodels.data import load_dataset
    from genmodels.viz import save_grid, to_uint8

    if n is not None and n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    n = DEFAULT_N if n is None else n
    if isinstance(samples, str | os.PathLike):
        images, _ = load_samples_file(samples)
        out_dir = Path(out) if out is not None else Path(samples).resolve().parent
        name = name or Path(samples).stem
    else:
        images = torch.from_numpy(to_uint8(samples))
        if out is None:
            raise ConfigError("evaluate_samples of a tensor needs out=DIR for eval.json")
        out_dir, name = Path(out), name or "samples"
    test = _load_test(dataset, data_dir)
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
    save_grid(images[:GRID_N].numpy(), out_dir / GRID_NAME, nrow=_grid_rows(n_eval))
    _add_pixel_stats(report, lines, images, test, min(n, len(test)))
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
        progress,
    )
    if "fid" not in report:
        raise GenmodelsError(f"cannot score samples of {dataset}: {report.get('sample_metrics_skipped')}")
    report["summary_lines"] = lines
    write_report(out_dir, report)
    return report


def _load_test(dataset: str, data_dir: str | None) -> Any:
    """A dataset's test split for ``--samples``, or one error line naming the fix when it has none."""
    from genmodels.data import load_dataset

    try:
        return load_dataset(dataset, "test", data_dir=data_dir)
    except DataError as e:
        if dataset.startswith("folder:") and "no test split" in str(e):
            raise DataError(
                f"{dataset} has no test split to compare the samples with: move its images into PATH/train/<class>/ "
                "and held-out ones into PATH/test/<class>/, or pass --dataset npz:FILE (an .npz holding test_images)"
            ) from None
        raise


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
