"""The shared contract every registered model honours (DESIGN.md convention 12)."""

from __future__ import annotations

import pytest
import torch

from genmodels.api import load_run, train
from genmodels.models import MODELS, Batch, build_from_config, make_config
from genmodels.models.base import Adversarial, Translates
from genmodels.training.config import TrainConfig
from genmodels.training.trainer import Trainer
from helpers import TINY, TRANSLATORS, data_of, digits_images, stacked

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def data_shape(name: str, shape=(1, 28, 28)) -> tuple:
    """The shape of what a model trains on: a translator's data stacks source and target images."""
    return (2 * shape[0], *shape[1:]) if name in TRANSLATORS else tuple(shape)


def tiny(name: str, shape=(1, 28, 28), classes: int = 10):
    cfg = make_config(name, {**TINY[name], "image_shape": list(data_shape(name, shape)), "num_classes": classes})
    return build_from_config(name, cfg)


def outputs(m, n: int, seed: int) -> torch.Tensor:
    """What a model makes: n samples (randomness from a generator seeded ``seed``), or a translator's
    translations of n random source images drawn with that seed."""
    if isinstance(m, Translates):
        return m.translate(batch(m.config.source_shape, n, seed).x)
    return m.sample(n, generator=torch.Generator().manual_seed(seed))


