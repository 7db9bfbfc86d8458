"""Family facts of the GANs: the classic Keras MLP GAN reproduced exactly (layers, BatchNorm momentum and
epsilon, Keras' moving variance, glorot init, the two-step D update on real then inference-mode fakes),
the losses against hand computations (the WGAN-GP penalty above all), spectral norm, conditioning,
truncation, diagnostics, EMA with BatchNorm buffers, and short trainings on real images that learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genmodels.errors import ConfigError
from genmodels.models import Batch, build_from_config, make_config
from genmodels.models.base import to_model_range
from genmodels.models.gan import KerasBatchNorm1d, gradient_penalty, truncated_normal
from genmodels.training.config import TrainConfig
from genmodels.training.ema import EMA
from genmodels.training.trainer import Trainer
from helpers import digits_images, nn_distance


def gan(name: str, shape=(1, 28, 28), **kw):
    return build_from_config(name, make_config(name, {"image_shape": list(shape), **kw}))


def real_batch(n: int = 16) -> Batch:
    imgs, labels = digits_images(n)
    return Batch(imgs.float() / 255.0, labels)


# ----------------------------------------------------------------- the classic MLP GAN, exactly


def test_classic_architecture_is_the_keras_tutorials():
    m = gan("gan-mlp")
    g = list(m.generator)
    kinds = [type(layer).__name__ for layer in g]
    assert kinds == ["Linear", "LeakyReLU", "KerasBatchNorm1d"] * 3 + ["Linear", "Tanh", "Unflatten"]
    widths = [(layer.in_features, layer.out_features) for layer in g if isinstance(layer, nn.Linear)]
    assert widths == [(100, 256), (256, 512), (512, 1024), (1024, 784)]
    for layer in g:
        if isinstance(layer, nn.LeakyReLU):
            assert layer.negative_slope == 0.2
        if isinstance(layer, nn.BatchNorm1d):
            # Keras BatchNormalization(momentum=0.8) keeps 0.8 of the old statistic: PyTorch momentum 0.2.
            assert layer.momentum == pytest.approx(0.2) and layer.eps == pytest.approx(1e-3)
    d = [layer for layer in m.discriminator.body if isinstance(layer, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in d] == [(784, 512), (512, 256)]
    assert (m.discriminator.head.in_features, m.discriminator.head.out_features) == (256, 1)
    assert m.discriminator.head.bias is not None, "Keras' Dense(1, sigmoid) has a bias"
    assert all(layer.negative_slope == 0.2 for layer in m.discriminator.body if isinstance(layer, nn.LeakyReLU))
    # Keras' summary of the tutorial: G 1,489,936 and D 533,505 trainable parameters.
    assert sum(p.numel() for p in m.generator_parameters()) == 1_489_936
    assert sum(p.numel() for p in m.discriminator_parameters()) == 533_505
    assert m.latent_dim == 100 and m.n_critic == 1
    x = m.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28)


def test_classic_init_is_keras_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    m = gan("gan-mlp")
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(linears) == 7
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        limit = math.sqrt(6.0 / (fan_in + fan_out))  # glorot_uniform: U(-limit, limit), std limit / sqrt(3)
        w = layer.weight.detach()
        assert w.abs().max() <= limit
        assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0
    # PyTorch's own default (kaiming_uniform with a = sqrt(5)) is U(-1/sqrt(fan_in), ..) with random biases:
    # for the 1024 -> 784 layer that bound is 0.031, glorot's is 0.058, so the two are told apart.
    last = linears[3]
    assert last.weight.abs().max() > 1.5 / math.sqrt(1024)


def test_keras_batchnorm_statistics_by_hand():
    torch.manual_seed(0)
    bn = KerasBatchNorm1d(5, eps=1e-3, momentum=0.2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(32, 5) * 3 + 1
    y = bn(x)
    mean = x.mean(0)
    var_biased = ((x - mean) ** 2).mean(0)
    # Training: normalise by the batch's biased variance (both frameworks) ...
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var_biased + 1e-3) * bn.weight + bn.bias)
    # ... and move the statistics as Keras does: moving = 0.8 * moving + 0.2 * batch, biased variance
    # (PyTorch's BatchNorm would use the unbiased one, 32/31 times larger).
    torch.testing.assert_close(bn.running_mean, 0.2 * mean)
    torch.testing.assert_close(bn.running_var, 0.8 * torch.ones(5) + 0.2 * var_biased)
    ref = nn.BatchNorm1d(5, eps=1e-3, momentum=0.2)
    ref(x)
    assert not torch.allclose(ref.running_var, bn.running_var), "the unbiased update must differ"
    # Inference: the moving statistics.
    bn.eval()
    torch.testing.assert_close(bn(x), (x - bn.running_mean) / torch.sqrt(bn.running_var + 1e-3) * bn.weight + bn.bias)


def test_classic_losses_are_sigmoid_bce_by_hand():
    torch.manual_seed(0)
    m = gan("gan-mlp")
    b = real_batch(8)
    d_prob = torch.sigmoid(m.discriminator(to_model_range(b.x)))
    real = m.discriminator_loss_real(b)
    torch.testing.assert_close(real.loss, F.binary_cross_entropy(d_prob, torch.ones(8)))
    torch.testing.assert_close(real.metrics["d_real"], d_prob.mean().detach())
    # The fake half: fakes labelled 0, drawn from z ~ N(0, I) with G in inference mode (Keras' predict).
    torch.manual_seed(1)
    fake = m.discriminator_loss_fake(b)
    torch.manual_seed(1)
    z = torch.randn(8, 100)
    m.generator.eval()
    with torch.no_grad():
        x_fake = m.generator(z)
    m.generator.train()
    p_fake = torch.sigmoid(m.discriminator(x_fake))
    torch.testing.assert_close(fake.loss, F.binary_cross_entropy(p_fake, torch.zeros(8)))
    # G's loss: its fakes (G in training mode) labelled 1, the non-saturating loss.
    torch.manual_seed(2)
    g = m.generator_loss(b)
    torch.manual_seed(2)
    z = torch.randn(8, 100)
    p = torch.sigmoid(m.discriminator(m.generator(z)))
    torch.testing.assert_close(g.loss, F.binary_cross_entropy(p, torch.ones(8)))


def test_classic_iteration_is_two_d_steps_then_one_g_step_with_keras_batch_statistics():
    """Per iteration the tutorial calls D.train_on_batch on reals, then on fakes from G.predict (G in
    inference mode: its BatchNorm statistics do not move), then trains G through the frozen D (the
    only place G's BatchNorm statistics move)."""
    torch.manual_seed(0)
    m = gan("gan-mlp")
    bn = [x for x in m.generator if isinstance(x, nn.BatchNorm1d)]
    b = real_batch(32)
    before = [x.running_mean.clone() for x in bn]
    m.discriminator_loss_fake(b)
    assert m.generator.training, "the generator's mode must be restored"
    assert all(torch.equal(a, x.running_mean) for a, x in zip(before, bn, strict=True))
    m.generator_loss(b)
    assert all(not torch.equal(a, x.running_mean) for a, x in zip(before, bn, strict=True))

    imgs, labels = digits_images(256)
    d_before = [p.detach().clone() for p in m.discriminator_parameters()]
    t = Trainer(m, imgs, labels, TrainConfig(steps=3, batch_size=32, progress=False, log_every=1, lr=2e-4))
    t.fit()
    opt_d, opt_g = t.optimizers["opt_d"], t.optimizers["opt_g"]
    steps_d = {int(s["step"]) for s in opt_d.state.values()}
    steps_g = {int(s["step"]) for s in opt_g.state.values()}
    assert steps_d == {6} and steps_g == {3}, "two Adam steps of D (real, fake) per G step"
    assert t.batches == 3, "one real batch per iteration"
    assert bn[0].num_batches_tracked.item() == 1 + 3, "G's statistics move once per iteration (its G step)"
    assert any(not torch.equal(a, p) for a, p in zip(d_before, m.discriminator_parameters(), strict=True))
    rec = t.history[-1]
    assert {"d_real", "d_fake", "d_loss", "g_loss", "d_grad_norm", "g_grad_norm"} <= set(rec)


def test_generator_forwards_per_iteration():
    """With one D update per G update the G loss reuses the D update's fakes (one G forward per
    iteration, as the PyTorch DCGAN example); n_critic > 1 draws fresh fakes; the Keras loop takes two."""
    small = {"g_channels": [16, 8], "d_channels": [8, 16], "latent_dim": 8}
    imgs, labels = digits_images(64)
    for name, kw, expected in (("dcgan", small, 1), ("wgan-gp", {**small, "n_critic": 3}, 4), ("gan-mlp", {}, 2)):
        torch.manual_seed(0)
        m = gan(name, **kw)
        calls = []
        m.generator.register_forward_hook(lambda *args, calls=calls: calls.append(1))
        # (the plan set, so no step probe runs the generator too)
        cfg = TrainConfig(steps=1, batch_size=16, progress=False, channels_last="off", compile="off")
        Trainer(m, imgs, labels, cfg).fit()
        assert len(calls) == expected, name
    # The reused fakes are exactly G(z) for the z the D loss drew, and the G loss draws no new noise.
    torch.manual_seed(0)
    m = gan("dcgan", **small)
    b = real_batch(8)
    torch.manual_seed(7)
    m.discriminator_loss(b)
    state = torch.get_rng_state()
    g = m.generator_loss(b)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(7)
    fake = m.generator(torch.randn(8, 8))
    torch.testing.assert_close(g.loss, F.softplus(-m.discriminator(fake)).mean())


# ----------------------------------------------------------------- losses by hand


def test_gradient_penalty_matches_a_hand_computation():
    """A critic with a known input gradient: D(x) = <w, x> + 0.5 ||x||^2, so grad D(xhat) = w + xhat and
    the penalty is mean_i (||w + xhat_i|| - 1)^2 with xhat_i = eps_i x_i + (1 - eps_i) x~_i."""
    g = torch.Generator().manual_seed(0)
    real = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1
    fake = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1
    eps = torch.rand(5, 1, 1, 1, generator=g)
    w = torch.randn(1, 1, 4, 4, generator=g) * 0.3

    def critic(x, y=None):
        return (w * x).sum((1, 2, 3)) + 0.5 * x.square().sum((1, 2, 3))

    gp = gradient_penalty(critic, real, fake, eps)
    xr, xf, e, wn = (t.double().numpy() for t in (real, fake, eps, w))
    xhat = e * xr + (1 - e) * xf
    norms = np.sqrt(((wn + xhat) ** 2).reshape(5, -1).sum(1))
    assert gp.item() == pytest.approx(float(((norms - 1) ** 2).mean()), rel=1e-5)
    # A critic whose gradient has norm 1 everywhere is not penalised.
    u = w / w.norm()
    assert gradient_penalty(lambda x, y=None: (u * x).sum((1, 2, 3)), real, fake, eps).item() < 1e-10


def test_wgan_gp_loss_is_wasserstein_term_plus_lambda_times_penalty():
    torch.manual_seed(0)
    m = gan("wgan-gp", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8)
    b = real_batch(6)
    torch.manual_seed(3)
    out = m.discriminator_loss(b)
    # The same draws by hand: z (for the fakes), then eps.
    torch.manual_seed(3)
    z = torch.randn(6, 8)
    with torch.no_grad():
        fake = m.generator(z)
    eps = torch.rand(6, 1, 1, 1)
    real = to_model_range(b.x)
    d_real, d_fake = m.discriminator(real), m.discriminator(fake)
    gp = gradient_penalty(m.discriminator, real, fake, eps)
    torch.testing.assert_close(out.loss, d_fake.mean() - d_real.mean() + 10.0 * gp)
    torch.testing.assert_close(out.metrics["gp"], gp.detach())
    torch.testing.assert_close(out.metrics["w_dist"], (d_real.mean() - d_fake.mean()).detach())
    # The penalty is differentiable in the critic's weights (double backprop): lambda changes D's gradient.
    grads = []
    for lam in (0.0, 10.0):
        m.config.gp_lambda = lam
        m.zero_grad()
        torch.manual_seed(3)
        m.discriminator_loss(b).loss.backward()
        grads.append(m.discriminator.head.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])
    # Under no_grad (evaluation) the value is still computed.
    with torch.no_grad():
        torch.manual_seed(3)
        m.config.gp_lambda = 10.0
        torch.testing.assert_close(m.discriminator_loss(b).loss, out.loss)


