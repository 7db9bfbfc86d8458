"""Image-to-image translation: the paired and unpaired datasets, pix2pix, CycleGAN and the L1 U-Net, the
``translate`` command and the translation evaluation (issue 13, point 3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genmodels.cli import main
from genmodels.data import load_dataset
from genmodels.data.pairs import sketch
from genmodels.errors import ConfigError
from genmodels.models import Batch
from genmodels.training.session import build_model


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------- data


def test_pair_emoji_twemoji_pairs_each_emoji_with_its_own_twin_and_keeps_the_split():
    pair = load_dataset("pair:emoji,twemoji", "test", image_size=32)
    google = load_dataset("emoji", "test", image_size=32)
    twitter = load_dataset("twemoji", "test", image_size=32)
    assert pair.shape == (6, 32, 32) and pair.pairing == "paired" and pair.sides == ("emoji", "twemoji")
    assert 300 < len(pair) <= min(len(google), len(twitter))
    g, t = {i: k for k, i in enumerate(google.ids)}, {i: k for k, i in enumerate(twitter.ids)}
    for k in (0, len(pair) // 2, len(pair) - 1):
        i = pair.ids[k]
        assert np.array_equal(pair.images[k, :3], google.images[g[i]])
        assert np.array_equal(pair.images[k, 3:], twitter.images[t[i]])
        assert pair.labels[k] == google.labels[g[i]] == twitter.labels[t[i]]
    train = load_dataset("pair:emoji,twemoji", "train", image_size=32)
    assert not set(train.ids) & set(pair.ids), "an emoji must not be in both splits"
    # The two styles really differ: a translator has something to learn.
    assert np.abs(pair.images[:, :3].astype(float) - pair.images[:, 3:]).mean() > 10


def test_colorize_and_edges_derive_their_source_from_the_image():
    col = load_dataset("colorize:emoji", "test", image_size=32, limit=20)
    assert col.shape == (6, 32, 32) and col.pairing == "paired"
    src, tgt = col.images[:, :3].astype(int), col.images[:, 3:].astype(int)
    assert (src[:, 0] == src[:, 1]).all() and (src[:, 1] == src[:, 2]).all()  # grey
    luma = (tgt[:, 0] * 299 + tgt[:, 1] * 587 + tgt[:, 2] * 114 + 500) // 1000
    assert np.array_equal(src[:, 0], luma)
    square = np.zeros((1, 1, 16, 16), np.uint8)
    square[0, 0, 4:12, 4:12] = 255
    edges = sketch(square)[0, 0] == 0
    ring = np.zeros((16, 16), bool)
    ring[3:13, 3:13] = True
    ring[5:11, 5:11] = False
    assert np.array_equal(edges, ring), "edges lie on both sides of the square's border and nowhere else"
    fm = load_dataset("edges:digits", "train", limit=10)
    assert fm.shape == (2, 28, 28) and set(np.unique(fm.images[:, 0])) <= {0, 255}
    with pytest.raises(ConfigError, match="colorize:digits needs colour images"):
        load_dataset("colorize:digits", "train")
    with pytest.raises(ConfigError, match=r"pairs images by their ids.*unpaired:digits,emoji"):
        load_dataset("pair:digits,emoji", "train")
    with pytest.raises(ConfigError, match="must name two datasets"):
        load_dataset("pair:emoji", "train")


def test_unpaired_data_draws_b_independently_of_a():
    un = load_dataset("unpaired:digits,emoji", "train", image_size=28, limit=300)
    digits = load_dataset("digits", "train", limit=300)
    emoji = load_dataset("emoji", "train", image_size=28, channels=1)
    assert un.pairing == "unpaired" and un.shape == (2, 28, 28)
    assert np.array_equal(un.images[:, :1], digits.images) and np.array_equal(un.labels, digits.labels)
    known = {im.tobytes() for im in emoji.images}
    assert all(im.tobytes() in known for im in un.images[:, 1:])
    order = [emoji.images.tobytes().find(im.tobytes()) for im in un.images[:20, 1:]]
    assert order != sorted(order), "B's images are shuffled, not taken in order"


# ----------------------------------------------------------------- models


def test_the_patchgan_sees_16_34_and_70_pixel_patches():
    from genmodels.nets.translator import PatchDiscriminator

    for layers, field in ((1, 16), (2, 34), (3, 70)):
        d = PatchDiscriminator(1, 4, layers, "none").double()
        x = torch.randn(1, 1, 96, 96, dtype=torch.double, requires_grad=True)
        out = d(x)
        out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
        rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
        cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
        assert int(rows[-1] - rows[0]) + 1 == field and int(cols[-1] - cols[0]) + 1 == field


def test_cyclegan_losses_are_the_papers():
    """With both generators the identity map the cycle and identity losses vanish, and the generator loss
    is the least-squares adversarial part alone; D's loss is Eq. 2's least-squares form for each side."""
    torch.manual_seed(0)
    m = build_model("cyclegan", (2, 16, 16), width=4, d_width=4, depth=2)
    m.G.forward = lambda x: x  # type: ignore[method-assign]
    m.F.forward = lambda x: x  # type: ignore[method-assign]
    x = torch.rand(4, 2, 16, 16)
    out = m.generator_loss(Batch(x))
    a, b = x[:, :1] * 2 - 1, x[:, 1:] * 2 - 1
    adv = (m.D_B(a) - 1).pow(2).mean() + (m.D_A(b) - 1).pow(2).mean()
    assert float(out.metrics["cycle"]) == 0.0 and float(out.metrics["identity"]) == 0.0
    assert torch.allclose(out.loss, adv, atol=1e-6) and torch.allclose(out.metrics["g_adv"], adv.detach(), atol=1e-6)
    d = m.discriminator_loss(Batch(x))
    want = 0.5 * ((m.D_B(b) - 1).pow(2).mean() + m.D_B(a).pow(2).mean()) + 0.5 * (
        (m.D_A(a) - 1).pow(2).mean() + m.D_A(b).pow(2).mean()
    )
    assert torch.allclose(d.loss, want, atol=1e-6)
    # Identity loss: a generator that swaps nothing for b is penalised by |G(b) - b| (here: G(b) = -b).
    m.G.forward = lambda x: -x  # type: ignore[method-assign]
    out = m.generator_loss(Batch(x))
    assert torch.allclose(out.metrics["identity"], (-b - b).abs().mean(), atol=1e-6)


def test_a_translator_refuses_data_it_cannot_learn_from(tmp_path, capsys):
    cases = [
        (["train", "pix2pix", "--dataset", "unpaired:digits,emoji"], "pix2pix learns from paired images"),
        (["train", "pix2pix", "--dataset", "digits"], "train it on a translation dataset"),
        (["train", "dcgan", "--dataset", "edges:digits"], "is a translation dataset"),
    ]
    for i, (args, message) in enumerate(cases):
        code, _, err = run_cli(capsys, *args, "--steps", "1", "--out", str(tmp_path / f"r{i}"), "--no-progress")
        assert code == 2 and message.lower() in err.lower() and err.count("\n") == 1, err
        assert not (tmp_path / f"r{i}").exists()


# ----------------------------------------------------------------- training, translate, evaluate


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
    """pix2pix on digits' sketches, a short run: it must learn to draw a digit from its edges."""
    from genmodels.api import train

    out = tmp_path_factory.mktemp("p2p") / "run"
    train(
        "pix2pix",
        "edges:digits",
        steps=300,
        batch_size=32,
        out=out,
        progress=False,
        overrides={"model.width": 16, "model.d_width": 16, "train.sample_every": 0, "train.seed": 1},
    )
    return out


