"""Family facts of the autoregressive models: causality for every pixel and colour (the gradient of each
output with respect to the inputs at and after its position is exactly zero), the Gated PixelCNN's
missing blind spot, likelihoods that are exact distributions (they sum to one over every possible
image), samplers that draw from the model's own conditionals, completion, and learning on real data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genmodels.api import load_run, train
from genmodels.cli import main
from genmodels.errors import ConfigError
from genmodels.models import Batch, build_from_config, make_config
from genmodels.models.likelihoods import discretized_logistic_mixture_log_prob
from genmodels.models.pixelcnn import PixelCNN
from genmodels.nets.masked import causal_mask, channel_groups
from helpers import TINY, nn_distance

ARCHS = {"masked": "masked-pixelcnn", "gated": "gated-pixelcnn", "snail": "pixelsnail"}


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: their ops take microseconds, and a second thread only adds synchronisation
    (tens of milliseconds an op when the machine is busy)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model(name: str = "gated-pixelcnn", shape=(1, 6, 6), dtype=torch.float64, seed: int = 0, **kw) -> PixelCNN:
    """A small model with random weights in float64 (exact zeros stay exact; samplers agree bit for bit)."""
    base = {"channels": 12, "layers": 3, "first_kernel": 3, "output": "logistic", "mixtures": 2}
    torch.manual_seed(seed)
    cfg = make_config(name, {**base, **kw, "image_shape": list(shape)})
    m = build_from_config(name, cfg).to(dtype).eval()
    # Random biases and a livelier init so no unit is silent and every dependence shows in the gradient.
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def jacobian(m: PixelCNN, x: torch.Tensor, y=None) -> torch.Tensor:
    """d out[ch, r, c] / d x[ch', r', c'] for every output and input: (C, H, W, C, H, W).

    Each output is a random projection of the pixel's P output parameters, which cannot cancel to
    exactly zero by chance. All rows come from one batched backward pass (torch.func.jacrev).
    """
    w = torch.randn(m.config.params_per_channel, dtype=x.dtype, generator=torch.Generator().manual_seed(0))

    def outputs(img: torch.Tensor) -> torch.Tensor:
        out = m(img[None], y)[0]  # (C, P, H, W)
        return (out * w[None, :, None, None]).sum(1)

    return torch.func.jacrev(outputs)(x[0])


def input_gradients(m: PixelCNN, x: torch.Tensor, r: int, c: int, ch: int) -> torch.Tensor:
    """The gradient of one output (pixel (r, c), colour ch, randomly projected) w.r.t. the input: (C, H, W)."""
    x = x.clone().requires_grad_(True)
    out = m(x)[0, ch, :, r, c]
    w = torch.randn(out.shape[0], dtype=x.dtype, generator=torch.Generator().manual_seed(0))
    (out * w).sum().backward()
    return x.grad[0]


def future_mask(shape, r: int, c: int, ch: int) -> torch.Tensor:
    """True at every input the output (r, c, ch) must not see: later pixels, and colours >= ch at (r, c)."""
    colors, h, w = shape
    order = torch.arange(h * w).view(1, h, w).expand(colors, h, w)
    fut = order > r * w + c
    fut[ch:, r, c] = True
    return fut


# ----------------------------------------------------------------------------- causality


def outputs_and_futures(jac: torch.Tensor, shape):
    """For every output (r, c, ch): its gradient row (C, H, W) and the mask of inputs it must not see."""
    colors, h, w = shape
    for r, c, ch in itertools.product(range(h), range(w), range(colors)):
        yield (r, c, ch), jac[ch, r, c], future_mask(shape, r, c, ch)


@pytest.mark.parametrize("colors", [1, 3], ids=["gray", "rgb"])
@pytest.mark.parametrize("arch", ["masked", "gated", "snail"])
@pytest.mark.parametrize("output", ["logistic", "softmax"])
def test_every_output_sees_only_the_past_exactly(arch, colors, output):
    """For every pixel and colour, d out(i) / d x(j) == 0 exactly for all j >= i (raster order, R -> G -> B),
    and the output does depend on the past (so the zeros are not vacuous)."""
    shape = (colors, 5, 5)
    # 8 feature channels per colour group so a ReLU cannot silence a group at a pixel by chance.
    # One PixelSNAIL block already sees every earlier pixel; three, with this lively init, saturate an ELU.
    layers = 1 if arch == "snail" else 3
    m = model(ARCHS[arch], shape, output=output, layers=layers, channels=24 if colors == 3 else 12)
    x = torch.rand(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    jac = jacobian(m, x)
    for (r, c, ch), g, fut in outputs_and_futures(jac, shape):
        assert torch.all(g[fut] == 0), f"output (row {r}, col {c}, colour {ch}) sees the future: {g[fut].abs().max()}"
        if (r, c, ch) != (0, 0, 0):
            assert g[~fut].abs().sum() > 0, f"output ({r}, {c}, {ch}) ignores the past"
    # Within a pixel, G depends on R and B on both R and G (the channel masking), for some pixel at least.
    if colors == 3:
        g = jac[2, 2, 2]
        assert g[0, 2, 2] != 0 and g[1, 2, 2] != 0


def test_conditional_model_is_causal_and_uses_the_label():
    shape = (1, 5, 5)
    m = model("conditional-pixelcnn", shape)
    x = torch.rand(1, *shape, dtype=torch.float64)
    y = torch.tensor([3])
    jac = jacobian(m, x, y)
    for r, c in itertools.product(range(5), range(5)):
        g = jac[0, r, c]
        assert torch.all(g[future_mask(shape, r, c, 0)] == 0)
    lp = [m.log_prob(m(x, torch.tensor([k])), x).item() for k in range(3)]
    assert len(set(lp)) == 3, "the class label must change the distribution"
    with pytest.raises(ConfigError, match="labels"):
        m(x)


def test_masks_follow_the_paper():
    """Mask A closes the centre to the same colour, mask B opens it; nothing after the centre is open."""
    g3 = channel_groups(3, 3)
    a = causal_mask(g3, g3, (3, 3), (1, 1), "A")
    b = causal_mask(g3, g3, (3, 3), (1, 1), "B")
    assert torch.equal(a[:, :, 1, 1], torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0]]))
    assert torch.equal(b[:, :, 1, 1], torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 1, 1]]))
    for m in (a, b):
        assert torch.all(m[:, :, 0, :] == 1) and torch.all(m[:, :, 1, 0] == 1)
        assert torch.all(m[:, :, 1, 2] == 0) and torch.all(m[:, :, 2, :] == 0)
    assert channel_groups(8, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_gated_pixelcnn_has_no_blind_spot_where_the_plain_pixelcnn_has_one():
    """The pixel one row up and three columns right of the output is in the plain PixelCNN's blind spot:
    stacked masked 3x3 kernels reach one column further right per row up, so it misses (r-1, c+3) while
    reaching pixels further up and further right. The Gated PixelCNN's vertical stack sees it."""
    shape = (1, 10, 10)
    r, c = 6, 3
    masked = model("masked-pixelcnn", shape, layers=6)
    gated = model("gated-pixelcnn", shape, layers=6)
    x = torch.rand(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    gm = input_gradients(masked, x, r, c, 0)[0]
    gg = input_gradients(gated, x, r, c, 0)[0]
    assert gm[r - 1, c + 3] == 0, "the plain PixelCNN should miss this pixel"
    assert gm[r - 3, c + 3] != 0 and gm[r - 4, c + 4] != 0, "...while seeing pixels further up in that column"
    assert gg[r - 1, c + 3] != 0, "the Gated PixelCNN must see the pixel the blind spot hides"
    blind = [(i, j) for i in range(r) for j in range(c + 1, 10) if gm[i, j] == 0 and gm[:i, j].abs().sum() > 0]
    assert blind, "the masked model's blind spot: earlier pixels it misses while seeing ones above them"


def test_gated_pixelcnn_sees_every_earlier_pixel():
    """With enough layers, every output depends on every earlier pixel (and earlier colours of its own)."""
    shape = (3, 6, 6)
    m = model("gated-pixelcnn", shape, layers=4, channels=24, first_kernel=7)
    x = torch.rand(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    jac = jacobian(m, x)
    for r, c, ch in itertools.product(range(6), range(6), range(3)):
        g = jac[ch, r, c]
        fut = future_mask(shape, r, c, ch)
        assert torch.all(g[~fut] != 0), f"output ({r}, {c}, {ch}) misses an earlier input"


@pytest.mark.parametrize("colors", [1, 3], ids=["gray", "rgb"])
def test_pixelsnail_sees_every_earlier_pixel_with_one_block(colors):
    """Causal attention over all earlier positions: with a single block and 3x3 kernels (whose cone alone
    misses most of the image), every output depends on every earlier pixel and earlier colour, and on
    nothing else. The pixel just before a row break (no causal kernel reaches it from the next row's
    start) is seen through the raster-shifted input."""
    shape = (colors, 6, 7)
    m = model("pixelsnail", shape, layers=1, res_blocks=1, channels=24 if colors == 3 else 12)
    x = torch.rand(1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    jac = jacobian(m, x)
    for (r, c, ch), g, fut in outputs_and_futures(jac, shape):
        assert torch.all(g[fut] == 0), f"output ({r}, {c}, {ch}) sees the future"
        assert torch.all(g[~fut] != 0), f"output ({r}, {c}, {ch}) misses an earlier input"
    # Without attention the same kernels would miss pixels: the cone of a 3x3 first layer and one
    # 3x3 block reaches two columns right per two rows up at most.
    cone = model("pixelsnail", shape, layers=1, res_blocks=1, channels=12 * colors)
    with torch.no_grad():
        for block in cone.net.blocks:
            block.attention.value.weight.zero_()
            block.attention.value.bias.zero_()
    g = jacobian(cone, x)[0, 5, 0]
    assert g[0, 0, 6] == 0 and g[0, 2, 5] == 0, "without attention the far past is out of reach"


# ----------------------------------------------------------------------------- exact likelihood


def all_images(shape, levels: int) -> torch.Tensor:
    """Every image of ``shape`` whose values take ``levels`` evenly spaced grey levels in [0, 1]."""
    dims = math.prod(shape)
    grid = torch.cartesian_prod(*[torch.arange(levels, dtype=torch.float64)] * dims).view(-1, *shape)
    return grid / (levels - 1)


@pytest.mark.parametrize(
    ("name", "shape", "output", "levels"),
    [
        ("gated-pixelcnn", (1, 2, 2), "bernoulli", 2),
        ("masked-pixelcnn", (1, 2, 2), "bernoulli", 2),
        ("gated-pixelcnn", (3, 1, 2), "bernoulli", 2),
        ("masked-pixelcnn", (3, 2, 1), "bernoulli", 2),
        ("gated-pixelcnn", (1, 1, 2), "softmax", 256),
        ("masked-pixelcnn", (1, 2, 1), "logistic", 256),
        ("gated-pixelcnn", (1, 1, 2), "logistic", 256),
        ("pixelsnail", (1, 2, 2), "bernoulli", 2),
        ("pixelsnail", (3, 1, 2), "bernoulli", 2),
        ("pixelsnail", (1, 1, 2), "softmax", 256),
        ("pixelsnail", (1, 1, 2), "logistic", 256),
    ],
)
def test_the_likelihood_sums_to_one_over_every_possible_image(name, shape, output, levels):
    """sum_x exp(log p(x)) == 1 over all 2^D binary or 256^D 8-bit images: the model is a normalised
    distribution, which needs both causality and normalised conditionals."""
    m = model(name, shape, output=output, binarize="static")
    x = all_images(shape, levels)
    with torch.no_grad():
        lp = torch.cat([m.log_prob(m(xb), xb) for xb in x.split(8192)])
    assert torch.logsumexp(lp, 0).exp().item() == pytest.approx(1.0, abs=1e-9)
    assert lp.std() > 0.05, "a trivially uniform model would pass; these weights are random"


def test_logistic_mixture_matches_a_direct_sum_of_components():
    g = torch.Generator().manual_seed(0)
    logits, mean, log_scale = (torch.randn(2, 1, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    x = torch.randint(0, 256, (2, 1, 2, 2), generator=g).double() / 255
    ours = discretized_logistic_mixture_log_prob(logits, mean, 0.5 * log_scale - 2, x)
    # By hand: bin [x - 1/255, x + 1/255] in [-1, 1] units; the end bins take the tails.
    xs = (x * 2 - 1).unsqueeze(2)
    s = torch.exp(0.5 * log_scale - 2)
    upper = torch.where(xs > 0.999, torch.ones_like(xs), torch.sigmoid((xs + 1 / 255 - mean) / s))
    lower = torch.where(xs < -0.999, torch.zeros_like(xs), torch.sigmoid((xs - 1 / 255 - mean) / s))
    per_pixel = (F.softmax(logits, 2) * (upper - lower)).sum(2)
    torch.testing.assert_close(ours, per_pixel.log().flatten(1).sum(1))


def test_softmax_loss_and_nll_are_the_cross_entropy_by_hand():
    m = model("masked-pixelcnn", (1, 4, 4), output="softmax")
    x = torch.randint(0, 256, (3, 1, 4, 4), generator=torch.Generator().manual_seed(0)).double() / 255
    logits = m.net(x)  # (B, 256, H, W) for one channel
    by_hand = F.cross_entropy(logits, (x[:, 0] * 255).round().long(), reduction="none").sum((1, 2))
    torch.testing.assert_close(m.nll(x)["exact"], by_hand)
    out = m.loss(Batch(x))
    torch.testing.assert_close(out.loss, by_hand.mean() / 16)
    torch.testing.assert_close(out.metrics["bpd"], by_hand.mean() / (16 * math.log(2)))


def test_binarisation_dynamic_and_static():
    x = torch.full((2000, 1, 2, 2), 0.3, dtype=torch.float64)
    dyn = model("gated-pixelcnn", (1, 2, 2), output="bernoulli")
    stat = model("gated-pixelcnn", (1, 2, 2), output="bernoulli", binarize="static")
    b = dyn.observe(x, torch.Generator().manual_seed(0))
    assert set(b.unique().tolist()) == {0.0, 1.0} and abs(b.mean().item() - 0.3) < 0.02
    assert torch.equal(stat.observe(x), torch.zeros_like(x)) and torch.equal(stat.observe(x + 0.3), torch.ones_like(x))
    assert dyn.likelihood_data == "binarized" and model("gated-pixelcnn").likelihood_data == "8-bit"
    # The evaluation seed fixes the test binarisation, so the reported NLL is reproducible.
    a = dyn.nll(x[:10], generator=torch.Generator().manual_seed(5))["exact"]
    assert torch.equal(a, dyn.nll(x[:10], generator=torch.Generator().manual_seed(5))["exact"])


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    ("name", "shape", "output"),
    [
        ("gated-pixelcnn", (1, 5, 4), "logistic"),
        ("gated-pixelcnn", (3, 4, 3), "softmax"),
        ("masked-pixelcnn", (1, 6, 4), "logistic"),
        ("masked-pixelcnn", (3, 3, 3), "bernoulli"),
        ("conditional-pixelcnn", (1, 4, 4), "bernoulli"),
        ("pixelsnail", (1, 5, 4), "logistic"),
        ("pixelsnail", (3, 3, 4), "softmax"),
        ("conditional-pixelsnail", (1, 4, 4), "bernoulli"),
    ],
)
def test_fast_sampler_draws_the_same_images_as_one_full_pass_per_pixel(name, shape, output):
    """The cached / cropped sampler is exact: from the same generator it draws the very same images as
    running the whole network once per pixel and colour, for sampling and for completion."""
    m = model(name, shape, output=output, layers=3 if "masked" in name else 2)
    labels = torch.arange(5) % 10
    draws = {}
    for sampler in ("naive", "fast"):
        g = torch.Generator().manual_seed(7)
        s = m.sample(5, generator=g, labels=labels, sampler=sampler)
        x = torch.rand(5, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        c = m.complete(x, 2, generator=g, labels=labels, sampler=sampler)
        draws[sampler] = (s, c)
    assert torch.equal(draws["naive"][0], draws["fast"][0])
    assert torch.equal(draws["naive"][1], draws["fast"][1])
    assert draws["fast"][0].unique().numel() > 1, "degenerate samples would make the comparison empty"


def test_samples_follow_the_models_own_distribution():
    """Empirical frequencies of all 16 binary 2x2 images match exp(log p(x)) (total variation < 0.02)."""
    m = model("gated-pixelcnn", (1, 2, 2), output="bernoulli", binarize="static", layers=2)
    x = all_images((1, 2, 2), 2)
    with torch.no_grad():
        p = m.log_prob(m(x), x).exp()
    s = m.sample(40000, generator=torch.Generator().manual_seed(0))
    code = (s.flatten(1) * torch.tensor([8.0, 4, 2, 1], dtype=s.dtype)).sum(1).long()
    freq = torch.bincount(code, minlength=16).double() / len(s)
    ref = p[(x.flatten(1) * torch.tensor([8.0, 4, 2, 1], dtype=x.dtype)).sum(1).long().argsort()]
    assert 0.5 * (freq - ref).abs().sum() < 0.02


@pytest.mark.parametrize("output", ["logistic", "softmax"])
def test_pixel_draws_follow_the_8bit_conditional(output):
    """Draws of one grey pixel match its 256-level distribution (the logistic by inverse CDF and rounding)."""
    m = model("gated-pixelcnn", (1, 1, 1), output=output, mixtures=3)
    levels = all_images((1, 1, 1), 256)
    with torch.no_grad():
        p = m.log_prob(m(levels), levels).exp()
    s = m.sample(60000, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount((s.flatten() * 255).round().long(), minlength=256).double() / len(s)
    assert 0.5 * (freq - p).abs().sum() < 0.03
    cold = m.sample(2000, generator=torch.Generator().manual_seed(0), temperature=0.05)
    assert cold.std() < 0.5 * s.std(), "a low temperature concentrates the draws"


def test_completion_keeps_the_top_rows_and_varies_below():
    m = model("gated-pixelcnn", (1, 6, 5), output="softmax")
    x = torch.randint(0, 256, (3, 1, 6, 5), generator=torch.Generator().manual_seed(0)).double() / 255
    a = m.complete(x, 2, generator=torch.Generator().manual_seed(1))
    b = m.complete(x, 2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[:, :, :2], x[:, :, :2]) and torch.equal(b[:, :, :2], x[:, :, :2])
    assert not torch.equal(a[:, :, 2:], b[:, :, 2:])
    assert torch.equal(m.complete(x, 6), x)
    with pytest.raises(ConfigError, match="rows"):
        m.complete(x, 7)
    with pytest.raises(ConfigError, match="6x5"):
        m.complete(x[:, :, :4], 2)


def test_bad_options_are_one_line_errors():
    m = model()
    with pytest.raises(ConfigError, match="sampler"):
        m.sample(2, sampler="fastest")
    with pytest.raises(ConfigError, match="temperature"):
        m.sample(2, temperature=0.0)
    for bad, match in [
        ({"arch": "pixelrnn"}, "arch"),
        ({"output": "gaussian"}, "output"),
        ({"kernel": 4}, "odd"),
        ({"channels": 4, "image_shape": [3, 8, 8]}, "channels"),
        ({"binarize": "none"}, "binarize"),
        ({"image_shape": [2, 8, 8]}, "1- or 3-channel"),
    ]:
        with pytest.raises(ConfigError, match=match):
            make_config("gated-pixelcnn", bad)


# ----------------------------------------------------------------------------- learning on real data


def test_training_on_fashion_mnist_lowers_test_bits_per_dim_and_samples_move_toward_the_data():
    from genmodels.data import load_dataset
    from genmodels.training.batches import images_tensor
    from genmodels.training.config import TrainConfig
    from genmodels.training.trainer import Trainer

    train_ds = load_dataset("fashion-mnist", "train", limit=3000)
    test = torch.from_numpy(load_dataset("fashion-mnist", "test").images[:200]).float() / 255
    torch.manual_seed(0)
    cfg = make_config("gated-pixelcnn", {"channels": 16, "layers": 3, "output": "logistic", "mixtures": 3})
    m = build_from_config("gated-pixelcnn", cfg)

    def bits_per_dim() -> float:
        m.eval()
        with torch.no_grad():
            return m.nll(test)["exact"].mean().item() / (784 * math.log(2))

    def sample_distance() -> float:
        m.eval()
        s = m.sample(12, generator=torch.Generator().manual_seed(0))
        return nn_distance(s, test)

    before, far = bits_per_dim(), sample_distance()
    tc = TrainConfig(steps=120, batch_size=16, lr=5e-3, warmup_steps=10, precision="auto", progress=False)
    t = Trainer(m, images_tensor(train_ds.images), None, tc)
    t.fit()
    after, near = bits_per_dim(), sample_distance()
    assert after < before - 1.5 and after < 4.6, (before, after)
    assert near < 0.8 * far, (far, near)


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pixelcnn") / "run"
    overrides = {f"model.{k}": v for k, v in TINY["gated-pixelcnn"].items()}
    overrides.update({"train.sample_every": 0, "data.limit": 200})
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train("gated-pixelcnn", "digits", steps=3, batch_size=8, out=out, overrides=overrides, progress=False)
    finally:
        torch.set_num_threads(before)
    return out


def test_cli_complete_from_a_split_an_npz_and_a_png(tiny_run, tmp_path, capsys):
    from PIL import Image

    assert (
        main(["complete", str(tiny_run), "--input", "test", "--rows", "14", "-n", "3", "-o", str(tmp_path / "a.png")])
        == 0
    )
    sheet = np.asarray(Image.open(tmp_path / "a.png"))
    assert sheet.shape[0] > sheet.shape[1] / 6 * 2, "3 rows of (kept, 4 completions, original)"
    assert "top 14 rows" in capsys.readouterr().out

    imgs = load_run(tiny_run).load_data("test").images[:2]
    np.savez(tmp_path / "in.npz", images=imgs)
    assert (
        main(
            [
                "complete",
                str(tiny_run),
                "--input",
                str(tmp_path / "in.npz"),
                "--rows",
                "10",
                "--samples",
                "2",
                "-o",
                str(tmp_path / "c.npz"),
            ]
        )
        == 0
    )
    done = np.load(tmp_path / "c.npz")["images"]
    assert done.shape == (4, 1, 28, 28) and done.dtype == np.uint8
    assert np.array_equal(done[:, :, :10], np.repeat(imgs, 2, 0)[:, :, :10])

    Image.fromarray(imgs[0, 0]).resize((56, 56)).save(tmp_path / "one.png")
    assert (
        main(
            [
                "complete",
                str(tiny_run),
                "--input",
                str(tmp_path / "one.png"),
                "--rows",
                "7",
                "-o",
                str(tmp_path / "d.png"),
            ]
        )
        == 0
    )
    assert "resized from 56x56" in capsys.readouterr().out


def test_cli_complete_errors_are_one_line(tiny_run, tmp_path, capsys):
    assert main(["complete", str(tiny_run), "--input", "test", "--rows", "29", "-o", str(tmp_path / "x.png")]) == 2
    assert "--rows must be in 0..28" in capsys.readouterr().err
    assert main(["complete", str(tiny_run), "--input", "nope.png", "--rows", "3", "-o", str(tmp_path / "x.png")]) == 2
    assert "is not a file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["complete", "--help"])
    assert e.value.code == 0
    assert "genmodels complete" in capsys.readouterr().out


def test_evaluate_reports_exact_nats_and_bits_per_dim(tiny_run):
    from genmodels.eval.likelihood import likelihood_report

    run = load_run(tiny_run)
    x = torch.from_numpy(run.load_data("test").images[:20]).float() / 255
    rep = likelihood_report(run.model, x, None)
    assert rep["data"] == "8-bit" and set(rep["nats"]) == {"exact"}
    assert rep["bpd"]["exact"] == pytest.approx(rep["nats"]["exact"] / (784 * math.log(2)))
    direct = run.model.nll(x)["exact"].mean().item()
    assert rep["nats"]["exact"] == pytest.approx(direct, rel=1e-6)
