"""End-to-end command-line runs on real data, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genmodels.cli import main
from genmodels.models import FAMILIES, MODELS
from helpers import nn_distance

SRC = str(Path(__file__).resolve().parents[1] / "src")
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SMALL_VAE = ["--set", "model.channels=[16,32,64]", "--set", "model.blocks=0"]


def in_process(*args: str) -> subprocess.CompletedProcess:
    """``genmodels ARGS`` through ``main`` in this process (the same code a process runs, without
    importing torch again): for the follow-up commands of a test whose training ran as a real process."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["genmodels", *args], code, out.getvalue(), err.getvalue())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "genmodels", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_the_help_test_covers_every_command():
    from genmodels.cli import COMMANDS

    assert set(COMMANDS) == set(HELP_COMMANDS)


HELP_COMMANDS = ["train", "sample", "reconstruct", "interpolate", "latent", "complete", "inpaint", "edit", "translate"]
HELP_COMMANDS += ["evaluate", "leaderboard", "datasets", "doctor", "models", "quickstart", "serve"]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"genmodels {command}" in out


def test_models_lists_every_registered_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, spec in MODELS.items():
        assert name in out and spec.family in out
    for fam in FAMILIES:
        assert fam in out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_models_prints_the_model_that_train_family_trains(capsys, family):
    """One source of truth: the pick ``genmodels models`` prints is the model ``train FAMILY`` builds (the
    pixelcnn family once printed gated-pixelcnn and trained masked-pixelcnn)."""
    from genmodels.training.config import resolve_run_config

    assert main(["models", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["families"][family]
    assert resolve_run_config(family)["model_name"] == printed


def test_datasets_lists_each_dataset_and_where_it_is(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "kmnist", "cifar10", "digits"):
        assert name in out
    assert "1x28x28" in out and "3x32x32" in out
    if FASHION.exists():
        assert "/usr/share/datasets/fashion-mnist" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "vea", "--steps", "1"], "unknown model 'vea'; did you mean 'vae'?"),
        (["train", "vae", "--dataset", "fashon-mnist", "--steps", "1"], "did you mean 'fashion-mnist'?"),
        (
            ["train", "vae", "--steps", "1", "--set", "train.lrr=1"],
            "unknown config key 'train.lrr'; did you mean 'train.lr'?",
        ),
        (["train", "vae", "--steps", "1", "--set", "latnt_dim=2"], "did you mean 'latent_dim'?"),
        (
            ["train", "vae", "--steps", "1", "--set", "model.likelihood=poisson"],
            "unknown vae likelihood 'poisson'",
        ),
        (["train", "vae", "--steps", "1", "--set", "train.lr=-1"], "train.lr must be a positive number"),
        (["train", "vae", "--steps", "1", "--set", "train.batch_size=abc"], "must be an integer"),
        (["train", "vae", "--steps", "1", "--set", "nonsense"], "--set expects key=value"),
        (["sample", "/nonexistent/run", "-o", "x.png"], "does not exist"),
    ],
)
def test_bad_input_is_one_error_line_with_a_fix(args, message, tmp_path):
    r = run_cli(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else run_cli(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_unknown_key_in_a_config_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  latent_dimm: 2\ntrain:\n  lr: 1.0e-3\n")
    r = run_cli("train", "mlp-vae", "--config", str(cfg), "--steps", "1", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "unknown config key 'model.latent_dimm'; did you mean 'model.latent_dim'?" in r.stderr
    cfg.write_text("modle:\n  latent_dim: 2\n")
    r = run_cli("train", "mlp-vae", "--config", str(cfg), "--steps", "1", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "did you mean 'model'?" in r.stderr
    cfg.write_text("model: [unclosed\n")
    r = run_cli("train", "mlp-vae", "--config", str(cfg), "--steps", "1", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "is not valid YAML" in r.stderr


def test_autoencoder_with_a_2d_latent_end_to_end_on_digits(tmp_path):
    run = tmp_path / "ae"
    r = run_cli(
        "train",
        "mlp-ae",
        "--dataset",
        "digits",
        "--steps",
        "400",
        "--batch-size",
        "64",
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "train.lr=3e-3",
        "--set",
        "train.sample_every=200",
        "--set",
        "act=leaky_relu",
    )
    assert r.returncode == 0, r.stderr
    for name in (
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "loss.png",
        "reconstructions.png",
        "latent_scatter.png",
        "manifold.png",
        "samples/step-00000200.png",
        "samples/final.png",
    ):
        assert (run / name).exists(), name
    assert list((run / "tb").glob("events.out.tfevents*")), "TensorBoard events missing"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["recon"] < 0.8 * recs[0]["recon"], "the autoencoder did not learn"
    assert {"images_per_s", "lr", "step", "time"} <= set(recs[0])
    r = run_cli("latent", str(run), "-o", str(tmp_path / "lat.png"), "-n", "200")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "lat.png").exists() and (tmp_path / "lat-manifold.png").exists()
    r = run_cli("reconstruct", str(run), "-o", str(tmp_path / "rec.png"), "-n", "20")
    assert r.returncode == 0 and (tmp_path / "rec.png").stat().st_size > 500
    r = run_cli("sample", str(run), "-n", "16", "-o", str(tmp_path / "s.npz"))
    assert r.returncode == 0, r.stderr
    s = np.load(tmp_path / "s.npz")
    assert s["images"].dtype == np.uint8 and s["images"].shape == (16, 1, 28, 28)


def test_vae_on_a_fashion_mnist_subset_learns_and_every_command_works(tmp_path):
    if not FASHION.exists():
        pytest.skip("needs the Debian package dataset-fashion-mnist (installed by .ci/run)")
    run = tmp_path / "vae"
    r = run_cli(
        "train",
        "vae",
        "--dataset",
        "fashion-mnist",
        "--steps",
        "300",
        "--batch-size",
        "64",
        "--out",
        str(run),
        "--no-progress",
        "--set",
        "data.limit=3000",
        "--set",
        "train.ema_decay=0.99",
        *SMALL_VAE,
    )
    assert r.returncode == 0, r.stderr
    assert "trained conv-vae for 300 steps" in r.stdout
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["loss"] < 0.75 * recs[0]["loss"], "the VAE's loss did not fall"
    # Samples moved toward the data: nearer to real test images than the untrained model's samples.
    from genmodels.data import load_dataset
    from genmodels.training import build_model, load_run

    test = torch.from_numpy(load_dataset("fashion-mnist", "test", limit=2000).images).float() / 255
    trained = load_run(run).sample(200, seed=0)
    torch.manual_seed(0)
    untrained = build_model("vae", (1, 28, 28), channels=[16, 32, 64], blocks=0).eval()
    fresh = untrained.sample(200, generator=torch.Generator().manual_seed(0))
    assert nn_distance(trained, test) < 0.7 * nn_distance(fresh, test)
    for args in (
        ["sample", str(run), "-n", "25", "-o", str(tmp_path / "s.png")],
        ["sample", str(run), "-n", "30", "-o", str(tmp_path / "s.npz"), "--seed", "3"],
        ["reconstruct", str(run), "-o", str(tmp_path / "r.png")],
        ["interpolate", str(run), "-o", str(tmp_path / "i.png")],
        ["interpolate", str(run), "-o", str(tmp_path / "ip.png"), "--prior"],
        ["evaluate", str(run), "-n", "200", "--k", "50"],
    ):
        r = in_process(*args)
        assert r.returncode == 0, (args, r.stderr)
    s = np.load(tmp_path / "s.npz")
    assert s["images"].shape == (30, 1, 28, 28) and s["images"].dtype == np.uint8
    report = json.loads((run / "eval.json").read_text())
    assert report["n"] == 200 and report["reconstruction_mse"] < 0.05
    lik = report["likelihood"]  # the default VAE binarises dynamically: a bound on a real likelihood
    assert lik["options"] == {"k": 50} and lik["data"] == "binarized"
    assert 0 < lik["nats"]["iwae"] <= lik["nats"]["elbo"] < 784 * 0.69
    assert lik["bpd"]["iwae"] == pytest.approx(lik["nats"]["iwae"] / (784 * 0.6931471805599453))
    assert (run / "eval.md").exists()


def test_cvae_samples_the_requested_class(tmp_path):
    run = tmp_path / "cvae"
    r = run_cli(
        "train",
        "cvae",
        "--dataset",
        "digits",
        "--steps",
        "300",
        "--batch-size",
        "64",
        "--out",
        str(run),
        "--no-progress",
        *SMALL_VAE,
        "--set",
        "model.binarize=dynamic",
    )
    assert r.returncode == 0, r.stderr
    from genmodels.data import load_dataset
    from genmodels.training import load_run

    ds = load_dataset("digits", "test")
    x = torch.from_numpy(ds.images).float() / 255
    y = torch.from_numpy(ds.labels)
    run_ = load_run(run)
    # Samples of class k lie nearer to real test digits of class k than to those of other classes.
    hits = 0
    for k in range(10):
        s = run_.sample(20, seed=k, labels=torch.full((20,), k))
        d = torch.stack([torch.cdist(s.flatten(1), x[y == j].flatten(1)).min(1).values.mean() for j in range(10)])
        hits += int(d.argmin() == k)
    assert hits >= 8, f"only {hits}/10 classes are recognisable"
    r = in_process("sample", str(run), "-n", "10", "-o", str(tmp_path / "c.npz"), "--class", "3")
    assert r.returncode == 0 and np.load(tmp_path / "c.npz")["labels"].tolist() == [3] * 10
    r = in_process("evaluate", str(run), "-n", "100", "--k", "20", "--no-cas")
    assert r.returncode == 0 and "test NLL (iwae, k=20)" in r.stdout


def test_python_api_mirrors_the_cli(tmp_path):
    import genmodels

    ds = genmodels.load_dataset("digits", "test")
    model = genmodels.build_model("mlp-vae", ds, latent_dim=4, hidden=[32])
    assert model.config.image_shape == (1, 28, 28) and model.config.latent_dim == 4
    run = genmodels.train(
        "mlp-vae",
        "digits",
        steps=5,
        out=tmp_path / "api",
        progress=False,
        overrides={"model.hidden": [32], "train.sample_every": 0},
    )
    again = genmodels.load_run(tmp_path / "api")
    assert again.step == run.step == 5
    assert again.sample(3).shape == (3, 1, 28, 28)


def test_quickstart_writes_its_grids(tmp_path):
    out = tmp_path / "qs"
    r = run_cli("quickstart", "--out", str(out), "--max-time", "0.1")
    assert r.returncode == 0, r.stderr
    assert "quickstart: trained conv-vae on digits" in r.stdout
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "loss.png", "samples/final.png"):
        assert (out / name).stat().st_size > 300, name
    r = run_cli("quickstart", "--out", str(out), "--max-time", "0.1")
    assert r.returncode == 2 and "already holds a run" in r.stderr


def test_doctor_says_what_the_machine_offers_and_why_each_fast_path_was_chosen(monkeypatch, capsys):
    from genmodels.device import fast_paths, forget_fast_paths

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    names = list(fast_paths())
    assert names, "the oneDNN Linear and the lean Adam register themselves"
    for name in names:
        assert f"  {name}: on - " in out or f"  {name}: off - " in out, out
    assert "bf16 on the CPU: " in out and "CPU: torch's kernels use " in out
    monkeypatch.setenv("GENMODELS_FASTPATHS", "off")
    forget_fast_paths()
    try:
        assert main(["doctor", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    finally:
        forget_fast_paths()
    assert report["fast_paths_setting"] == "off" and report["threads"] >= 1
    assert all(not d["chosen"] and "GENMODELS_FASTPATHS=off" in d["why"] for d in report["fast_paths"].values())
    assert set(report["cpu_flags"]) >= {"avx2", "avx512_bf16", "amx_bf16"}
