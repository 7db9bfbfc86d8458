"""`genmodels evaluate` and `genmodels leaderboard`: reports written into runs, a samples file scored by
exactly the same code as the run it came from, the table and its PNG, the classifier tests, a plain
evaluate sized to its time budgets (a cheap likelihood, fewer samples of a slow sampler), progress on
stderr, and one-line errors."""

from __future__ import annotations

import json
import re

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
    from genmodels.api import train

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
    ps = rep["pixel_stats"]  # the gray-level histogram of the samples against the test images'
    assert 0 < ps["pixel_hist_tv"] <= 1 and ps["pixel_w1"] >= 0 and ps["n_samples"] == ps["n_real"] == 200
    assert 0 < ps["real_black_share"] < 1 and "pixel intensities: histogram TV" in out
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
    assert file_rep["pixel_stats"] == rep["pixel_stats"]
    assert file_rep["model_name"] == "s" and "likelihood" not in file_rep
    # And through the Python API as a uint8 tensor and as floats in [0, 1] (a uint8 tensor used to be read
    # as floats and scaled by 255 again: every pixel white).
    from genmodels.eval.report import evaluate_samples, load_samples_file

    images, _ = load_samples_file(npz)
    for i, given in enumerate((images, images.float() / 255.0)):
        api_rep = evaluate_samples(given, "digits", n=200, out=tmp_path / f"api{i}", progress=False)
        assert api_rep["fid"] == pytest.approx(rep["fid"], rel=1e-6) and api_rep["pixel_stats"] == rep["pixel_stats"]


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
    assert "| family" in out and "conv-vae" in out and "nats" in out and "pixel TV" in out
    assert [r["n"] for r in table] == ["200", "200"]
    for r, name in zip(table, ("good", "poor"), strict=True):
        tv = json.loads((runs / name / "eval.json").read_text())["pixel_stats"]["pixel_hist_tv"]
        assert r["pixel TV"] == f"{tv:.4f}"
    from PIL import Image

    with Image.open(runs / "leaderboard.png") as im:
        assert im.width > im.height  # one row: the two runs' grids side by side
    assert (runs / "leaderboard.md").read_text().count("| vae ") == 2


def test_a_plain_evaluate_takes_the_cheap_likelihood_and_shows_progress(runs, monkeypatch, capsys):
    """The old default ran the k=1000 IWAE bound on 1,000 images (most of a 16-minute evaluation);
    now a plain evaluate takes k=20 on up to 500 images within a time budget, and a flag brings the
    tight one back."""
    from genmodels.eval import report

    monkeypatch.setattr(report, "PROGRESS_EVERY_S", 0.0)  # a line at every update (stderr is no terminal here)
    run = runs / "poor"
    assert main(["evaluate", str(run)]) == 0
    captured = capsys.readouterr()
    rep = json.loads((run / "eval.json").read_text())
    lik = rep["likelihood"]
    assert lik["options"] == {"k": report.CHEAP_K} == {"k": 20} and lik["estimate"] == "cheap"
    assert lik["n_requested"] == 297 and 1 <= lik["n"] <= 297 and lik["budget_s"] == report.LIKELIHOOD_BUDGET_S
    assert "test NLL (iwae, k=20)" in captured.out and "--full-likelihood" in captured.out
    assert rep["sample_count"]["chosen"] == "auto" and rep["n"] == 297 and "fid" in rep  # a fast sampler: all
    assert re.search(r"evaluate: likelihood \d+/297", captured.err), captured.err

    assert main(["evaluate", str(run), "-n", "20", "--full-likelihood", "--nll-n", "8", "--no-progress"]) == 0
    captured = capsys.readouterr()
    lik = json.loads((run / "eval.json").read_text())["likelihood"]
    assert lik["options"] == {"k": 1000} and lik["n"] == 8 and lik["estimate"] == "full" and lik["budget_s"] is None
    assert "test NLL (iwae, k=1000)" in captured.out and "evaluate:" not in captured.err


def test_progress_lines_keep_coming_while_one_long_call_runs(monkeypatch, capsys):
    """16 PixelCNN samples are one sample() call of a minute: the step still shows its elapsed time."""
    import time

    from genmodels.eval import report

    monkeypatch.setattr(report, "PROGRESS_EVERY_S", 0.2)  # the timer wakes every 0.5 s at the most
    with report.Progress(16, "sampling"):
        time.sleep(1.3)  # no count arrives
    err = capsys.readouterr().err
    assert re.search(r"evaluate: sampling 0/16 \(\d+ s\)", err), err
    time.sleep(0.7)
    assert capsys.readouterr().err == ""  # closed: the timer stopped


