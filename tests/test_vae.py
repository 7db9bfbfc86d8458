"""Family facts of the VAE: the exact ELBO, the closed-form KL, and bounds that approach the true
log-likelihood. These catch the errors widely copied tutorials make (sampling z from the mean head
alone, adding stray terms such as mean(h) to the loss, a KL with the wrong sign or scale)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from genmodels.models import Batch, build_from_config, make_config
from genmodels.models.likelihoods import discretized_logistic_log_prob
from genmodels.models.vae import gaussian_kl


def vae(**kw):
    base = {"arch": "mlp", "hidden": [16], "latent_dim": 3}
    return build_from_config("mlp-vae", make_config("mlp-vae", {**base, **kw}))


def test_kl_matches_closed_form_and_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 4, generator=g)
    logvar = torch.randn(5, 4, generator=g)
    ours = gaussian_kl(mu, logvar)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    # Known values: N(0, 1) against itself is 0; N(1, e^2) is 0.5 * (1 + e^2 - 1 - 2).
    assert gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).item() == 0.0
    expected = 0.5 * (1 + math.e**2 - 1 - 2)
    assert gaussian_kl(torch.ones(1, 1), torch.full((1, 1), 2.0)).item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_the_negative_elbo_computed_by_hand():
    torch.manual_seed(0)
    for beta in (1.0, 4.0):
        m = vae(beta=beta)
        x = torch.rand(6, 1, 28, 28)
        torch.manual_seed(42)
        out = m.loss(Batch(x))
        # By hand: both heads, the reparameterised draw from the SAME noise, Bernoulli NLL, KL.
        h = m.encoder(x)
        mu, logvar = m.head(h).chunk(2, dim=1)
        torch.manual_seed(42)
        eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = m.decoder(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
        torch.testing.assert_close(out.loss, (rec + beta * kl).mean())
        torch.testing.assert_close(out.metrics["elbo"], -(rec + kl).mean())


def test_the_sample_depends_on_the_variance_head():
    """A tutorial bug draws z from the mean head only; then logvar gets no gradient from the
    reconstruction and the noise does not matter."""
    torch.manual_seed(0)
    m = vae(beta=0.0)  # no KL: any logvar gradient must come through the reparameterised sample
    x = torch.rand(8, 1, 28, 28)
    out = m.loss(Batch(x))
    out.loss.backward()
    d = m.config.latent_dim
    grad_logvar_head = m.head.weight.grad[d:]
    assert grad_logvar_head.abs().sum() > 0
    torch.manual_seed(1)
    a = m.loss(Batch(x)).loss
    torch.manual_seed(2)
    b = m.loss(Batch(x)).loss
    assert a != b


def _log_px_exact(m, x, grid: int = 40001, span: float = 10.0) -> torch.Tensor:
    """log p(x) = log of the integral of p(x | z) N(z; 0, 1) over a 1-D latent, by the trapezoid rule."""
    z = torch.linspace(-span, span, grid, dtype=torch.float64)[:, None]
    with torch.no_grad():
        logits = m.decoder(z.float()).double()  # (G, 1, 2, 2)
    lp = []
    for xi in x.double():
        lpx = -F.binary_cross_entropy_with_logits(logits, xi.expand_as(logits), reduction="none").flatten(1).sum(1)
        integrand = lpx + (-0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi))
        dz = z[1, 0] - z[0, 0]
        w = torch.full_like(integrand, float(dz))
        w[0] = w[-1] = dz / 2
        lp.append(torch.logsumexp(integrand + torch.log(w), 0))
    return torch.stack(lp)


def test_importance_weighted_bound_approaches_the_exact_likelihood():
    """A 1-D latent and 2x2 binary images: log p(x) is computable by quadrature; the ELBO must lie
    below it and the IWAE bound must climb towards it as k grows (Burda et al. 2016, Theorem 1)."""
    torch.manual_seed(3)
    m = build_from_config(
        "mlp-vae",
        make_config(
            "mlp-vae",
            {
                "arch": "mlp",
                "hidden": [8],
                "latent_dim": 1,
                "image_shape": [1, 2, 2],
                "binarize": "dynamic",
                "act": "tanh",
            },
        ),
    )
    with torch.no_grad():  # a decoder that depends strongly on z, so the posterior is far from the prior
        m.decoder[0][0].weight.mul_(4.0)
    m.eval()
    x = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1]], dtype=torch.float32).view(4, 1, 2, 2)
    exact = _log_px_exact(m, x).float()
    assert torch.allclose(
        torch.logsumexp(_log_px_exact(m, _all_binary()), 0), torch.zeros((), dtype=torch.float64), atol=1e-6
    ), "the exact p(x) must sum to 1 over all 16 binary images"
    gaps = []
    for k in (1, 10, 100, 5000):
        reps = 1 if k == 5000 else 400  # average the estimator over many draws to see its expectation
        out = m.nll(x.repeat(reps, 1, 1, 1), k=k, generator=torch.Generator().manual_seed(0), chunk=1000)
        nll_iwae, nll_elbo = out["iwae"], out["elbo"]
        gaps.append(float((-nll_iwae.view(reps, 4).mean(0) - exact).mean()))
        if k >= 100:
            assert (-nll_elbo.view(reps, 4).mean(0) <= exact + 0.01).all(), "the ELBO must not exceed log p(x)"
    assert gaps[-1] <= 0.01 and abs(gaps[-1]) < 0.02, f"IWAE_5000 should match log p(x); gaps {gaps}"
    assert gaps[0] < gaps[1] < gaps[2] <= gaps[3] + 1e-3, f"the bound should tighten with k; gaps {gaps}"
    assert gaps[0] < -0.05, "with k=1 the bound should be visibly loose for this model"


def _all_binary() -> torch.Tensor:
    return torch.tensor([[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float32).view(16, 1, 2, 2)


def test_discretized_logistic_is_a_distribution_over_256_levels():
    levels = torch.arange(256, dtype=torch.float32).view(256, 1, 1, 1) / 255.0
    for mean, log_scale in ((0.0, -2.0), (0.7, -4.0), (-0.99, -1.0), (0.3, -6.5)):
        lp = discretized_logistic_log_prob(torch.full_like(levels, mean), torch.full_like(levels, log_scale), levels)
        assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("lik", ["logistic", "gaussian"])
def test_likelihood_decoders_give_bounds_in_bits_per_dim(lik):
    torch.manual_seed(0)
    m = vae(likelihood=lik).eval()
    x = torch.randint(0, 256, (4, 1, 28, 28)).float() / 255.0
    out = m.nll(x, k=20, generator=torch.Generator().manual_seed(0))
    nll, elbo = out["iwae"], out["elbo"]
    assert (nll <= elbo + 1e-3).all()
    bpd = nll / (784 * math.log(2))
    # Any bound on the NLL of 8-bit data is a positive number of bits; an untrained model is poor.
    assert torch.isfinite(bpd).all() and (bpd > 0).all()
    assert m.has_likelihood
    if lik == "gaussian":  # the dequantisation bound adds D log 256 to the density's NLL
        assert m.log_prob_offset == pytest.approx(-784 * math.log(256.0))


def test_conditional_vae_uses_its_labels():
    torch.manual_seed(0)
    m = build_from_config("cvae", make_config("cvae", {"channels": [8, 16], "blocks": 0, "latent_dim": 4})).eval()
    z = torch.randn(3, 4)
    a = m.decode(z, torch.tensor([0, 0, 0]))
    b = m.decode(z, torch.tensor([5, 5, 5]))
    assert not torch.allclose(a, b)
    s = m.sample(10, generator=torch.Generator().manual_seed(0), labels=torch.arange(10))
    assert s.shape == (10, 1, 28, 28)
    with pytest.raises(Exception, match="labels"):
        m.loss(Batch(torch.rand(2, 1, 28, 28), None))


def test_no_likelihood_is_claimed_for_cross_entropy_on_grey_levels():
    assert not vae().has_likelihood  # Bernoulli on grey levels: not a distribution of the data
    assert vae(binarize="dynamic").has_likelihood