def test_hinge_losses_by_hand():
    torch.manual_seed(0)
    m = gan("sngan", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8).eval()  # eval: fixed SN estimates
    b = real_batch(6)
    torch.manual_seed(5)
    out = m.discriminator_loss(b)
    torch.manual_seed(5)
    with torch.no_grad():
        fake = m.generator(torch.randn(6, 8))
    d_real, d_fake = m.discriminator(to_model_range(b.x)), m.discriminator(fake)
    torch.testing.assert_close(out.loss, F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean())
    torch.manual_seed(6)
    g = m.generator_loss(b)
    torch.manual_seed(6)
    torch.testing.assert_close(g.loss, -m.discriminator(m.generator(torch.randn(6, 8))).mean())


def test_spectral_norm_makes_every_d_layer_1_lipschitz():
    torch.manual_seed(0)
    m = gan("sngan", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8)
    x = to_model_range(real_batch(8).x)
    for _ in range(30):  # one power iteration per training forward (Miyato et al. 2018, Algorithm 1)
        m.discriminator(x)
    layers = [x for x in m.discriminator.modules() if isinstance(x, nn.Linear | nn.Conv2d)]
    assert len(layers) == 3  # two convs and the head
    for layer in layers:
        w = layer.weight.detach().flatten(1)  # the normalised weight; a conv's as (out, in * k * k)
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.02)
        raw = layer.parametrizations.weight.original.detach().flatten(1)
        assert torch.linalg.matrix_norm(raw, ord=2).item() != pytest.approx(1.0, abs=0.05)


