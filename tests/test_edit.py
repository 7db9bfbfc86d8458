"""Editing (issue 13, point 2): SDEdit and class-guided editing for diffusion models, latent arithmetic
for VAEs, autoencoders and GANs (by inverting the generator); the command line and its errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from genmodels.api import load_run, train
from genmodels.cli import main
from genmodels.errors import ConfigError
from genmodels.models import make_config, model_spec
from genmodels.models.samplers import sample_loop
from genmodels.viz.editing import class_codes, latent_edit_images, sdedit_images
from genmodels.viz.inpainting import inpaint_images, named_mask
from helpers import TINY, lively


class LineDenoiser(nn.Module):
    """The exact eps prediction for Gaussian data near a line, in the model's range: x0 = s * ones(D) + tau * n,
    s ~ N(0, 0.25), n ~ N(0, I). E[x0 | x_t] = a Sigma (a^2 Sigma + (1 - abar) I)^-1 x_t."""

    def __init__(self, schedule, d: int, tau: float) -> None:
        super().__init__()
        self.abar = schedule.alphas_cumprod.tolist()
        self.cov = 0.25 * torch.ones(d, d, dtype=torch.float64) + tau**2 * torch.eye(d, dtype=torch.float64)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, y=None):
        out = []
        eye = torch.eye(len(self.cov), dtype=torch.float64)
        for xi, ti in zip(x_t, t.tolist(), strict=True):
            a, var = math.sqrt(self.abar[ti]), 1.0 - self.abar[ti]
            flat = xi.flatten().double()
            x0 = a * self.cov @ torch.linalg.solve(a * a * self.cov + var * eye, flat)
            out.append(((flat - a * x0) / math.sqrt(var)).float().view_as(xi))
        return torch.stack(out)


def line_model(size: int = 4, tau: float = 0.02):
    extra = {"image_shape": [1, size, size], "timesteps": 1000, "prediction": "eps", "sampling_steps": 20}
    model = model_spec("ddpm").build(make_config("ddpm", {**TINY["ddpm"], **extra})).eval()
    model.denoiser = LineDenoiser(model.schedule, size * size, tau)
    return model


def test_a_sampler_tail_of_all_its_steps_is_the_whole_run():
    model = line_model()
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))

    def denoise(x_t, t):
        return model.predict(x_t, torch.full((3,), t, dtype=torch.long))

    for sampler in ("ddpm", "ddim", "dpm-solver"):
        whole = sample_loop(denoise, model.schedule, x_T, sampler=sampler, steps=8, generator=torch.Generator())
        tail = sample_loop(denoise, model.schedule, x_T, sampler=sampler, steps=8, tail=8, generator=torch.Generator())
        assert torch.equal(whole, tail), sampler


def test_sdedit_trades_faithfulness_for_realism_as_strength_grows():
    """On Gaussian data with a known density, edits move away from the input and towards the data as the
    strength grows: the distance to the input rises, the Mahalanobis distance under the data's
    covariance falls to the data's own (1 per dimension)."""
    model = line_model(tau=0.2)
    x = torch.rand(64, 1, 4, 4, generator=torch.Generator().manual_seed(1))  # off the data: pixels independent
    inv = torch.linalg.inv(model.denoiser.cov).float()

    def maha(img):  # per dimension, in the model's range
        z = (2 * img - 1).flatten(1)
        return ((z @ inv) * z).sum(1).mean().item() / z.shape[1]

    dist, realism = [], []
    for strength in (0.05, 0.3, 0.6, 1.0):
        out = sdedit_images(model, x, strength, samples=1, generator=torch.Generator().manual_seed(0)).edits[:, 0]
        dist.append((out - x).square().mean().item())
        realism.append(maha(out))
    assert dist == sorted(dist) and realism == sorted(realism, reverse=True), (dist, realism)
    assert maha(x) > 5 and realism[-1] < 1.5 and dist[0] < dist[-1] / 3, (maha(x), dist, realism)


def test_repaint_through_the_model_fills_what_the_known_pixels_imply():
    model = line_model(6)
    x = torch.full((16, 1, 6, 6), 0.7)
    res = inpaint_images(model, x, named_mask("bottom", 1, 6, 6), samples=1, generator=torch.Generator().manual_seed(0))
    assert (res.fills[:, 0, :, 3:] - 0.7).abs().max() < 0.05


