"""`genmodels evaluate` and `genmodels leaderboard`: reports written into runs, a samples file scored by
exactly the same code as the run it came from, the table and its PNG, the classifier tests, and
one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genmodels.cli import main
from genmodels.errors import GenmodelsError
from helpers import digits_images

SMALL = {
    "model.channels": [8, 16],
    "model.latent_dim": 4,
    "model.binarize": "dynamic",
    "train.sample_every": 0,
    "train.ema_decay": 0.99,
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny digits VAEs: one trained 200 steps, one 5 steps (so their FIDs differ)."""
    from genmodels.training import train

    root = tmp_path_factory.mktemp("runs")
    for name, steps in (("good", 200), ("poor", 5)):
        train("conv-vae", "digits", steps=steps, out=root / name, overrides=SMALL, progress=False)
    return root


def test_evaluate_writes_every_metric_and_a_samples_file_scores_the_same(runs, tmp_path, capsys):
    run = runs / "good"
    assert main(["evaluate", str(run), "-n", "200", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "FID" in out and "precision" in out and "wrote" in out
    rep = json.loads((run / "eval.json").read_text())
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "class_coverage", "memorisation"):
        assert key in rep, key
    assert rep["n"] == rep["n_samples"] == rep["n_reference"] == 200
    assert 0 <= rep["precision"] <= 1 and 0 <= rep["recall"] <= 1 and rep["fid"] > 0
    assert rep["likelihood"]["data"] == "binarized" and rep["likelihood"]["n"] == 200
    assert rep["feature_net"]["dataset"] == "digits" and len(rep["feature_net"]["sha256"]) == 64
    assert rep["seconds_per_1000_samples"] > 0 and (run / "eval.md").exists()
    from PIL import Image

    with Image.open(run / "eval_samples.png") as im:  # the grid keeps the samples' grey levels
        assert len(np.unique(np.asarray(im))) > 20
    # The same samples through a file: `genmodels sample -o FILE.npz`, then `evaluate --samples`.
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run), "-n", "200", "-o", str(npz)]) == 0
    assert main(["evaluate", "--samples", str(npz), "--dataset", "digits", "-n", "200", "--out", str(tmp_path)]) == 0
    file_rep = json.loads((tmp_path / "eval.json").read_text())
    for key in ("fid", "precision", "recall", "density", "coverage"):
        assert file_rep[key] == rep[key], key
    assert file_rep["kid"] == rep["kid"] and file_rep["memorisation"] == rep["memorisation"]
    assert file_rep["model_name"] == "s" and "likelihood" not in file_rep


def test_leaderboard_sorts_by_fid_and_draws_every_run(runs, capsys):
    for name in ("good", "poor"):
        assert main(["evaluate", str(runs / name), "-n", "200", "--k", "2", "--nll-n", "20"]) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(runs)]) == 0
    out = capsys.readouterr().out
    table = json.loads((runs / "leaderboard.json").read_text())["digits"]
    fids = [float(r["FID"]) for r in table]
    assert fids == sorted(fids) and len(fids) == 2
    assert [r["run"] for r in table] == ["good", "poor"]  # 200 steps beat 5
    assert "| family" in out and "conv-vae" in out and "nats" in out
    from PIL import Image

    with Image.open(runs / "leaderboard.png") as im:
        assert im.width > im.height  # one row: the two runs' grids side by side
    assert (runs / "leaderboard.md").read_text().count("| vae ") == 2


def test_classifier_tests_tell_a_faithful_generator_from_a_mislabelling_one():
    from genmodels.data import load_dataset
    from genmodels.eval.classifier_tests import classifier_tests

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    by_class = [torch.from_numpy(train.images[train.labels == c]) for c in range(10)]

    def faithful(labels):  # real training images of the asked class: CAS should reach the real accuracy
        return torch.stack([by_class[int(c)][i % len(by_class[int(c)])] for i, c in enumerate(labels)])

    def mislabelling(labels):  # images of the next class: a classifier trained on them is wrong on real data
        return faithful((labels + 1) % 10)

    kw = {"num_classes": 10, "dataset": "digits", "n_generated": 600, "small_per_class": 5, "epochs": 6}
    good = classifier_tests(faithful, train.images, train.labels, test.images, test.labels, **kw)
    bad = classifier_tests(mislabelling, train.images, train.labels, test.images, test.labels, **kw)
    assert good["real"] > 0.6, "the classifier did not learn real digits"
    assert good["cas"] > good["real"] - 0.15
    assert bad["cas"] < 0.2 < good["cas"]
    # Adding 600 correct images to 50 real ones helps; adding mislabelled ones hurts.
    assert good["augmentation_gain"] > 0.05 and bad["augmentation_gain"] < 0
    assert good["real"] == bad["real"] and good["small_real"] == bad["small_real"]  # same seeds, same real data


