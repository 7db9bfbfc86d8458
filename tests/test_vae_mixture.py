"""The VAE's mixture prior fitted to the aggregate posterior after training (Ghosh et al. 2020):
EM recovers a known mixture, its density matches torch.distributions, an unfitted mixture is N(0, I),
and training fits it for the raw and the EMA weights before the final checkpoint."""

from __future__ import annotations

import pytest
import torch

from genmodels.errors import ConfigError
from genmodels.models import build_from_config, make_config
from genmodels.models.vae import fit_mixture, log_normal, mixture_log_prob
from helpers import digits_images


def known_mixture(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.5, 0.3, 0.2])
    means = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 4.0]])
    tril = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.3, 0.0], [0.0, 2.0]], [[1.0, 0.0], [-0.8, 0.6]]])
    c = torch.multinomial(weights, n, replacement=True, generator=g)
    x = means[c] + (tril[c] @ torch.randn(n, 2, 1, generator=g)).squeeze(-1)
    return x, weights, means


def test_em_recovers_a_known_mixture():
    x, weights, means = known_mixture(6000)
    logits, m, tril = fit_mixture(x, 3, generator=torch.Generator().manual_seed(1))
    order = [int((m - mu).norm(dim=1).argmin()) for mu in means]  # match fitted to true components
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(torch.softmax(logits, 0)[order], weights, atol=0.02, rtol=0)
    torch.testing.assert_close(m[order], means, atol=0.1, rtol=0)
    # The fitted mixture explains the data better than one Gaussian does.
    one = fit_mixture(x, 1, generator=torch.Generator().manual_seed(1))
    assert mixture_log_prob(x, logits, m, tril).mean() > mixture_log_prob(x, *one).mean() + 0.5


def test_mixture_density_matches_torch_distributions():
    x, _, _ = known_mixture(500, seed=2)
    logits, m, tril = fit_mixture(x, 3, generator=torch.Generator().manual_seed(3))
    dist = torch.distributions
    ref = dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.MultivariateNormal(m, scale_tril=tril))
    torch.testing.assert_close(mixture_log_prob(x, logits, m, tril), ref.log_prob(x), rtol=1e-5, atol=1e-5)


def mixture_vae(**kw):
    cfg = {"channels": [8, 16], "latent_dim": 4, "prior": "mixture", "prior_components": 5, **kw}
    return build_from_config("conv-vae", make_config("conv-vae", cfg))


def test_an_unfitted_mixture_is_the_standard_normal_and_fitting_changes_samples():
    torch.manual_seed(0)
    m = mixture_vae().eval()
    z = torch.randn(7, 3, 4)
    torch.testing.assert_close(m.log_prior(z), log_normal(z, torch.zeros_like(z), torch.zeros_like(z)))
    x, y = digits_images(300)
    before = m.sample(50, generator=torch.Generator().manual_seed(0))
    info = m.fit_to_data(x, y, generator=torch.Generator().manual_seed(0))
    assert info["prior_components"] == 5 and info["prior_fit_images"] == 300
    assert not torch.equal(m.sample(50, generator=torch.Generator().manual_seed(0)), before)
    # Samples come from the mixture: their codes have the fitted mixture's mean, not zero.
    zs = m.sample_prior(20000, torch.Generator().manual_seed(1))
    expected = (torch.softmax(m.prior_logits, 0)[:, None] * m.prior_means).sum(0)
    torch.testing.assert_close(zs.mean(0), expected, atol=0.05, rtol=0)


def test_bad_prior_settings_are_one_clear_error():
    with pytest.raises(ConfigError, match="vae prior"):
        make_config("conv-vae", {"prior": "vamp"})
    with pytest.raises(ConfigError, match="prior_components"):
        make_config("conv-vae", {"prior": "mixture", "prior_components": 0})


def test_training_fits_the_prior_once_for_the_ema_weights_and_shares_it(tmp_path):
    from genmodels.api import load_run, train

    run = train(
        "conv-vae",
        "digits",
        steps=30,
        out=tmp_path / "run",
        overrides={
            "model.channels": [8, 16],
            "model.latent_dim": 4,
            "model.prior": "mixture",
            "model.prior_components": 6,
            "model.binarize": "dynamic",
            "train.ema_decay": 0.9,
            "train.sample_every": 0,
        },
        progress=False,
    )
    assert run.step == 30
    for weights in ("ema", "raw"):
        r = load_run(tmp_path / "run", weights=weights)
        assert r.weights == weights
        means = r.model.prior_means
        assert means.abs().sum() > 0, f"{weights} weights kept the unfitted prior"
        # Fitted to the codes of this very encoder: the mixture assigns them a higher density than N(0, I).
        x, _ = digits_images(200)
        with torch.no_grad():
            mu, logvar = r.model.posterior(x.float() / 255)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        assert r.model.log_prior(z).mean() > log_normal(z, 0 * z, 0 * z).mean()
    raw = load_run(tmp_path / "run", weights="raw").model
    ema = load_run(tmp_path / "run", weights="ema").model
    # One fit, to the EMA encoder's codes, shared by the raw weights (whose own encoder stays theirs).
    assert torch.equal(raw.prior_means, ema.prior_means) and torch.equal(raw.prior_tril, ema.prior_tril)
    assert not torch.equal(raw.head.weight, ema.head.weight)


def test_prior_scale_widens_every_component_and_the_density_follows():
    x, y = digits_images(300)
    spreads = []
    for scale in (1.0, 2.0):
        torch.manual_seed(0)
        m = mixture_vae(prior_scale=scale).eval()
        m.fit_to_data(x, y, generator=torch.Generator().manual_seed(0))
        spreads.append(m.prior_tril)
        z = m.sample_prior(5, torch.Generator().manual_seed(1))
        dist = torch.distributions
        ref = dist.MixtureSameFamily(
            dist.Categorical(logits=m.prior_logits), dist.MultivariateNormal(m.prior_means, scale_tril=m.prior_tril)
        )
        torch.testing.assert_close(m.log_prior(z), ref.log_prob(z), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(spreads[1], 2.0 * spreads[0])
    with pytest.raises(ConfigError, match="prior_scale"):
        make_config("conv-vae", {"prior": "mixture", "prior_scale": 0})