def test_pix2pix_learns_to_draw_digits_from_their_sketches(pix2pix_run):
    from genmodels.eval.translation import evaluate_translation

    rep = evaluate_translation(pix2pix_run)
    fwd = rep["directions"]["forward"]
    assert rep["pairing"] == "paired" and rep["n"] == len(load_dataset("digits", "test"))
    # The sketch itself is far from the digit (white paper, black lines); the translation is close.
    assert fwd["translated"]["l1"] < 0.5 * fwd["input"]["l1"], fwd
    assert fwd["translated"]["fid"] < fwd["input"]["fid"], fwd
    assert json.loads((pix2pix_run / "translation.json").read_text())["n"] == rep["n"]
    assert (pix2pix_run / "samples" / "final.png").exists()


def test_translate_writes_input_translation_and_target_rows(pix2pix_run, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "t.png"
    code, msg, err = run_cli(capsys, "translate", str(pix2pix_run), "--input", "test", "-n", "6", "-o", str(out))
    assert code == 0, err
    assert "rows: input, translation, target" in msg
    w, h = Image.open(out).size
    assert w > h and round(w / h) == 2  # 6 columns, 3 rows
    npz = tmp_path / "t.npz"
    assert main(["translate", str(pix2pix_run), "--input", "test", "-n", "5", "-o", str(npz)]) == 0
    capsys.readouterr()
    arr = np.load(npz)["images"]
    assert arr.shape == (5, 1, 28, 28) and arr.dtype == np.uint8
    # The same input gives the same translation (no randomness at translation time).
    again = tmp_path / "u.npz"
    assert main(["translate", str(pix2pix_run), "--input", "test", "-n", "5", "-o", str(again)]) == 0
    assert np.array_equal(np.load(again)["images"], arr)
    for args, message in (
        (["--direction", "backward"], "pix2pix translates forward, not 'backward'"),
        (["-n", "0"], "-n must be in 1..1000"),
    ):
        code, _, err = run_cli(capsys, "translate", str(pix2pix_run), "--input", "test", "-o", str(out), *args)
        assert code == 2 and message in err and err.count("\n") == 1, err
    code, msg, err = run_cli(capsys, "evaluate", str(pix2pix_run), "--no-progress")
    assert code == 0, err
    assert "forward to digits, translated: FID" in msg and "translation.json" in msg.splitlines()[-1]
    code, _, err = run_cli(capsys, "sample", str(pix2pix_run), "-n", "4", "-o", str(tmp_path / "s.png"))
    assert code == 2 and "is a translator and draws no samples" in err and err.count("\n") == 1, err
    png = str(tmp_path / "x.png")
    for args in (
        ["inpaint", str(pix2pix_run), "--input", "test", "--mask", "center", "-o", png],
        ["edit", str(pix2pix_run), "--input", "test", "--strength", "0.5", "-o", png],
        ["interpolate", str(pix2pix_run), "-o", png],
        ["reconstruct", str(pix2pix_run), "-o", png],
        ["latent", str(pix2pix_run), "-o", png],
        ["complete", str(pix2pix_run), "--input", "test", "--rows", "10", "-o", png],
    ):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args[0], err)


