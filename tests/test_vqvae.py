"""The VQ-VAE: nearest-code quantisation, the EMA codebook and its dead-code restarts, straight-through
gradients, and learning on real digits (reconstructions beat the mean image, the codebook stays in use)."""

from __future__ import annotations

import pytest
import torch

from genmodels.api import train
from genmodels.errors import ConfigError
from genmodels.models import Batch, build_from_config, make_config
from genmodels.models.vqvae import Codebook
from helpers import TINY


def test_codes_are_the_nearest_codebook_entries():
    m = build_from_config("vq-vae", make_config("vq-vae", TINY["vq-vae"])).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    codes = m.encode_codes(x)
    assert codes.shape == (3, 7, 7) and codes.dtype == torch.int64
    z_e = m.encoder(x * 2.0 - 1.0).permute(0, 2, 3, 1).reshape(-1, 4)
    by_hand = torch.cdist(z_e.double(), m.codebook.embed.double()).argmin(1)
    assert torch.equal(codes.flatten(), by_hand)
    out = m.decode_codes(codes)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(m.reconstruct(x), out)
    with pytest.raises(ConfigError, match=r"codes must be in 0\.\.7"):
        m.decode_codes(codes + 8)


def test_the_codebook_moves_to_the_mean_of_its_assigned_vectors():
    torch.manual_seed(0)
    book = Codebook(3, 2, decay=0.9, restart_below=0.0)
    flat = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0], [9.0, 9.0]])
    idx = torch.tensor([0, 0, 1, 1, 2])
    for _ in range(300):
        book.update(flat, idx)
    # The moving averages of sums and counts converge to the batch's: each code to its vectors' mean.
    torch.testing.assert_close(book.embed, torch.tensor([[2.0, 0.0], [0.0, 6.0], [9.0, 9.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(book.ema_count, torch.tensor([2.0, 2.0, 1.0]), atol=1e-4, rtol=0)


def test_a_dead_code_is_restarted_at_an_encoder_output():
    torch.manual_seed(0)
    book = Codebook(4, 2, decay=0.5, restart_below=0.2)
    flat = torch.randn(16, 2)
    idx = torch.zeros(16, dtype=torch.long)  # everything goes to code 0: codes 1-3 die
    restarted = [book.update(flat, idx) for _ in range(3)]
    assert restarted == [0, 0, 3]  # the unused codes' counts go 1 -> 0.5 -> 0.25 -> 0.125 < 0.2
    for k in (1, 2, 3):
        assert any(torch.equal(book.embed[k], v) for v in flat), f"code {k} should sit on a batch vector"


def test_gradients_pass_the_quantisation_straight_through():
    m = build_from_config("vq-vae", make_config("vq-vae", TINY["vq-vae"])).train()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    before = m.codebook.embed.clone()
    out = m.loss(Batch(x))
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
    assert not torch.equal(before, m.codebook.embed), "training mode updates the codebook"
    assert {"perplexity", "codes_used", "restarts", "mse"} <= set(out.metrics)
    assert 1.0 <= out.metrics["perplexity"] <= 8.0


def test_an_image_size_the_strides_do_not_divide_is_one_clear_error():
    with pytest.raises(ConfigError, match="halve 2 times"):
        make_config("vq-vae", {"image_shape": (1, 30, 30)})
    with pytest.raises(ConfigError, match="codebook_size"):
        make_config("vq-vae", {"codebook_size": 1000})


def test_training_on_digits_reconstructs_better_than_the_mean_and_uses_the_codebook(tmp_path):
    overrides = {"model.codebook_size": 32, "model.channels": [32, 64], "model.code_dim": 16, "train.lr": 2e-3}
    run = train("vq-vae", "digits", steps=300, batch_size=64, out=tmp_path / "vq", overrides=overrides, progress=False)
    test = run.load_data("test")
    x = torch.from_numpy(test.images).float() / 255.0
    rec = run.model.reconstruct(x)
    mse = (rec - x).square().mean().item()
    mean_image = (x.mean(0, keepdim=True) - x).square().mean().item()
    assert mse < 0.35 * mean_image, (mse, mean_image)
    codes = run.model.encode_codes(x)
    used = codes.unique().numel()
    assert used >= 16, f"only {used} of 32 codes in use on the test split"
    # The unigram baseline sampler decodes codes drawn by usage: images, not noise or a constant.
    s = run.sample(16, seed=0)
    assert s.shape == (16, 1, 28, 28) and s.std() > 0.1


# ----------------------------------------------------------------------------- a prior over the codes

TINY_VQ = {"model.channels": [16, 32], "model.code_dim": 8, "model.codebook_size": 16, "model.res_channels": 8}
TINY_PRIOR = {"model.channels": 16, "model.layers": 1, "model.res_blocks": 1, "model.first_kernel": 3}


@pytest.fixture(scope="module")
def vq_and_prior(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior")
    train("vq-vae", "digits", steps=60, batch_size=64, out=root / "vq", overrides=TINY_VQ, progress=False)
    prior = train("pixelsnail", f"codes:{root / 'vq'}", steps=40, batch_size=64, out=root / "prior",
                  overrides=TINY_PRIOR, progress=False)  # fmt: skip
    return root, prior


def test_a_prior_trains_on_the_codes_and_samples_decode_through_the_vq_vae(vq_and_prior):
    import json

    from genmodels.runs import load_run

    root, _ = vq_and_prior
    run = load_run(root / "prior")
    assert run.config["model"]["output"] == "softmax" and run.config["model"]["levels"] == 16
    assert run.config["model"]["image_shape"] == [1, 7, 7]
    meta = json.loads((root / "prior" / "run.json").read_text())
    assert meta["prior_of"]["run"] == str((root / "vq").resolve()) and len(meta["prior_of"]["sha256"]) == 64
    s = run.sample(6, seed=1)
    assert s.shape == (6, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    codes = run.model.sample_codes(6, generator=torch.Generator().manual_seed(1))
    assert codes.shape == (6, 7, 7) and codes.max() < 16
    assert torch.equal(run.model.vq.decode_codes(codes), s)  # the same seed, decoded
    # What the samples imitate: the VQ-VAE's images, not its codes.
    assert run.load_data("test").images.shape[1:] == (1, 28, 28)


def test_a_prior_refuses_a_changed_vq_vae_and_wrong_runs(vq_and_prior, tmp_path, capsys):
    import shutil

    from genmodels.cli import main
    from genmodels.errors import CheckpointError
    from genmodels.runs import load_run

    root, _ = vq_and_prior
    vq = tmp_path / "vq"
    shutil.copytree(root / "vq", vq, ignore=shutil.ignore_patterns(".lock"))
    train("pixelsnail", f"codes:{vq}", steps=2, batch_size=64, out=tmp_path / "p", overrides=TINY_PRIOR,
          progress=False)  # fmt: skip
    train(resume=vq, steps=62, progress=False)  # the VQ-VAE trains on: a new checkpoint
    with pytest.raises(CheckpointError, match="changed since"):
        load_run(tmp_path / "p")
    set_args = [x for k, v in TINY_PRIOR.items() for x in ("--set", f"{k}={v}")]
    gan_run = tmp_path / "gan"
    train("gan-mlp", "digits", steps=1, out=gan_run, overrides={"model.g_hidden": [8], "model.d_hidden": [8]},
          progress=False)  # fmt: skip
    for args, words in (
        (["pixelsnail", "--prior-of", str(gan_run)], "is a gan-mlp run"),
        (["pixelsnail", "--prior-of", str(tmp_path / "none")], "--prior-of"),
        (["dcgan", "--prior-of", str(vq)], "autoregressive prior"),
        (["pixelsnail", "--prior-of", str(vq), "--dataset", "digits"], "drop --dataset"),
        (["pixelsnail", "--prior-of", str(vq), "--set", "model.output=logistic"], "model.output=softmax"),
    ):
        code = main(["train", *args, "--steps", "1", "--out", str(tmp_path / "x"), *set_args])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], (args, err)
