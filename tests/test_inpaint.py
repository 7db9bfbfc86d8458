"""Inpainting (issue 13, point 1): RePaint for diffusion, a latent fit for VAEs and autoencoders, raster
completion for the autoregressive models; the command line and its errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from genmodels.api import load_run, train
from genmodels.cli import main
from genmodels.errors import ConfigError
from genmodels.models import make_config, model_spec
from genmodels.models.inpainting import invert_generator, known_rows, latent_inpaint
from genmodels.models.samplers import repaint_loop, repaint_schedule
from genmodels.models.schedules import NoiseSchedule
from genmodels.viz.inpainting import inpaint_images, named_mask, read_mask
from helpers import TINY, lively


def tiny(name: str, shape=(1, 28, 28), **extra):
    cfg = make_config(name, {**TINY[name], "image_shape": list(shape), **extra})
    torch.manual_seed(0)
    return model_spec(name).build(cfg).eval()


# ----------------------------------------------------------------------------- RePaint


@pytest.mark.parametrize(("steps", "jump", "resample"), [(10, 3, 2), (50, 5, 5), (12, 4, 1), (7, 10, 3)])
def test_repaint_schedule_walks_the_grid_as_the_paper_does(steps, jump, resample):
    order = repaint_schedule(steps, jump, resample)
    assert order[0] == steps - 1 and order[-1] == -1
    moves = np.diff(order)
    assert set(moves.tolist()) <= {-1, 1}, "one level at a time"
    jump_points = list(range(0, steps - jump, jump))
    downs = int((moves == -1).sum())
    assert downs == steps + len(jump_points) * (resample - 1) * jump
    # every level below the top is reached from above once per pass at each jump point that covers it
    arrivals = [b for a, b in itertools.pairwise(order) if b < a]
    for j in jump_points:
        assert arrivals.count(j) == resample
    if resample == 1:
        assert order == [*range(steps - 1, -2, -1)], "no jumps: plain ancestral sampling"


def _exact_denoiser(schedule: NoiseSchedule, d: int):
    """The Bayes-optimal x0 estimate for data x0 = s * ones(d), s ~ N(0, 1): a correlated Gaussian, so
    the known pixels determine the unknown ones."""
    abar = schedule.alphas_cumprod.tolist()

    def denoise(x_t: torch.Tensor, t: int):
        a, var = math.sqrt(abar[t]), 1.0 - abar[t]
        precision = 1.0 + d * a * a / var
        s_hat = (a / var) * x_t.flatten(1).sum(1) / precision
        x0 = s_hat.view(-1, 1, 1, 1).expand_as(x_t)
        return x0, (x_t - a * x0) / math.sqrt(var)

    return denoise


def test_repaint_with_an_exact_denoiser_fills_in_what_the_known_pixels_imply():
    schedule = NoiseSchedule("cosine", 1000)
    x0 = torch.full((64, 1, 4, 4), 0.8)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2, :] = 1  # the top half known
    g = torch.Generator().manual_seed(0)
    out = repaint_loop(
        _exact_denoiser(schedule, 16), schedule, x0, keep, steps=50, jump_length=5, resample=5, generator=g
    )
    assert torch.equal(out[..., :2, :], x0[..., :2, :]), "known pixels land exactly on the given ones"
    hidden = out[..., 2:, :]
    # the data lie on a line (every pixel s): 8 known pixels of 0.8 leave s = 0.8 and no spread
    assert abs(hidden.mean().item() - 0.8) < 0.05, hidden.mean()
    # an unconditional draw (nothing known) has mean 0 and spread 1 across the batch
    free = repaint_loop(
        _exact_denoiser(schedule, 16), schedule, x0, keep * 0, steps=50, jump_length=5, resample=1, generator=g
    )
    assert abs(free.mean().item()) < 0.4 and free.mean((1, 2, 3)).std().item() > 0.6


def test_diffusion_inpainting_keeps_the_known_pixels_and_is_seeded():
    model = tiny("ddpm")
    x = torch.rand(3, 1, 28, 28)
    keep = named_mask("center", 3, 28, 28)
    opts = {"steps": 6, "jump_length": 2, "resample": 2}
    a = inpaint_images(model, x, keep, samples=2, generator=torch.Generator().manual_seed(1), **opts)
    b = inpaint_images(model, x, keep, samples=2, generator=torch.Generator().manual_seed(1), **opts)
    c = inpaint_images(model, x, keep, samples=2, generator=torch.Generator().manual_seed(2), **opts)
    assert a.fills.shape == (3, 2, 1, 28, 28)
    known = keep.bool()[:, None].expand_as(a.fills)
    assert torch.equal(a.fills[known], x[:, None].expand_as(a.fills)[known]), "bit for bit"
    assert torch.equal(a.fills, b.fills), "the same seed, the same fills"
    assert not torch.equal(a.fills[~known], c.fills[~known]), "another seed, other fills"
    assert not torch.equal(a.fills[:, 0][~known[:, 0]], a.fills[:, 1][~known[:, 1]]), "samples differ"


# ----------------------------------------------------------------------------- latent fit


def test_the_latent_fit_matches_the_known_pixels_better_than_the_encoder_and_trusts_the_prior():
    model = tiny("conv-vae")
    with torch.no_grad():  # images the decoder can make, so that a code fits them
        x = model.decode(2 * torch.randn(4, model.config.latent_dim, generator=torch.Generator().manual_seed(5)))
    keep = named_mask("right", 4, 28, 28)

    def known_err(img):
        return ((img - x).square() * keep).sum().item()

    with torch.no_grad():
        start = model.decode(model.encode(keep * x + (1 - keep) * 0.5))
    g = torch.Generator().manual_seed(0)
    fit = latent_inpaint(model, x, keep, model.log_prior, generator=g, init_noise=0.0, steps=100)
    assert known_err(fit) < 0.3 * known_err(start), (known_err(fit), known_err(start))
    assert model.training is False
    # with a huge pixel_std the pixels hardly count: the code goes to the prior's mode (0)
    ignored = latent_inpaint(model, x, keep, model.log_prior, init_noise=0.0, steps=300, lr=0.1, pixel_std=1e3)
    with torch.no_grad():
        mode = model.decode(torch.zeros(4, model.config.latent_dim))
    assert (ignored - mode).abs().max() < 0.02


def test_generator_inversion_finds_the_code_of_an_image_the_generator_made():
    """A GAN has no encoder: inverting its generator (best of the restarts, then the MAP fit) finds a code
    whose image matches an image it made far better than the best random start, the same under a seed."""
    model = lively(tiny("dcgan"))
    z_true = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        x = model.decode(z_true)

    def err(z):
        with torch.no_grad():
            return (model.decode(z) - x).square().flatten(1).sum(1)

    start = invert_generator(model, x, generator=torch.Generator().manual_seed(0), steps=0)
    z = invert_generator(model, x, generator=torch.Generator().manual_seed(0), steps=300, lr=0.05)
    assert bool((err(z) < 0.1 * err(start)).all()), (err(z), err(start))
    assert (err(z) / x[0].numel()).max() < 1e-3
    again = invert_generator(model, x, generator=torch.Generator().manual_seed(0), steps=300, lr=0.05)
    assert torch.equal(z, again) and model.training is False
    via = model.invert(x, generator=torch.Generator().manual_seed(0), steps=300)
    assert torch.equal(via, z)


def test_a_gan_inpaints_by_fitting_its_code_to_the_known_pixels():
    """Semantic inpainting (Yeh et al. 2017): on images the generator can make, the fill of the hidden half
    is far nearer the truth than a fresh sample's, the known pixels stay exactly as given, and a seed
    repeats it."""
    model = lively(tiny("dcgan"))
    with torch.no_grad():
        x = model.decode(torch.randn(6, 8, generator=torch.Generator().manual_seed(4)))
        other = model.decode(torch.randn(6, 8, generator=torch.Generator().manual_seed(5)))
    keep = named_mask("right", 6, 28, 28)
    res = inpaint_images(model, x, keep, samples=1, generator=torch.Generator().manual_seed(0), steps=300)
    hid = (~keep.bool()).expand_as(x)
    fill = res.fills[:, 0]
    assert torch.equal(fill[~hid], x[~hid])
    err, base = (fill - x).square()[hid].mean().item(), (other - x).square()[hid].mean().item()
    assert err < 0.2 * base, (err, base)
    again = inpaint_images(model, x, keep, samples=1, generator=torch.Generator().manual_seed(0), steps=300)
    assert torch.equal(again.fills, res.fills)


def test_the_autoencoders_code_prior_is_its_fitted_gaussian():
    model = tiny("conv-ae")
    d = model.config.latent_dim
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(0))
    model.code_cov.copy_(a @ a.T + 0.1 * torch.eye(d))
    model.code_mean.copy_(torch.randn(d))
    z = torch.randn(5, d)
    want = torch.distributions.MultivariateNormal(model.code_mean, model.code_cov).log_prob(z)
    got = model.log_prior(z)
    assert torch.allclose(got - got[0], want - want[0], atol=1e-4)
    fit = inpaint_images(model, torch.rand(2, 1, 28, 28), named_mask("left", 2, 28, 28), samples=2, generator=None)
    assert fit.fills.shape == (2, 2, 1, 28, 28)


# ----------------------------------------------------------------------------- autoregressive


def test_known_rows_accepts_only_masks_that_hide_a_raster_suffix():
    keep = named_mask("bottom", 2, 28, 28)
    assert known_rows(keep) == 14
    for name in ("center", "left", "right", "top", "random"):
        assert known_rows(named_mask(name, 2, 28, 28, torch.Generator().manual_seed(0))) is None, name


def test_a_pixelcnn_inpaints_the_bottom_rows_as_complete_does_and_refuses_other_masks():
    model = tiny("gated-pixelcnn")
    x = torch.rand(2, 1, 28, 28)
    got = model.inpaint(x, named_mask("bottom", 2, 28, 28), generator=torch.Generator().manual_seed(3))
    want = model.complete(x, 14, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want)
    with pytest.raises(ConfigError, match="raster order: use --mask bottom"):
        inpaint_images(model, x, named_mask("center", 2, 28, 28), samples=1, generator=None)


# ----------------------------------------------------------------------------- masks and the command line


def test_a_mask_file_is_white_to_fill_and_must_be_black_and_white_of_the_right_size(tmp_path):
    from PIL import Image

    arr = np.zeros((28, 28), np.uint8)
    arr[5:9, 10:20] = 255
    Image.fromarray(arr).save(tmp_path / "m.png")
    keep = read_mask(tmp_path / "m.png", 28, 28)
    assert keep.shape == (1, 1, 28, 28) and keep.sum() == 28 * 28 - 40 and keep[0, 0, 6, 12] == 0
    Image.fromarray(arr[:20]).save(tmp_path / "small.png")
    with pytest.raises(ConfigError, match="is 28x20, the model's images are 28x28"):
        read_mask(tmp_path / "small.png", 28, 28)
    arr[0, 0] = 128
    Image.fromarray(arr).save(tmp_path / "grey.png")
    with pytest.raises(ConfigError, match="grey levels other than black and white"):
        read_mask(tmp_path / "grey.png", 28, 28)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inpaint")
    out = {}
    for name in ("ddpm", "conv-vae", "dcgan"):
        overrides = {f"model.{k}": v for k, v in TINY[name].items()}
        overrides.update({"train.sample_every": 0, "data.limit": 200})
        out[name] = root / name
        train(name, "digits", steps=2, batch_size=8, out=out[name], overrides=overrides, progress=False)
    return out


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_inpaint_writes_a_sheet_and_an_npz(runs, tmp_path, capsys):
    from PIL import Image

    png, npz = tmp_path / "a.png", tmp_path / "a.npz"
    args = ["inpaint", str(runs["ddpm"]), "--input", "test", "--mask", "center", "-n", "3", "--samples", "2"]
    assert main([*args, "--set", "steps=4", "--set", "resample=1", "-o", str(png)]) == 0
    assert "inpainted 3 digits test images (25% of the pixels hidden by --mask center)" in capsys.readouterr().out
    assert np.asarray(Image.open(png)).shape[0] > 3 * 28
    assert main([*args, "--set", "steps=4", "-o", str(npz)]) == 0
    fills = np.load(npz)["images"]
    test = load_run(runs["ddpm"]).load_data("test")
    assert fills.shape == (6, 1, 28, 28) and fills.dtype == np.uint8
    keep = named_mask("center", 1, 28, 28)[0].bool().numpy()
    # the known pixels are the test images' own (which -n 3 seeded images: match one of them exactly)
    for f in fills[:, keep]:
        assert any(np.array_equal(f, img[keep]) for img in test.images)
    assert main(["inpaint", str(runs["conv-vae"]), "--input", "test", "--mask", "random", "-o", str(png)]) == 0
    args = ["inpaint", str(runs["dcgan"]), "--input", "test", "--mask", "left", "-n", "2", "--set", "steps=20"]
    assert main([*args, "-o", str(npz)]) == 0
    fills = np.load(npz)["images"]
    assert fills.shape == (8, 1, 28, 28)
    keep = named_mask("left", 1, 28, 28)[0].bool().numpy()
    assert all(any(np.array_equal(f, img[keep]) for img in test.images) for f in fills[:, keep])


@pytest.mark.parametrize(
    ("run", "extra", "message"),
    [
        ("dcgan", ["--mask", "center", "--set", "restarts=0"], "inpainting option restarts must be >= 1, got 0"),
        ("ddpm", ["--mask", "middle"], "--mask middle is not a mask; use one of center"),
        ("ddpm", ["--mask", "nothere.png"], "the mask nothere.png does not exist"),
        ("ddpm", ["--mask", "center", "--set", "jumps=3"], "does not take the inpainting option 'jumps'"),
        ("ddpm", ["--mask", "center", "--set", "steps=0"], "steps must be >= 1"),
        ("conv-vae", ["--mask", "center", "--set", "steps"], "--set takes KEY=VALUE"),
    ],
)
def test_cli_inpaint_errors_are_one_line(runs, tmp_path, capsys, monkeypatch, run, extra, message):
    monkeypatch.chdir(tmp_path)
    code = main(["inpaint", str(runs[run]), "--input", "test", "-n", "2", *extra, "-o", str(tmp_path / "x.png")])
    assert code == 2
    assert message in one_error(capsys)
    assert not (tmp_path / "x.png").exists()
