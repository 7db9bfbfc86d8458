"""What a hostile-input probe found in the command line: each is one ``error:`` line and exit code 2 (or the
documented recovery), never a traceback, a hang, an out-of-memory kill or lost data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genmodels.checkpoints import checkpoint_dirs, latest_checkpoint, load_checkpoint, sha256_file
from helpers import forked_cli

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--set", "model.hidden=[32]", "--set", "model.latent_dim=2", "--set", "train.sample_every=0"]


def run(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``genmodels ARGS`` as a real process (forked from a preloaded fork server: ``helpers.forked_cli``)."""
    return forked_cli(*args, timeout=timeout, cwd=cwd)


def assert_one_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert exit 2 and exactly one stderr line, ``error: ...`` containing every needle; returns it."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "vae"
    r = run("train", "mlp-vae", "--dataset", "digits", "--steps", "4", "--out", str(out), "--no-progress", *TINY,
            "--set", "train.ckpt_every=2", "--set", "train.keep_checkpoints=5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def copy(trained, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


# ----------------------------------------------------------------------------- tracebacks -> one line


@pytest.mark.parametrize(
    "args,needle",
    [
        (["sample", "{run}", "-n", "4", "-o", "{tmp}/s.png", "--seed", "99999999999999999999999"], "--seed"),
        (["sample", "{run}", "-n", "4", "-o", "{tmp}/s.png", "--device", "foo"], "foo"),
        (["sample", "{run}", "-n", "1000000000", "-o", "{tmp}/s.npz"], "-n must be in"),
        (["sample", "{run}", "-n", "20000", "-o", "{tmp}/s.png"], "PNG grid"),
        (["reconstruct", "{run}", "-o", "{tmp}/r.png", "-n", "0"], "-n must be in"),
        (["reconstruct", "{run}", "-o", "{tmp}/r.png", "-n", "-5"], "-n must be in"),
        (["reconstruct", "{run}", "-o", "{tmp}/r.txt"], ".png"),
        (["reconstruct", "{run}", "-o", "{tmp}/r.npz"], ".png"),
        (["interpolate", "{run}", "-o", "{tmp}/i.png", "--pairs", "-2"], "--pairs"),
        (["interpolate", "{run}", "-o", "{tmp}/i.png", "--steps", "-3"], "--steps"),
        (["interpolate", "{run}", "-o", "{tmp}/i.png", "--pairs", "5000"], "--pairs"),
        (["interpolate", "{run}", "-o", "{tmp}/i.npz"], ".png"),
        (["latent", "{run}", "-o", "{tmp}/l.png", "-n", "0"], "-n must be in"),
    ],
)
def test_bad_arguments_are_one_error_line(trained, tmp_path, args, needle):
    r = run(*[a.format(run=trained, tmp=tmp_path) for a in args])
    assert_one_error(r, needle)
    assert not any(tmp_path.iterdir()), "nothing is written on a refused command"


def test_a_decompression_bomb_png_is_refused_by_complete(tmp_path):
    from PIL import Image

    # A 20000 x 20000 1-bit PNG compresses to a few kB and would decode to 400 M pixels.
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)
    pix = tmp_path / "pix"
    r = run("train", "masked-pixelcnn", "--dataset", "digits", "--steps", "1", "--out", str(pix), "--no-progress",
            "--set", "model.channels=8", "--set", "model.layers=1", "--set", "train.sample_every=0",
            "--set", "train.grid=1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = run("complete", str(pix), "--input", str(bomb), "--rows", "3", "-o", str(tmp_path / "c.png"))
    assert_one_error(r, "decompression bomb")


def test_a_config_that_is_not_utf8_or_has_wrong_types_is_one_line(copy, tmp_path):
    cfg = copy / "config.yaml"
    good = cfg.read_bytes()
    cfg.write_bytes(b"model_name: \xff\xfe mlp-vae\n")
    assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png")), "UTF-8")
    for broken in ({"model": [1, 2]}, {"model_name": 5}, {"model": {"latent_dim": "two"}}):
        doc = {**yaml.safe_load(good), **broken}
        cfg.write_text(yaml.safe_dump(doc))
        assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png")))


@pytest.mark.parametrize("step", ["missing", "abc"])
def test_state_json_without_a_valid_step_is_one_line(copy, tmp_path, step):
    ck = latest_checkpoint(copy / "checkpoints")
    meta = json.loads((ck / "state.json").read_text())
    if step == "missing":
        del meta["step"]
    else:
        meta["step"] = step
    (ck / "state.json").write_text(json.dumps(meta))
    assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png")), "no valid step")


def test_nan_weights_with_valid_hashes_are_refused_at_load(copy, tmp_path):
    from safetensors.torch import load_file, save_file

    ck = latest_checkpoint(copy / "checkpoints")
    for name in ("model.safetensors", "ema.safetensors"):
        if not (ck / name).exists():
            continue
        t = load_file(str(ck / name))
        key = next(k for k, v in t.items() if v.is_floating_point())
        t[key] = torch.full_like(t[key], float("nan"))
        save_file(t, str(ck / name))
    meta = json.loads((ck / "state.json").read_text())
    meta["files"] = {f: sha256_file(ck / f) for f in meta["files"]}  # valid hashes of the NaN weights
    (ck / "state.json").write_text(json.dumps(meta))
    assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png")), "non-finite")


def test_latest_symlinked_to_a_system_file_does_not_print_it(copy, tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:SECRET-CONTENT:/root:/bin/bash\n" * 50)
    (copy / "checkpoints" / "latest").unlink()
    (copy / "checkpoints" / "latest").symlink_to(secret)
    line = assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png")), "outside")
    assert "SECRET" not in line


def test_a_step_directory_symlinked_to_another_run_is_never_loaded_or_copied(copy, trained, tmp_path):
    other = tmp_path / "other"
    r = run("train", "mlp-vae", "--dataset", "digits", "--steps", "6", "--out", str(other), "--no-progress", *TINY,
            "--seed", "9")  # fmt: skip
    assert r.returncode == 0, r.stderr
    theirs = latest_checkpoint(other / "checkpoints")
    for d in checkpoint_dirs(copy / "checkpoints"):
        shutil.rmtree(d)
    (copy / "checkpoints" / theirs.name).symlink_to(theirs, target_is_directory=True)
    (copy / "checkpoints" / "latest").write_text(theirs.name + "\n")
    assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png")), "symlink")
    assert_one_error(run("train", "--resume", str(copy), "--no-progress"), "symlink")
    assert all(p.is_symlink() for p in (copy / "checkpoints").glob("step-*"))  # nothing copied in


# ----------------------------------------------------------------------------- data loss


def test_resume_after_latest_was_deleted_recovers_and_destroys_nothing(copy):
    steps = sorted(d.name for d in checkpoint_dirs(copy / "checkpoints"))
    records = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "checkpoints" / "latest").unlink()
    r = run("train", "--resume", str(copy), "--steps", "6", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "latest is missing; using step-00000004" in r.stderr
    assert load_checkpoint(latest_checkpoint(copy / "checkpoints"))["meta"]["step"] == 6
    kept = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [x for x in kept if x["step"] <= 4] == [json.loads(x) for x in records if json.loads(x)["step"] <= 4]
    assert steps[-1] in {d.name for d in checkpoint_dirs(copy / "checkpoints")} or len(steps) > 0


def test_train_into_a_non_empty_directory_that_is_not_a_run_is_refused(tmp_path):
    out = tmp_path / "mine"
    (out / "samples").mkdir(parents=True)
    (out / "samples" / "final.png").write_bytes(b"the user's own picture")
    r = run("train", "mlp-ae", "--dataset", "digits", "--steps", "2", "--out", str(out), "--no-progress")
    assert_one_error(r, "non-empty directory that is not a genmodels run")
    assert (out / "samples" / "final.png").read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in out.rglob("*")) == ["final.png", "samples"]


def test_a_data_error_leaves_no_run_directory_behind(tmp_path):
    out = tmp_path / "new-run"
    r = run("train", "mlp-ae", "--dataset", f"folder:{tmp_path / 'nowhere'}", "--steps", "2", "--out", str(out))
    assert_one_error(r)
    assert not out.exists()


def test_resume_refuses_what_cannot_change_and_leaves_the_config_alone(copy, tmp_path):
    before = (copy / "config.yaml").read_bytes()
    assert_one_error(run("train", "--resume", str(copy), "--seed", "5", "--batch-size", "4"), "cannot change on resume")
    assert_one_error(run("train", "--resume", str(copy), "--out", str(tmp_path / "elsewhere")), "drop --out")
    assert (copy / "config.yaml").read_bytes() == before
    assert not (tmp_path / "elsewhere").exists()


# ----------------------------------------------------------------------------- unbounded memory


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["--batch-size", "100000"], "batch_size"),
        (["--set", "data.image_size=100000"], "image_size"),
        (["--set", "model.hidden=[100000000]"], "too large"),
        (["--set", "model.latent_dim=10000000"], "too large"),
        (["--set", "train.grid=100000"], "train.grid"),
    ],
)
def test_huge_sizes_are_refused_before_any_memory_is_taken(tmp_path, sets, needle):
    r = run("train", "mlp-vae", "--dataset", "digits", "--steps", "1", "--out", str(tmp_path / "r"), *sets)
    assert_one_error(r, needle)