def test_editing_needs_the_method_and_the_right_classes():
    model = line_model()
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ConfigError, match="must be in \\(0, 1\\]"):
        sdedit_images(model, x, 0.0, samples=1, generator=None)
    with pytest.raises(ConfigError, match="is not class-conditional: editing towards a class needs"):
        sdedit_images(model, x, 0.5, samples=1, generator=None, labels=torch.tensor([1, 2]))
    gan = model_spec("dcgan").build(make_config("dcgan", {**TINY["dcgan"]}))
    with pytest.raises(ConfigError, match="cannot SDEdit"):
        sdedit_images(gan, torch.rand(2, 1, 28, 28), 0.5, samples=1, generator=None)
    pcnn = model_spec("masked-pixelcnn").build(make_config("masked-pixelcnn", {**TINY["masked-pixelcnn"]}))
    with pytest.raises(ConfigError, match="has no encoder and no generator to invert"):
        latent_edit_images(pcnn, torch.rand(2, 1, 28, 28), torch.tensor([0, 0]), torch.tensor([1, 1]), None)


def test_a_gans_latent_arithmetic_inverts_the_image_and_adds_the_class_direction():
    """A GAN's edit is its generator at the image's inverted code plus the class direction made from the
    inverted codes of the training images (only the classes asked for), and conditional GANs decode the
    code inverted under the source class with the target class."""
    from genmodels.models.inpainting import invert_generator

    torch.manual_seed(0)
    gan = lively(model_spec("dcgan").build(make_config("dcgan", {**TINY["dcgan"]})))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        pool = (gan.decode(torch.randn(20, 8, generator=g)) * 255).round().to(torch.uint8).numpy()
    labels = np.repeat(np.arange(2), 10)
    codes = class_codes(gan, pool, labels, 3, classes=[0, 1], generator=torch.Generator().manual_seed(1))
    assert torch.isnan(codes[2]).all() and not torch.isnan(codes[:2]).any()
    want0 = invert_generator(gan, torch.from_numpy(pool[:10]).float() / 255, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(codes[0], want0.mean(0), atol=1e-5)
    x = torch.from_numpy(pool[:2]).float() / 255
    src, tgt = torch.tensor([0, 0]), torch.tensor([1, 1])
    got = latent_edit_images(gan, x, src, tgt, codes, generator=torch.Generator().manual_seed(2)).edits[:, 0]
    z = invert_generator(gan, x, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = gan.decode(z + codes[1] - codes[0])
    assert torch.allclose(got, want, atol=1e-5)
    assert (got - x).abs().mean() > 0.01  # it moved
    with pytest.raises(ConfigError, match="has no class code yet"):
        latent_edit_images(gan, x, src, torch.tensor([2, 2]), codes)

    cgan = lively(model_spec("cgan").build(make_config("cgan", {**TINY["cgan"], "num_classes": 10})))
    got = latent_edit_images(cgan, x, src, tgt, None, generator=torch.Generator().manual_seed(2)).edits[:, 0]
    z = invert_generator(cgan, x, labels=src, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(got, cgan.decode(z, tgt), atol=1e-5)


def test_a_conditional_vae_edits_by_decoding_its_code_with_the_target_class():
    cfg = make_config("cvae", {**TINY["cvae"], "image_shape": [1, 28, 28], "num_classes": 10})
    torch.manual_seed(0)
    model = model_spec("cvae").build(cfg).eval()
    x = torch.rand(3, 1, 28, 28)
    src, tgt = torch.tensor([1, 2, 3]), torch.tensor([4, 4, 4])
    got = latent_edit_images(model, x, src, tgt, None).edits[:, 0]
    with torch.no_grad():
        want = model.decode(model.encode(x, src), tgt)
        other = model.decode(model.encode(x, src), src)
    assert torch.allclose(got, want) and not torch.allclose(got, other)
    with pytest.raises(ConfigError, match=r"target class must be in 0\.\.9, got 10"):
        latent_edit_images(model, x, src, torch.tensor([10, 0, 0]), None)


# ----------------------------------------------------------------------------- trained on digits


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("edit") / "vae"
    overrides = {f"model.{k}": v for k, v in TINY["conv-vae"].items()}
    overrides.update({"model.latent_dim": 8, "train.sample_every": 0, "data.limit": 1500})
    train("conv-vae", "digits", steps=500, batch_size=32, out=out, overrides=overrides, progress=False)
    return out


def test_latent_arithmetic_on_a_trained_vae_moves_images_to_the_target_class(vae_run):
    """Edits of test 0s towards 1 are nearer the 1s' mean image than the 0s' (a nearest-mean classifier in
    pixel space), and editing to an image's own class is its reconstruction."""
    run = load_run(vae_run)
    tr, te = run.load_data("train"), run.load_data("test")
    codes = class_codes(run.model, tr.images, tr.labels, 10)
    means = torch.stack([torch.from_numpy(tr.images[tr.labels == c]).float().div(255).mean(0) for c in range(10)])
    zeros = torch.from_numpy(te.images[te.labels == 0][:40]).float().div(255)
    src, tgt = torch.zeros(len(zeros), dtype=torch.long), torch.ones(len(zeros), dtype=torch.long)
    edits = latent_edit_images(run.model, zeros, src, tgt, codes).edits[:, 0]

    def nearest(imgs):
        return torch.cdist(imgs.flatten(1), means.flatten(1)).argmin(1)

    assert (nearest(zeros) == 0).float().mean() > 0.8
    assert (nearest(edits) == 1).float().mean() > 0.6, nearest(edits)
    same = latent_edit_images(run.model, zeros, src, src, codes).edits[:, 0]
    with torch.no_grad():
        assert torch.allclose(same, run.model.reconstruct(zeros), atol=1e-6)


def test_a_trained_vae_inpaints_better_than_the_mean_image(vae_run):
    """The centre of a digit follows from its rim: the fit's error on the hidden pixels is well below the
    mean training image's (an error a fill drawn from a wide posterior need not beat, so no half mask)."""
    run = load_run(vae_run)
    test = torch.from_numpy(run.load_data("test").images[:64]).float().div(255)
    mean = torch.from_numpy(run.load_data("train").images).float().div(255).mean(0)
    keep = named_mask("center", len(test), 28, 28)
    res = inpaint_images(run.model, test, keep, samples=1, generator=torch.Generator().manual_seed(0))
    hid = (~keep.bool()).expand_as(test)
    err = (res.fills[:, 0] - test).square()[hid].mean().item()
    base = (mean.expand_as(test) - test).square()[hid].mean().item()
    assert err < 0.85 * base, (err, base)


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit-cli")
    out = {}
    for name in ("ddpm", "cddpm", "dcgan", "masked-pixelcnn"):
        overrides = {f"model.{k}": v for k, v in TINY[name].items()}
        overrides.update({"train.sample_every": 0, "data.limit": 200})
        out[name] = root / name
        train(name, "digits", steps=2, batch_size=8, out=out[name], overrides=overrides, progress=False)
    return out


def test_cli_edit_by_sdedit_class_guidance_and_latent_arithmetic(tiny_runs, vae_run, tmp_path, capsys):
    png = tmp_path / "e.png"
    assert (
        main(["edit", str(tiny_runs["ddpm"]), "--input", "test", "-n", "2", "--strength", "0.5", "-o", str(png)]) == 0
    )
    out = capsys.readouterr().out
    assert "SDEdit at strength 0.5 (noised to t = " in out and png.exists()
    npz = tmp_path / "e.npz"
    args = ["edit", str(tiny_runs["cddpm"]), "--input", "test", "-n", "3", "--samples", "2", "--to-class", "4"]
    assert main([*args, "-o", str(npz)]) == 0
    assert "towards class 4" in capsys.readouterr().out
    assert np.load(npz)["images"].shape == (6, 1, 28, 28)
    assert main(["edit", str(vae_run), "--input", "test", "--to-class", "1", "-o", str(npz)]) == 0
    assert "latent arithmetic to class 1" in capsys.readouterr().out
    assert np.load(npz)["images"].shape == (8, 1, 28, 28)
    gan = ["edit", str(tiny_runs["dcgan"]), "--input", "test", "-n", "2", "--to-class", "3", "--from-class", "5"]
    assert main([*gan, "-o", str(npz)]) == 0
    assert "latent arithmetic to class 3" in capsys.readouterr().out
    assert np.load(npz)["images"].shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    ("run", "extra", "message"),
    [
        ("masked-pixelcnn", ["--to-class", "1"], "cannot edit images; editing works with diffusion models"),
        ("dcgan", ["--to-class", "1", "--strength", "0.5"], "--strength, --sampler, --sampling-steps and --guidance"),
        ("dcgan", ["--to-class", "10"], "the target class must be in 0..9, got 10"),
        ("ddpm", ["--strength", "1.5"], "--strength must be in (0, 1], got 1.5"),
        ("ddpm", ["--to-class", "3"], "is not class-conditional: editing towards a class needs"),
        ("ddpm", ["--from-class", "3"], "--from-class is for vae / autoencoder / gan runs"),
        ("cddpm", ["--to-class", "12"], "class labels must be in 0..9; got 12"),
        ("vae", [], "edits by latent arithmetic between classes; pass --to-class K"),
        ("vae", ["--to-class", "1", "--strength", "0.3"], "--strength, --sampler, --sampling-steps and --guidance"),
        ("vae", ["--to-class", "10"], "the target class must be in 0..9, got 10"),
    ],
)
def test_cli_edit_errors_are_one_line(tiny_runs, vae_run, tmp_path, capsys, run, extra, message):
    path = vae_run if run == "vae" else tiny_runs[run]
    code = main(["edit", str(path), "--input", "test", "-n", "2", *extra, "-o", str(tmp_path / "x.png")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.png").exists()
