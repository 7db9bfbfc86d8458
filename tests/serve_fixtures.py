"""Tiny real runs for the web-app tests: one per family, trained on the bundled digits, one evaluated.

Used by tests/test_serve.py and tests/test_serve_browser.py, whose session fixtures call
:func:`serve_runs_dir`: the runs are trained once however many of those tests run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import TINY

# name in RUNS_DIR -> (model, steps, extra overrides). Small grids (3 x 3) and, for the pixel-by-pixel
# and many-step samplers, the original 8x8 digits keep sampling cheap; the autoencoder saves a grid every
# 10 steps for the step slider and two checkpoints for the checkpoint picker.
SERVE_RUNS = {
    "ae2d": ("mlp-ae", 40, {"train.sample_every": 10, "train.ckpt_every": 20}),
    "cvae2d": ("cvae", 10, {"model.latent_dim": 2, "train.lr": 1e-2}),  # a high rate: digit shapes in 10 steps
    "gan": ("gan-mlp", 20, {"train.lr": 2e-3}),
    "pixelcnn": ("gated-pixelcnn", 10, {"data.image_size": 8}),
    "diffusion": ("ddpm", 6, {"data.image_size": 8, "model.precision": "fp32"}),
}
EVALUATED = ("ae2d",)  # evaluation costs seconds (KID subsets): one run makes the leaderboard


def train_serve_runs(root: Path) -> Path:
    """Train every SERVE_RUNS entry into root/<name> and evaluate the EVALUATED ones (eval.json)."""
    from genmodels.api import train
    from genmodels.eval.report import evaluate_run

    for name, (model, steps, extra) in SERVE_RUNS.items():
        overrides = {f"model.{k}": v for k, v in TINY[model].items()}
        overrides.update(
            {
                "train.batch_size": 32,
                "train.log_every": 5,
                "train.grid": 3,
                "train.sample_every": 0,
                "train.ckpt_every": 0,
            }
        )
        overrides.update(extra)
        train(model, "digits", steps=steps, out=root / name, overrides=overrides, progress=False)
    for name in EVALUATED:
        evaluate_run(root / name, n=100, k=2, nll_n=20, device="cpu", cas=False)
    return root


# Colour runs on real colour data (Noto Color Emoji, small sizes so sampling stays cheap): an encoder
# model for generate / interpolate / explore, an RGB PixelCNN for completion, and a translator (grey emoji
# to colour) for the Translate panel; "dataset" names a run's data when it is not plain emoji.
COLOUR_RUNS = {
    "rgb-vae": ("conv-vae", 30, {"data.image_size": 16, "train.lr": 1e-2, "model.latent_dim": 2}),
    "rgb-pixelcnn": ("gated-pixelcnn", 10, {"data.image_size": 8}),
    "colorize": ("pix2pix", 10, {"data.image_size": 16, "dataset": "colorize:emoji"}),
}


def train_colour_runs(root: Path) -> Path:
    """Train every COLOUR_RUNS entry on the first 256 training emoji into root/<name>."""
    from genmodels.api import train

    for name, (model, steps, extra) in COLOUR_RUNS.items():
        overrides = {f"model.{k}": v for k, v in TINY[model].items()}
        overrides.update({"train.batch_size": 32, "train.log_every": 5, "train.grid": 3, "data.limit": 256})
        overrides.update({"train.sample_every": 10, "train.ckpt_every": 0})
        overrides.update({k: v for k, v in extra.items() if k != "dataset"})
        dataset = extra.get("dataset", "emoji")
        train(model, dataset, steps=steps, out=root / name, overrides=overrides, progress=False)
    return root


_TRAINED: dict[str, Path] = {}


def colour_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUNS_DIR with the tiny colour runs: trained once per test session."""
    if "colour" not in _TRAINED:
        _TRAINED["colour"] = train_colour_runs(tmp_path_factory.mktemp("colour-runs"))
    return _TRAINED["colour"]


def serve_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUNS_DIR with the tiny trained runs: trained once per test session, shared by the test files."""
    if "root" not in _TRAINED:
        _TRAINED["root"] = train_serve_runs(tmp_path_factory.mktemp("serve-runs"))
    return _TRAINED["root"]