@pytest.mark.parametrize("label", [10**8, 2**62])
def test_npz_labels_beyond_the_class_limit_are_refused(tmp_path, label):
    images = np.zeros((4, 1, 8, 8), np.uint8)
    labels = np.array([0, 1, 2, label], np.int64)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    r = run("train", "mlp-ae", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--steps", "1", "--out", str(tmp_path / "r"))
    assert_one_error(r, "classes")


def test_sampling_to_npz_streams_the_same_images_as_the_api(trained, tmp_path):
    from genmodels.runs import load_run
    from genmodels.viz import to_uint8

    r = run("sample", str(trained), "-n", "1203", "-o", str(tmp_path / "s.npz"), "--seed", "4", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "s.npz")["images"]
    want = to_uint8(load_run(trained).sample(1203, seed=4))
    assert got.shape == (1203, 1, 28, 28) and got.dtype == np.uint8
    assert np.array_equal(got, want)


# ----------------------------------------------------------------------------- slow and interrupted grids


def _slow_grid_args(out: Path, *extra: str) -> list[str]:
    return ["train", "gated-pixelcnn", "--dataset", "fashion-mnist", "--steps", "1", "--out", str(out),
            "--no-progress", "--set", "model.channels=16", "--set", "model.layers=2", "--set", "train.grid=20",
            "--set", "data.limit=256", "--set", "train.sample_every=0", *extra]  # fmt: skip


def test_a_slow_end_of_run_grid_is_bounded_in_time_and_says_so(tmp_path):
    out = tmp_path / "pix"
    r = run(*_slow_grid_args(out, "--set", "train.grid_seconds=1"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "note: sample grid final has" in r.stderr and "of 20 rows" in r.stderr
    from PIL import Image

    h = Image.open(out / "samples" / "final.png").height
    assert h < Image.open(out / "samples" / "final.png").width  # fewer rows than columns were drawn


def test_sigterm_while_drawing_the_final_grid_exits_with_a_message_and_a_truthful_status(tmp_path):
    out = tmp_path / "pix"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "genmodels", *_slow_grid_args(out, "--set", "train.grid_seconds=600")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and latest_checkpoint(out / "checkpoints") is None:
        time.sleep(0.05)
    time.sleep(1.0)  # into the grid: 20 rows of 20 autoregressive samples take far longer than this
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted while drawing the end-of-run sample grid" in err
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"


def test_deeply_nested_run_records_do_not_crash_loading(copy, tmp_path):
    """JSON nested beyond Python's recursion limit raised RecursionError through every reader."""
    (copy / "run.json").write_text("[" * 5000)  # informational only: sampling still works
    r = run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "a.png"))
    assert r.returncode == 0, r.stderr
    (copy / "config.yaml").write_text("a: " + "[" * 5000)
    assert_one_error(run("sample", str(copy), "-n", "2", "-o", str(tmp_path / "b.png")), "config.yaml")