def train_images(name: str, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labels = digits_images(n)
    return (stacked(imgs) if name in TRANSLATORS else imgs), labels


def batch(shape=(1, 28, 28), n: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g).float() / 255.0
    return Batch(x, torch.randint(0, 10, (n,), generator=g))


def losses(m, b: Batch) -> list:
    """Every loss a model trains on: ``loss``, or a GAN's critic and generator losses."""
    if isinstance(m, Adversarial):
        return [getattr(m, name)(b) for name in (*m.critic_methods, "generator_loss")]
    return [m.loss(b)]


def test_every_model_has_a_tiny_config_and_a_description():
    assert set(TINY) == set(MODELS), "add a tiny test config for every registered model"
    for name, spec in MODELS.items():
        assert spec.family and len(spec.description) > 10, name


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_ranges_and_finite_loss(name, shape):
    torch.manual_seed(0)
    m = tiny(name, shape)
    for out in losses(m, batch(data_shape(name, shape))):
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(torch.isfinite(v) for v in out.metrics.values())
    m.eval()
    n = 2 if shape[-1] > 32 and MODELS[name].family == "pixelcnn" else 6  # 12,288 sequential steps per 64-px sample
    s = outputs(m, n, 1)
    assert s.shape == (n, *shape)
    assert s.dtype == torch.float32 and s.min() >= 0.0 and s.max() <= 1.0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_step_changes_weights_and_eval_does_not(name):
    torch.manual_seed(0)
    m = tiny(name)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    imgs, labels = train_images(name)
    t = Trainer(m, imgs, labels, TrainConfig(steps=2, batch_size=16, progress=False, log_every=1))
    t.fit()
    after = m.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "a training step must change the weights"
    params = dict(m.named_parameters())
    assert all(not torch.equal(before[k], params[k]) for k in params if params[k].requires_grad), (
        "every trainable parameter should receive a gradient step"
    )
    # Evaluation (loss, sample, reconstruct in eval mode) must leave every weight and buffer alone.
    m.eval()
    snap = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        losses(m, batch(data_shape(name)))
        outputs(m, 4, 0)
        if hasattr(m, "reconstruct"):
            m.reconstruct(batch().x, **({"y": batch().y} if m.conditional else {}))
    assert all(torch.equal(snap[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deterministic_under_a_seed(name):
    imgs, labels = train_images(name)

    def run():
        torch.manual_seed(123)  # model init
        m = tiny(name)
        Trainer(m, imgs, labels, TrainConfig(steps=3, batch_size=16, progress=False, seed=5)).fit()
        m.eval()
        return m.state_dict(), outputs(m, 4, 9)

    (w1, s1), (w2, s2) = run(), run()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert torch.equal(s1, s2)
    m = tiny(name).eval()
    a, b = outputs(m, 4, 1), outputs(m, 4, 2)
    # samples take their randomness from the generator; a translation depends on its input alone
    assert not torch.equal(a, b), "different seeds (or inputs) must give different images"
    if isinstance(m, Translates):
        torch.manual_seed(7)  # the global stream must not matter in eval mode (dropout is off)
        assert torch.equal(outputs(m, 4, 1), a)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_save_load_round_trip(name, tmp_path):
    overrides = {f"model.{k}": v for k, v in TINY[name].items()}
    overrides.update({"train.ema_decay": 0.9, "train.sample_every": 0, "data.limit": 200})
    run = train(name, data_of(name), steps=3, batch_size=16, out=tmp_path / "run", overrides=overrides, progress=False)
    again = load_run(tmp_path / "run")
    assert again.step == 3 and again.weights == "ema"
    sd1, sd2 = run.model.state_dict(), again.model.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert torch.equal(outputs(run.model.eval(), 5, 3), outputs(again.model, 5, 3))
    raw = load_run(tmp_path / "run", weights="raw")
    differs = any(not torch.equal(raw.model.state_dict()[k], sd1[k]) for k in sd1 if sd1[k].is_floating_point())
    assert differs, "EMA and raw weights must both be stored and differ after training"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_bf16_autocast_step_trains_and_keeps_float32_weights(name):
    torch.manual_seed(0)
    m = tiny(name)
    imgs, labels = train_images(name)
    t = Trainer(m, imgs, labels, TrainConfig(steps=2, batch_size=16, progress=False, precision="bf16", log_every=1))
    t.fit()
    assert all(torch.isfinite(torch.tensor(v)) for v in t.history[-1].values())
    assert all(p.dtype == torch.float32 for p in m.parameters())
    assert all(v.dtype in (torch.float32, torch.int64) for v in m.state_dict().values())


FAMILY_NAMES = ("autoencoder", "vae", "gan", "pixelcnn", "diffusion", "translation")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_familys_recommended_model_builds_and_trains_a_step_at_every_shape(family, shape):
    """The recommended configs (with their by_shape picks), not the tiny ones: one real step each."""
    from genmodels.models import FAMILIES
    from genmodels.training.config import resolve_run_config
    from genmodels.training.session import build_model

    torch.manual_seed(0)
    shape = data_shape(FAMILIES[family], shape)
    cfg = resolve_run_config(family, shape=shape)
    m = build_model(family, shape)
    assert m.config.image_shape == tuple(shape) or list(m.config.image_shape) == list(shape)
    for key, value in cfg["model"].items():
        if key not in ("image_shape", "num_classes"):
            got = getattr(m.config, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, key
    for out in losses(m, batch(shape, n=4)):
        assert torch.isfinite(out.loss)
        out.loss.backward()


def test_by_shape_rules_pick_settings_for_colour_and_64_px_and_explicit_settings_win():
    from genmodels.training.config import resolve_run_config

    grey = resolve_run_config("vae", shape=(1, 28, 28))["model"]
    colour = resolve_run_config("vae", shape=(3, 32, 32))["model"]
    big = resolve_run_config("vae", shape=(3, 64, 64))["model"]
    assert (grey["likelihood"], grey["binarize"]) == ("bernoulli", "dynamic")
    assert (colour["likelihood"], colour["binarize"]) == ("logistic", "none")
    assert len(big["channels"]) == len(colour["channels"]) + 1  # a stage more for 64 px
    for family, key in (("gan", "g_channels"), ("autoencoder", "channels")):
        small = resolve_run_config(family, shape=(3, 32, 32))["model"][key]
        assert len(resolve_run_config(family, shape=(3, 64, 64))["model"][key]) == len(small) + 1
    for family, key in (("diffusion", "channels"),):  # a level more for 64 px, on the same patches
        small = resolve_run_config(family, shape=(3, 32, 32))["model"]
        big = resolve_run_config(family, shape=(3, 64, 64))["model"]
        assert len(big[key]) == len(small[key]) + 1 and big["patch"] == small["patch"] == 2
    # --set, --config and flags sit above the shape rules
    mine = resolve_run_config("vae", shape=(3, 64, 64), sets={"latent_dim": 7, "model.likelihood": "gaussian"})
    assert mine["model"]["latent_dim"] == 7 and mine["model"]["likelihood"] == "gaussian"
    # a model name (not a family) has no recommended config and no rules
    assert resolve_run_config("conv-vae", shape=(3, 64, 64))["model"]["likelihood"] == "bernoulli"