def test_translate_refuses_a_model_that_is_not_a_translator(tmp_path, capsys):
    from genmodels.api import train

    train("mlp-ae", "digits", steps=2, out=tmp_path / "ae", progress=False, overrides={"model.hidden": [8]})
    code, _, err = run_cli(capsys, "translate", str(tmp_path / "ae"), "--input", "test", "-o", str(tmp_path / "x.png"))
    assert code == 2 and "mlp-ae is not a translator" in err and err.count("\n") == 1, err


def test_cyclegan_learns_cycles_on_unpaired_data_and_translates_both_ways(tmp_path, capsys):
    from genmodels.api import train
    from genmodels.training.logger import read_metrics

    out = tmp_path / "cg"
    overrides = {"model.width": 16, "model.d_width": 8, "model.depth": 2, "train.sample_every": 0, "data.limit": 400}
    train("cyclegan", "unpaired:digits,fashion-mnist", steps=300, batch_size=16, out=out, progress=False,
          overrides={**overrides, "train.log_every": 10})  # fmt: skip
    rec = [r for r in read_metrics(out / "metrics.jsonl") if "cycle" in r]
    assert rec[-1]["cycle"] < 0.75 * rec[0]["cycle"], (rec[0], rec[-1])
    # The cycle keeps each test digit's identity: F(G(a)) is nearer its own a than the other digits.
    from genmodels.runs import load_run
    from genmodels.viz.translation import split_pairs, translate_images

    run = load_run(out)
    a = split_pairs(torch.from_numpy(run.load_data("test").images[:200]).float() / 255)[0]
    back = translate_images(run.model, translate_images(run.model, a), "backward")
    own = (back - a).abs().flatten(1).mean(1)
    others = (back - a.roll(1, 0)).abs().flatten(1).mean(1)
    assert own.mean() < 0.7 * others.mean(), (own.mean(), others.mean())
    # Its own (unpaired) test split has no pairs to compare with; a paired split of the same shape has.
    from genmodels.eval.translation import evaluate_translation

    own = evaluate_translation(out, n=100)
    assert set(own["directions"]) == {"forward", "backward"} and "l1" not in own["directions"]["forward"]["translated"]
    paired = evaluate_translation(out, n=100, dataset="edges:digits", out=tmp_path / "paired.json")
    assert paired["pairing"] == "paired" and "l1" in paired["directions"]["backward"]["input"]
    with pytest.raises(ConfigError, match="translates"):
        evaluate_translation(out, dataset="digits")  # plain images: nothing to translate into
    for direction in ("forward", "backward"):
        code, _, err = run_cli(
            capsys, "translate", str(out), "--input", "test", "-n", "4", "--direction", direction, "-o",
            str(tmp_path / f"{direction}.png"),
        )  # fmt: skip
        assert code == 0, err


def test_evaluate_without_a_feature_net_for_the_size_still_gives_the_pixel_error(tmp_path):
    """Emoji at 16 px: the emoji net takes 64 px, so no FID; the paired L1 is still measured and said."""
    from genmodels.api import train
    from genmodels.eval.translation import evaluate_translation

    out = tmp_path / "small"
    sets = {"model.width": 4, "model.d_width": 4, "model.depth": 2, "data.image_size": 16, "train.sample_every": 0}
    train("pix2pix", "pair:emoji,twemoji", steps=2, batch_size=8, out=out, progress=False, overrides=sets)
    rep = evaluate_translation(out, n=50)
    fwd = rep["directions"]["forward"]
    assert "takes 3x64x64 images, these are 3x16x16" in fwd["no_feature_metrics"]
    assert "fid" not in fwd["translated"] and 0 < fwd["translated"]["l1"] < 1 and 0 < fwd["input"]["l1"] < 1
    assert any("no FID" in line for line in rep["summary_lines"])