# ----------------------------------------------------------------- conditioning, latents, truncation


def test_conditional_generator_and_projection_discriminator_use_the_labels():
    torch.manual_seed(0)
    m = gan("cgan", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8).eval()
    z = torch.randn(4, 8)
    a, b = m.decode(z, torch.zeros(4, dtype=torch.long)), m.decode(z, torch.full((4,), 7))
    assert not torch.allclose(a, b)
    x = to_model_range(real_batch(4).x)
    assert not torch.allclose(
        m.discriminator(x, torch.zeros(4, dtype=torch.long)), m.discriminator(x, torch.ones(4, dtype=torch.long))
    )
    s = m.sample(6, generator=torch.Generator().manual_seed(0), labels=torch.arange(6) % 10)
    assert s.shape == (6, 1, 28, 28)
    with pytest.raises(ConfigError, match="labels"):
        m.decode(z)
    # Any GAN becomes conditional with model.conditional=true.
    c = gan("dcgan", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8, conditional=True)
    assert c.conditional and c.discriminator.embed is not None


def test_truncation_draws_a_truncated_normal():
    t = 1.0
    z = truncated_normal((200_000,), t, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert z.abs().max().item() <= t
    phi = math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    mass = math.erf(t / math.sqrt(2))
    assert z.var().item() == pytest.approx(1 - 2 * t * phi / mass, rel=0.01)  # the truncated normal's variance
    assert abs(z.mean().item()) < 0.01
    m = gan("sngan", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8).eval()
    a = m.sample(4, generator=torch.Generator().manual_seed(1), truncation=0.5)
    b = m.sample(4, generator=torch.Generator().manual_seed(1), truncation=0.5)
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="truncation"):
        m.sample(2, truncation=0.0)