def test_a_sampler_too_slow_for_the_budget_gets_a_grid_and_a_note_not_a_biased_fid(runs, monkeypatch, capsys):
    from genmodels.eval import report

    monkeypatch.setattr(report, "SAMPLE_BUDGET_S", 1e-9)  # as a PixelCNN on two cores: 500 samples take minutes
    run = runs / "poor"
    assert main(["evaluate", str(run), "--k", "2", "--nll-n", "10", "--no-progress"]) == 0
    out = capsys.readouterr().out
    rep = json.loads((run / "eval.json").read_text())
    assert rep["n"] == report.PROBE_N == 16 and "fid" not in rep and "precision" not in rep
    assert "pass -n 297" in rep["sample_metrics_skipped"] and "sample metrics skipped" in out
    assert rep["pixel_stats"]["n_samples"] == 16 and rep["pixel_stats"]["n_real"] == 297
    assert (run / "eval_samples.png").exists()
    # An explicit -n draws what it says, whatever the budget.
    assert main(["evaluate", str(run), "-n", "100", "--k", "2", "--nll-n", "10", "--no-progress"]) == 0
    rep = json.loads((run / "eval.json").read_text())
    assert rep["n"] == 100 and rep["sample_count"]["chosen"] == "-n" and "fid" in rep


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
    from genmodels.api import train
    from genmodels.eval.report import evaluate_run

    train("cvae", "digits", steps=20, out=tmp_path / "c", overrides=SMALL, progress=False)
    rep = evaluate_run(tmp_path / "c", n=100, k=2, cas_samples=300, progress=False)
    ct = rep["classifier_tests"]
    assert 0 <= ct["cas"] <= 1 and 0 <= ct["real"] <= 1 and ct["n_generated"] == 300
    assert any("classification accuracy score" in line for line in rep["summary_lines"])
    # The samples of a conditional model follow the test split's labels, so its class histogram can match.
    assert rep["class_coverage"]["data_histogram"] and rep["n_samples"] == 100


def test_evaluate_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((5, 3, 32, 32), np.uint8))
    good = tmp_path / "good.npz"
    np.savez_compressed(good, images=np.random.default_rng(0).integers(0, 256, (50, 1, 28, 28), dtype=np.uint8))
    whole = good.read_bytes()
    damaged = {}
    for name, data in {
        "truncated": whole[: len(whole) // 2],  # a copy cut short: no zip directory
        "tail": whole[:-30],
        "empty": b"",
        "corrupt": whole[:60] + bytes(len(whole) - 120) + whole[-60:],  # the zip directory intact, the data not
    }.items():
        damaged[name] = tmp_path / f"{name}.npz"
        damaged[name].write_bytes(data)
    np.save(tmp_path / "array.npy", np.zeros((2, 1, 28, 28), np.uint8))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")  # a .npy under an .npz name
    cases = [
        (["evaluate"], "run directory"),
        (["evaluate", "--samples", str(bad)], "--dataset"),
        (["evaluate", "--samples", str(bad), "--dataset", "digits"], "[3, 32, 32]"),
        (["evaluate", "--samples", str(tmp_path / "x.png"), "--dataset", "digits"], ".npz"),
        *[(["evaluate", "--samples", str(p), "--dataset", "digits"], p.name) for p in damaged.values()],
        (["evaluate", "--samples", str(tmp_path / "none.npz"), "--dataset", "digits"], "does not exist"),
        (["evaluate", "--samples", str(tmp_path / "array.npz"), "--dataset", "digits"], "not an .npz"),
        (["evaluate", "--samples", str(bad), "--dataset", "digits", "--k", "5"], "--k apply to runs"),
        (["leaderboard", str(tmp_path)], "no evaluated runs"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err, (argv, err)


def _evaluate_options(capsys) -> set[str]:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    return set(re.findall(r"--[a-z][a-z-]*", capsys.readouterr().out))


def test_a_folder_without_a_test_split_gets_advice_that_names_real_options(tmp_path, capsys):
    from PIL import Image

    from genmodels.api import train

    folder = tmp_path / "shoes"
    x, y = digits_images(20)
    for i, (img, label) in enumerate(zip(x.numpy(), y.numpy(), strict=True)):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0]).save(folder / f"class{label}" / f"{i}.png")
    run = tmp_path / "run"
    train("conv-vae", f"folder:{folder}", steps=2, out=run, overrides=SMALL, progress=False)
    np.savez(tmp_path / "s.npz", images=x.numpy())
    options = _evaluate_options(capsys)
    for argv in (
        ["evaluate", str(run)],
        ["evaluate", "--samples", str(tmp_path / "s.npz"), "--dataset", f"folder:{folder}"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "test/" in err, err
        assert "split 'train'" not in err  # there is no such option of evaluate
        named = set(re.findall(r"--[a-z][a-z-]*", err))
        assert named and named <= options, (named - options, err)


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
