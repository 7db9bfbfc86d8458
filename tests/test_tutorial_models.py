"""The tutorials' own models (issue 15): their architectures pinned layer by layer and by parameter count,
the GANs' update order, and what the much-copied broken VAE objective does to the codes and the samples."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genmodels.api import train
from genmodels.models import Batch, build_from_config, make_config
from genmodels.training import TrainConfig, Trainer
from helpers import digits_images


def build(name: str):
    return build_from_config(name, make_config(name, {}))


def kinds(seq) -> list[str]:
    return [type(layer).__name__ for layer in seq]


def widths(seq) -> list[tuple[int, int]]:
    return [(layer.in_features, layer.out_features) for layer in seq if isinstance(layer, nn.Linear)]


def count(params) -> int:
    return sum(p.numel() for p in params)


def test_keras_one_hidden_layer_gan_architecture():
    m = build("keras-gan-1h")
    assert kinds(m.generator) == ["Linear", "ReLU", "Linear", "Sigmoid", "Unflatten"]
    assert widths(m.generator) == [(100, 128), (128, 784)]
    assert kinds(m.discriminator.body) == ["Flatten", "Linear", "ReLU"]
    assert widths(m.discriminator.body) == [(784, 128)]
    assert (m.discriminator.head.in_features, m.discriminator.head.out_features) == (128, 1)
    assert m.discriminator.head.bias is not None  # Keras' Dense(1, activation="sigmoid")
    # Keras' summary: G 12,928 + 101,136; D 100,480 + 129.
    assert count(m.generator_parameters()) == 114_064 and count(m.discriminator_parameters()) == 100_609
    # Glorot-uniform weights and zero biases (Keras' Dense defaults).
    assert all(layer.bias.abs().sum() == 0 for layer in m.generator if isinstance(layer, nn.Linear))
    x = m.eval().sample(8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 1, 28, 28) and x.min() >= 0 and x.max() <= 1


def test_keras_gan_sees_data_in_0_1_and_trains_two_d_steps_then_g_with_keras_adam(tmp_path):
    torch.manual_seed(0)
    m = build("keras-gan-1h")
    imgs, labels = digits_images(32)
    b = Batch(imgs.float() / 255.0, labels)
    # The tutorial scales pixels to [0, 1] for its sigmoid G, and D sees them so.
    d_real = m.discriminator(b.x)
    torch.testing.assert_close(m.discriminator_loss_real(b).loss, F.softplus(-d_real).mean())
    t = Trainer(m, *digits_images(256), TrainConfig(steps=3, batch_size=32, progress=False, log_every=1))
    t.fit()
    steps_d = {int(s["step"]) for s in t.optimizers["opt_d"].state.values()}
    steps_g = {int(s["step"]) for s in t.optimizers["opt_g"].state.values()}
    assert steps_d == {6} and steps_g == {3}, "D.train_on_batch on reals, then on fakes, then the combined model"
    run = train("keras-gan-1h", "digits", steps=2, out=tmp_path / "k", progress=False)
    assert run.config["train"]["lr"] == 1e-3 and tuple(run.config["train"]["betas"]) == (0.9, 0.999)


def test_tensorflow_tutorial_gan_architecture_losses_and_update_order(tmp_path):
    m = build("tf-gan")
    g = kinds(m.generator)
    assert g == ["Linear", "ReLU"] * 3 + ["Linear", "Tanh", "Unflatten"]
    assert widths(m.generator) == [(100, 128), (128, 256), (256, 512), (512, 784)]
    assert kinds(m.discriminator.body) == ["Flatten"] + ["Linear", "ReLU"] * 3
    assert widths(m.discriminator.body) == [(784, 512), (512, 256), (256, 128)]
    assert (m.discriminator.head.in_features, m.discriminator.head.out_features) == (128, 1)
    assert count(m.generator_parameters()) == 579_728 and count(m.discriminator_parameters()) == 566_273
    # Sigmoid cross-entropy on logits, written correctly: D's on reals labelled 1 and fakes labelled 0,
    # G's on fakes labelled 1 (the non-saturating loss), by hand with the same fakes.
    torch.manual_seed(0)
    imgs, labels = digits_images(16)
    b = Batch(imgs.float() / 255.0, labels)
    torch.manual_seed(3)
    d_loss = m.discriminator_loss(b).loss
    torch.manual_seed(3)
    fake = m.generator(torch.randn(16, 100))
    d_real, d_fake = m.discriminator(b.x * 2 - 1), m.discriminator(fake)
    by_hand = F.binary_cross_entropy_with_logits(d_real, torch.ones(16)) + F.binary_cross_entropy_with_logits(
        d_fake, torch.zeros(16)
    )
    torch.testing.assert_close(d_loss, by_hand)
    g_loss = m.generator_loss(b).loss
    torch.testing.assert_close(g_loss, F.binary_cross_entropy_with_logits(m.discriminator(fake), torch.ones(16)))
    t = Trainer(m, *digits_images(256), TrainConfig(steps=3, batch_size=32, progress=False))
    t.fit()
    steps_d = {int(s["step"]) for s in t.optimizers["opt_d"].state.values()}
    steps_g = {int(s["step"]) for s in t.optimizers["opt_g"].state.values()}
    assert steps_d == {3} and steps_g == {3}, "one D step, then one G step, per iteration"
    run = train("tf-gan", "digits", steps=2, out=tmp_path / "t", progress=False)
    assert run.config["train"]["lr"] == 1e-4


@pytest.mark.parametrize("name", ["tutorial-vae", "broken-vae"])
def test_tutorial_vae_architecture(name):
    m = build(name)
    assert kinds(m.encoder) == ["Flatten", "Sequential"] and kinds(m.encoder[1]) == ["Linear", "ReLU"]
    assert widths(m.encoder[1]) == [(784, 128)]
    assert (m.head.in_features, m.head.out_features) == (128, 4)  # mean and log-variance, 2 each
    dec = m.decoder[0]
    assert kinds(dec) == ["Linear", "ReLU", "Linear"] and widths(dec) == [(2, 128), (128, 784)]
    assert m.config.likelihood == "bernoulli"  # sigmoid outputs, cross-entropy on grey levels
    assert count(m.parameters()) == 100_480 + 516 + 384 + 101_136


def test_the_broken_objective_leaves_codes_off_the_prior_and_its_samples_poor(tmp_path):
    """Trained side by side on Fashion-MNIST: the correct ELBO keeps the aggregate codes near N(0, I); the
    broken one (one head as mean and log-variance, the code's mean as 'KL') pushes them thousands of units
    away, so draws from N(0, I) all land in one small region of the code space and decode to nearly the
    same image."""
    runs = {}
    for name in ("tutorial-vae", "broken-vae"):
        runs[name] = train(
            name, "fashion-mnist", steps=1500, batch_size=128, out=tmp_path / name, progress=False,
            overrides={"data.limit": 10000},
        )  # fmt: skip
    test = runs["tutorial-vae"].load_data("test")
    x = torch.from_numpy(test.images[:2000]).float() / 255.0
    stats = {}
    for name, run in runs.items():
        z = run.model.encode(x)
        mean_off = z.mean(0).norm().item()
        std_off = (z.std(0) - 1).abs().max().item()
        samples = run.sample(500, seed=0).flatten(1)
        # How much the samples differ from each other: the per-pixel spread across them.
        stats[name] = (mean_off, std_off, samples.std(0).mean().item())
    good, bad = stats["tutorial-vae"], stats["broken-vae"]
    assert good[0] < 1.0 and good[1] < 0.8, f"the correct ELBO keeps the codes near N(0, I): {good}"
    assert bad[0] > 3 * max(good[0], 0.1) or bad[1] > 3 * max(good[1], 0.1), f"broken codes off the prior: {bad}"
    # N(0, I) covers a sliver of where the broken codes lie, so its draws decode to nearly one image.
    assert bad[2] < 0.25 * good[2], f"broken samples from N(0, I) should barely vary: {bad[2]} vs {good[2]}"