def test_prior_interpolation_decodes_along_slerp_paths(tmp_path):
    from genmodels.viz import interpolation_sheet

    m = gan("sngan", g_channels=[16, 8], d_channels=[8, 16], latent_dim=8).eval()
    interpolation_sheet(m, None, tmp_path / "interp.png", steps=5, pairs=2, generator=torch.Generator().manual_seed(0))
    assert (tmp_path / "interp.png").stat().st_size > 0
    # sample() is decode() of z ~ N(0, I) drawn from the given generator, G in inference mode.
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(m.sample(3, generator=torch.Generator().manual_seed(4)), m.decode(z))
    assert m.decode(z).min() >= 0 and m.decode(z).max() <= 1


def test_bad_configs_fail_with_one_clear_line():
    with pytest.raises(ConfigError, match=r"data\.image_size"):
        gan("dcgan", shape=(1, 30, 30), g_channels=[16, 8, 4])
    with pytest.raises(ConfigError, match="d_norm"):
        gan("wgan-gp", d_norm="batch")
    with pytest.raises(ConfigError, match="keras_compat"):
        gan("dcgan", keras_compat=True)
    with pytest.raises(ConfigError, match="did you mean 'hinge'"):
        gan("sngan", loss="hinje")


# ----------------------------------------------------------------- EMA with BatchNorm, training that learns