def test_a_conditional_run_gets_classifier_tests(tmp_path):
    from genmodels.eval.report import evaluate_run
    from genmodels.training import train

    train("cvae", "digits", steps=20, out=tmp_path / "c", overrides=SMALL, progress=False)
    rep = evaluate_run(tmp_path / "c", n=100, k=2, cas_samples=300)
    ct = rep["classifier_tests"]
    assert 0 <= ct["cas"] <= 1 and 0 <= ct["real"] <= 1 and ct["n_generated"] == 300
    assert any("classification accuracy score" in line for line in rep["summary_lines"])
    # The samples of a conditional model follow the test split's labels, so its class histogram can match.
    assert rep["class_coverage"]["data_histogram"] and rep["n_samples"] == 100


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((5, 3, 32, 32), np.uint8))
    cases = [
        (["evaluate"], "run directory"),
        (["evaluate", "--samples", str(bad)], "--dataset"),
        (["evaluate", "--samples", str(bad), "--dataset", "digits"], "[3, 32, 32]"),
        (["evaluate", "--samples", str(tmp_path / "x.png"), "--dataset", "digits"], ".npz"),
        (["leaderboard", str(tmp_path)], "no evaluated runs"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err, (argv, err)


def test_every_new_command_has_help_with_an_example(capsys):
    for command in ("evaluate", "leaderboard"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out and f"genmodels {command}" in out


def test_evaluate_samples_python_api_without_a_feature_net_says_why(tmp_path):
    from genmodels.eval.report import evaluate_samples

    x, y = digits_images(60)
    data = tmp_path / "data.npz"  # a user's own dataset: no feature network ships for it
    np.savez(data, images=x.numpy(), labels=y.numpy(), test_images=x.numpy()[:30], test_labels=y.numpy()[:30])
    np.savez(tmp_path / "s.npz", images=x.numpy()[30:])
    with pytest.raises(GenmodelsError, match=r"no feature network for dataset 'npz:.*train_feature_net\.py"):
        evaluate_samples(tmp_path / "s.npz", f"npz:{data}")


def test_inception_features_are_optional_local_only_and_plug_into_the_same_protocol(tmp_path, monkeypatch):
    """With pytorch-fid absent here, a stand-in module of the same shape checks the wiring: the weights
    come from the local file (never the URL), features are 2048-d, and class coverage is skipped."""
    import sys
    import types
    import typing

    import torch.nn.functional as F

    from genmodels.eval.report import evaluate_samples

    x, _ = digits_images(120)
    np.savez(tmp_path / "s.npz", images=x.numpy())
    with pytest.raises(GenmodelsError, match="Inception weights not found"):
        evaluate_samples(tmp_path / "s.npz", "digits", features="inception", inception_weights=tmp_path / "no.pth")
    fake = types.ModuleType("pytorch_fid.inception")

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download the Inception weights")

    class InceptionV3(torch.nn.Module):
        BLOCK_INDEX_BY_DIM: typing.ClassVar = {2048: 3}

        def __init__(self, blocks):
            super().__init__()
            self.w = torch.nn.Parameter(fake.load_state_dict_from_url("https://example.invalid/w.pth")["w"])

        def forward(self, x):
            assert x.shape[1] == 3  # grey images arrive as three channels
            return [(F.adaptive_avg_pool2d(x, 8).flatten(1) @ self.w.T)[:, :, None, None]]

    fake.InceptionV3, fake.load_state_dict_from_url = InceptionV3, no_network
    monkeypatch.setitem(sys.modules, "pytorch_fid", types.ModuleType("pytorch_fid"))
    monkeypatch.setitem(sys.modules, "pytorch_fid.inception", fake)
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"w": torch.randn(2048, 3 * 64, generator=torch.Generator().manual_seed(0))}, weights)
    rep = evaluate_samples(tmp_path / "s.npz", "digits", n=100, features="inception", inception_weights=weights)
    assert rep["feature_net"]["dataset"] == "inception" and rep["feature_net"]["feature_dim"] == 2048
    assert rep["fid"] >= 0 and 0 <= rep["recall"] <= 1 and "class_coverage" not in rep
    assert fake.load_state_dict_from_url is no_network  # restored after loading