def test_ema_generator_averages_batchnorm_statistics_consistently():
    """EMA averages G's BatchNorm running statistics with its weights, so the EMA generator in
    inference mode normalises by statistics that fit the averaged weights."""
    torch.manual_seed(0)
    m = gan("dcgan", g_channels=[32, 16], d_channels=[16, 32], latent_dim=16)
    imgs, labels = digits_images(512)
    t = Trainer(
        m,
        imgs,
        labels,
        TrainConfig(steps=150, batch_size=32, progress=False, lr=2e-4, betas=(0.5, 0.999), ema_decay=0.95),
    )
    t.fit()
    assert isinstance(t.ema, EMA)
    names = [k for k in t.ema.shadow if k.startswith("generator.") and k.endswith("running_var")]
    assert names, "G's BatchNorm buffers are part of the EMA"
    live = m.state_dict()
    assert all(not torch.equal(t.ema.shadow[k], live[k]) for k in names)
    with t.ema.swapped_in(m):
        bn = next(x for x in m.generator.modules() if isinstance(x, nn.BatchNorm2d))
        seen = {}
        hook = bn.register_forward_hook(lambda mod, inp, out: seen.setdefault("x", inp[0]))
        m.generator.train()
        with torch.no_grad():
            m.generate(torch.randn(2048, 16))
        hook.remove()
        m.generator.eval()
        x = seen["x"]
        batch_mean = x.mean((0, 2, 3))
        batch_std = x.var((0, 2, 3)).sqrt()
        # The averaged running statistics fit the averaged weights' actual activations.
        err = ((batch_mean - bn.running_mean).abs() / batch_std).max().item()
        assert err < 0.25, err
        ratio = (bn.running_var / batch_std.square()).sqrt()
        assert ratio.min().item() > 0.75 and ratio.max().item() < 1.33


@pytest.mark.parametrize(
    ("name", "steps", "small"),
    [("gan-mlp", 500, {}), ("sngan", 200, {"g_channels": [32, 16], "d_channels": [16, 32], "latent_dim": 32})],
)
def test_short_training_on_real_digits_moves_samples_toward_the_data(name, steps, small):
    torch.manual_seed(0)
    m = gan(name, **small)
    imgs, labels = digits_images()
    data = imgs[:500].float() / 255.0

    def distances() -> tuple[float, float]:
        """(mean distance of a sample to its nearest data image, distance between the mean images)."""
        s = m.eval().sample(200, generator=torch.Generator().manual_seed(0))
        m.train()
        return nn_distance(s, data), float((s.mean(0) - data.mean(0)).norm())

    nn_before, mean_before = distances()
    cfg = TrainConfig(steps=steps, batch_size=32, progress=False, lr=2e-4, betas=(0.5, 0.999), log_every=50)
    t = Trainer(m, imgs, labels, cfg)
    t.fit()
    nn_after, mean_after = distances()
    assert nn_after < 0.6 * nn_before, (nn_before, nn_after)
    assert mean_after < 0.4 * mean_before, (mean_before, mean_after)
    # The diagnostics stay finite, and over the last records D scores reals above fakes.
    assert all(math.isfinite(v) for rec in t.history for v in rec.values())
    tail = t.history[-3:]
    assert sum(r["d_real"] for r in tail) > sum(r["d_fake"] for r in tail)
    assert all(r["d_grad_norm"] > 0 and r["g_grad_norm"] > 0 for r in tail)


class _Replay(nn.Module):
    """A 'generator' that replays chosen real images: its class coverage is known exactly."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.images = images

    def loss(self, batch):
        from genmodels.models.base import LossOutput

        return LossOutput(loss=self.w**2, metrics={})

    def sample(self, n, *, generator=None, labels=None):
        return self.images[:n]


def test_class_monitor_warns_when_coverage_falls(capsys):
    """Issue 4, point 3: the real Fashion-MNIST feature net watches the samples' classes."""
    from genmodels.data import load_dataset
    from genmodels.eval.monitor import class_monitor as _class_monitor
    from genmodels.training.config import DataConfig

    test = load_dataset("fashion-mnist", "test")
    imgs = torch.from_numpy(test.images[2000:2400]).float() / 255
    one_class = imgs[torch.from_numpy(test.labels[2000:2400]) == 7]  # sneakers only
    monitor = _class_monitor(DataConfig(dataset="fashion-mnist"), (1, 28, 28), torch.device("cpu"))
    model = _Replay(imgs)
    trainer = Trainer(model, imgs, None, TrainConfig(steps=1, monitor_classes=len(one_class)), monitor=monitor)
    good = trainer.watch_classes()
    assert good["class_coverage"] == 1.0 and good["class_kl"] < 0.2
    assert "mode collapse" not in capsys.readouterr().err
    model.images = one_class
    bad = trainer.watch_classes()
    assert bad["class_coverage"] <= 0.2 and bad["class_kl"] > 1.5
    err = capsys.readouterr().err
    assert "possible mode collapse" in err and "best so far 100%" in err
