"""`genmodels serve` over real HTTP: the run list, one run's records, the model endpoints of every
family (checked against the library's own answers), the leaderboard, errors, and the refusal of every
path outside RUNS_DIR.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genmodels.errors import ConfigError
from genmodels.runs import load_run
from genmodels.serve.runs import NOT_LOSSES
from genmodels.viz import make_grid, to_uint8
from serve_fixtures import EVALUATED, SERVE_RUNS, serve_runs_dir

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory) -> Path:
    """RUNS_DIR holding one tiny trained run per family (see serve_fixtures.SERVE_RUNS)."""
    return serve_runs_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def server(serve_runs):
    """The app on a free loopback port, in a thread of this process."""
    from genmodels.serve import make_server

    srv = make_server(serve_runs, port=0, device="cpu")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, path: str, host: str | None = None, timeout: float = 120) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of '..' or %-escapes)."""
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def get_json(server, path: str) -> dict:
    status, _, body = get(server, path)
    assert status == 200, body
    return json.loads(body)


def png(body: bytes) -> np.ndarray:
    """A PNG as uint8 (H, W) for grey or (H, W, 3) for colour."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(body)))


def grid_of(images: torch.Tensor, nrow: int) -> np.ndarray:
    """What the app's grid of these images looks like, as png() returns it."""
    g = make_grid(images, nrow)
    return g[..., 0] if g.shape[2] == 1 else g


def tiles(sheet: np.ndarray, size: int, n: int, pad: int = 2) -> list[np.ndarray]:
    """The n tiles of a one-row grid sheet of size x size images."""
    return [sheet[pad : pad + size, pad + i * (size + pad) : pad + i * (size + pad) + size] for i in range(n)]


# ----------------------------------------------------------------- run list and records


def test_run_list_shows_every_run_with_its_facts(server, serve_runs):
    data = get_json(server, "/api/runs")
    rows = {r["id"]: r for r in data["runs"]}
    assert set(rows) == set(SERVE_RUNS)
    for name, (model, steps, _) in SERVE_RUNS.items():
        meta = json.loads((serve_runs / name / "run.json").read_text())
        r = rows[name]
        assert (r["model_name"], r["steps"], r["dataset"], r["status"]) == (model, steps, "digits", "finished")
        assert r["family"] == meta["family"] and r["wall_time_s"] == meta["wall_time_s"] > 0
        shown = {k: v for k, v in meta["last_metrics"].items() if k not in NOT_LOSSES}
        assert r["metrics"] == shown and shown
    assert data["evaluated"] == len(EVALUATED)
    for name in EVALUATED:
        report = json.loads((serve_runs / name / "eval.json").read_text())
        shown = rows[name]["eval"]
        assert shown["recon_mse"] == report["reconstruction_mse"]
        assert shown.get("fid") == report.get("fid")


def test_run_page_data_matches_the_run_directory(server, serve_runs):
    from genmodels.training.logger import read_metrics

    data = get_json(server, "/api/run?run=ae2d")
    records = read_metrics(serve_runs / "ae2d" / "metrics.jsonl")
    loss = data["series"]["loss"]
    assert loss == [[r["step"], r["loss"]] for r in records]
    assert loss[-1][1] < loss[0][1]  # the curve shows the autoencoder learning
    assert [g["step"] for g in data["grids"]] == [10, 20, 30, 40, 40]  # four grids, then final.png
    assert data["grids"][-1]["label"] == "final"
    assert data["checkpoints"] == [20, 40] and data["latest"] == 40
    assert {f["name"] for f in data["figures"]} >= {"loss", "manifold", "latent_scatter", "reconstructions"}
    assert data["eval"]["lines"] == json.loads((serve_runs / "ae2d" / "eval.json").read_text())["summary_lines"]
    status, headers, body = get(server, "/files/" + data["grids"][1]["file"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body == (serve_runs / "ae2d" / "samples" / "step-00000020.png").read_bytes()


def test_leaderboard_lists_evaluated_runs_with_links(server):
    lb = get_json(server, "/api/leaderboard")
    assert list(lb["datasets"]) == ["digits"] and "FID" in lb["columns"]
    rows = lb["datasets"]["digits"]
    assert [r["id"] for r in rows] == list(EVALUATED)
    assert rows[0]["cells"]["model"] == SERVE_RUNS[EVALUATED[0]][0]


# ----------------------------------------------------------------- the models, every family


@pytest.mark.parametrize("name", list(SERVE_RUNS))
def test_generate_is_what_the_library_samples(server, serve_runs, name):
    info = get_json(server, f"/api/model?run={name}")
    assert info["model_name"] == SERVE_RUNS[name][0] and info["step"] == SERVE_RUNS[name][1]
    n = 16 if name not in ("pixelcnn", "diffusion") else 4
    status, headers, body = get(server, f"/api/generate.png?run={name}&n={n}&seed=3")
    assert status == 200 and headers["Content-Type"] == "image/png" and float(headers["X-Elapsed-Ms"]) > 0
    run = load_run(serve_runs / name, device="cpu")
    labels = torch.arange(n) % run.model.config.num_classes if info["conditional"] else None
    expected = grid_of(run.sample(n, seed=3, labels=labels), nrow=min(n, 8))
    assert np.array_equal(png(body), expected)
    assert png(body).std() > 5  # not blank
    _, _, again = get(server, f"/api/generate.png?run={name}&n={n}&seed=4")
    assert not np.array_equal(png(again), png(body))  # the seed matters


def test_what_each_family_offers_is_found_from_its_methods(server):
    offers = {name: get_json(server, f"/api/model?run={name}") for name in SERVE_RUNS}
    assert [n for n, o in offers.items() if o["interpolate"]] == ["ae2d", "cvae2d", "gan"]
    assert [n for n, o in offers.items() if o["explore"]] == ["ae2d", "cvae2d"]
    assert [n for n, o in offers.items() if o["complete"]] == ["pixelcnn"]
    assert [n for n, o in offers.items() if o["conditional"]] == ["cvae2d"]
    assert offers["cvae2d"]["classes"] == [str(i) for i in range(10)]
    assert {o["name"] for o in offers["diffusion"]["sample_options"]} >= {"sampler", "steps"}
    assert [o["name"] for o in offers["gan"]["sample_options"]] == ["truncation"]


def test_conditional_generate_draws_the_chosen_class(server, serve_runs):
    _, _, body = get(server, "/api/generate.png?run=cvae2d&n=8&seed=1&class=7")
    run = load_run(serve_runs / "cvae2d", device="cpu")
    assert np.array_equal(png(body), grid_of(run.sample(8, seed=1, labels=torch.full((8,), 7)), nrow=8))
    _, _, other = get(server, "/api/generate.png?run=cvae2d&n=8&seed=1&class=2")
    assert not np.array_equal(png(other), png(body))


def test_sampling_options_reach_the_model(server, serve_runs):
    _, _, body = get(server, "/api/generate.png?run=diffusion&n=4&seed=0&opt.sampler=ddim&opt.steps=2")
    run = load_run(serve_runs / "diffusion", device="cpu")
    assert np.array_equal(png(body), grid_of(run.sample(4, seed=0, sampler="ddim", steps=2), nrow=4))
    status, _, err = get(server, "/api/generate.png?run=gan&opt.steps=3")
    assert status == 400 and "takes: truncation" in json.loads(err)["error"]


@pytest.mark.parametrize("name", ["cvae2d", "gan"])
def test_interpolation_runs_between_the_two_samples(server, name):
    """With a prior, the path's ends are the very samples 'generate' draws for seeds A and B."""
    cls = "&class=4" if name == "cvae2d" else ""
    status, _, body = get(server, f"/api/interpolate.png?run={name}&a=5&b=9&steps=6{cls}")
    assert status == 200
    sheet = png(body)
    assert sheet.shape == (28 + 4, 6 * 30 + 2)
    row = tiles(sheet, 28, 6)
    for seed, end in ((5, row[0]), (9, row[-1])):
        _, _, one = get(server, f"/api/generate.png?run={name}&n=1&seed={seed}{cls}")
        assert np.abs(png(one).astype(int) - end.astype(int)).max() <= 2  # slerp at t=0 or 1, to rounding
    steps = [np.abs(row[i + 1].astype(int) - row[i].astype(int)).mean() for i in range(5)]
    assert min(steps) > 0  # every step moves


def test_autoencoder_interpolation_joins_encoded_samples(server):
    status, _, body = get(server, "/api/interpolate.png?run=ae2d&a=0&b=1&steps=5")
    row = tiles(png(body), 28, 5)
    assert status == 200 and not np.array_equal(row[0], row[-1])


def test_explorer_decodes_points_and_maps_the_test_codes(server, serve_runs):
    latent = get_json(server, "/api/latent?run=ae2d")
    assert len(latent["points"]) == len(latent["labels"]) == 297  # the digits test split
    codes = np.array(latent["points"])
    (x0, x1), (y0, y1) = latent["range"]
    inside = (codes[:, 0] >= x0) & (codes[:, 0] <= x1) & (codes[:, 1] >= y0) & (codes[:, 1] <= y1)
    assert inside.mean() > 0.95
    run = load_run(serve_runs / "ae2d", device="cpu")
    z = codes[0]
    status, _, body = get(server, f"/api/decode.png?run=ae2d&z={z[0]:.6f},{z[1]:.6f}")
    assert status == 200 and png(body).shape == (28, 28)
    with torch.no_grad():
        expected = to_uint8(run.model.decode(torch.tensor([[float(f"{z[0]:.6f}"), float(f"{z[1]:.6f}")]])))[0, 0]
    assert np.abs(png(body).astype(int) - expected.astype(int)).max() <= 1
    _, _, far = get(server, f"/api/decode.png?run=ae2d&z={x1:.4f},{y1:.4f}")
    assert not np.array_equal(png(far), png(body))
    _, _, c3 = get(server, "/api/decode.png?run=cvae2d&z=0,0&class=3")
    _, _, c8 = get(server, "/api/decode.png?run=cvae2d&z=0,0&class=8")
    assert not np.array_equal(png(c3), png(c8))  # the class picker reaches the decoder


def test_completion_keeps_the_top_rows_of_the_chosen_test_image(server, serve_runs):
    run = load_run(serve_runs / "pixelcnn", device="cpu")
    test = run.load_data("test")
    status, _, body = get(server, "/api/complete.png?run=pixelcnn&index=5&rows=4&samples=3&seed=0")
    assert status == 200
    parts = tiles(png(body), 8, 5)  # kept | 3 completions | original
    original = test.images[5, 0]
    assert np.array_equal(parts[-1], original)
    assert np.array_equal(parts[0][:4], original[:4]) and (parts[0][4:] == 128).all()  # the rest shown grey
    for c in parts[1:4]:
        assert np.array_equal(c[:4], original[:4])
    assert any(not np.array_equal(c[4:], original[4:]) for c in parts[1:4])  # the bottom is sampled
    _, _, thumb = get(server, "/api/test_image.png?run=pixelcnn&index=5")
    assert np.array_equal(png(thumb), original)


def test_an_older_checkpoint_can_be_chosen_and_models_are_cached(server, serve_runs):
    assert get_json(server, "/api/model?run=ae2d&step=20")["step"] == 20
    _, _, old = get(server, "/api/generate.png?run=ae2d&n=4&seed=0&step=20")
    _, _, new = get(server, "/api/generate.png?run=ae2d&n=4&seed=0")
    assert not np.array_equal(png(old), png(new))
    pg = server.RequestHandlerClass.app.playground
    key = (str(serve_runs / "ae2d"), 40, "ema")
    first = pg._models[key]
    get(server, "/api/generate.png?run=ae2d&n=4&seed=1")
    assert pg._models[key] is first  # served from memory, not reloaded


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "path, status, words",
    [
        ("/api/generate.png?run=ae2d&n=0", 400, "n must be in 1..64"),
        ("/api/generate.png?run=ae2d&n=65", 400, "n must be in 1..64"),
        ("/api/generate.png?run=ae2d&seed=x", 400, "seed must be an integer"),
        ("/api/generate.png?run=ae2d&class=1", 400, "not class-conditional"),
        ("/api/generate.png?run=cvae2d&class=10", 400, "class must be in 0..9"),
        ("/api/decode.png?run=ae2d&z=1", 400, "2 finite numbers"),
        ("/api/decode.png?run=ae2d&z=a,b", 400, "numbers separated by commas"),
        ("/api/decode.png?run=pixelcnn&z=0,0", 400, "no latent space"),
        ("/api/latent?run=gan", 400, "needs a 2-D latent"),
        ("/api/complete.png?run=ae2d", 400, "cannot complete"),
        ("/api/complete.png?run=pixelcnn&rows=9", 400, "rows must be in 0..8"),
        ("/api/test_image.png?run=ae2d&index=297", 400, "index must be in 0..296"),
        ("/api/model?run=ae2d&step=7", 409, "no checkpoint at step 7"),
        ("/api/model?run=nope", 404, "no run 'nope'"),
        ("/api/model", 400, "parameter run is missing"),
        ("/api/nothing", 404, "no page"),
        ("/static/secret.py", 404, "no static file"),
        ("/files/ae2d/checkpoints/latest", 404, "not a file the app serves"),
    ],
)
def test_bad_requests_get_one_clear_error(server, path, status, words):
    got, headers, body = get(server, path)
    assert got == status and headers["Content-Type"] == "application/json"
    assert words in json.loads(body)["error"]


def test_a_run_without_a_checkpoint_is_listed_and_explains_itself(server, serve_runs):
    """A run killed before its first checkpoint, with a NaN loss in run.json: listed, valid JSON, a clear error."""
    fresh = serve_runs / "fresh"
    fresh.mkdir()
    try:
        (fresh / "config.yaml").write_text((serve_runs / "ae2d" / "config.yaml").read_text())
        meta = {"model_name": "mlp-ae", "status": "diverged", "last_metrics": {"step": 3, "loss": float("nan")}}
        (fresh / "run.json").write_text(json.dumps(meta))  # Python writes a bare NaN here
        status, _, body = get(server, "/api/runs")
        row = next(r for r in json.loads(body, parse_constant=pytest.fail)["runs"] if r["id"] == "fresh")
        assert row["status"] == "diverged" and row["checkpoint"] is None
        status, _, body = get(server, "/api/run?run=fresh")
        assert status == 200 and json.loads(body, parse_constant=pytest.fail)["meta"]["last_metrics"]["loss"] is None
        status, _, body = get(server, "/api/generate.png?run=fresh")
        assert status == 409 and "no checkpoint yet" in json.loads(body)["error"]
    finally:
        for f in fresh.iterdir():
            f.unlink()
        fresh.rmdir()


# ----------------------------------------------------------------- security


@pytest.fixture(scope="module")
def traps(serve_runs, tmp_path_factory):
    """A real run beside RUNS_DIR, a secret outside it, and symlinks inside RUNS_DIR pointing out."""
    import shutil

    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes((serve_runs / "ae2d" / "loss.png").read_bytes())
    shutil.copytree(serve_runs / "gan", outside / "run", ignore=shutil.ignore_patterns(".lock"))
    links = [serve_runs / "linked-run", serve_runs / "linked-dir", serve_runs / "ae2d" / "escape.png"]
    links[0].symlink_to(outside / "run")
    links[1].symlink_to(outside)
    links[2].symlink_to(outside / "secret.png")
    yield outside
    for link in links:
        link.unlink()


@pytest.mark.parametrize(
    "path",
    [
        "/files/../../../../etc/passwd",
        "/files/ae2d/../../outside/secret.png",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/files/ae2d/%2e%2e/%2e%2e/etc/passwd",
        "/files//etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        "/files/~/.bashrc",
        "/files/linked-dir/secret.png",
        "/files/ae2d/escape.png",
        "/api/run?run=..",
        "/api/run?run=%2e%2e%2foutside",
        "/api/run?run=/etc",
        "/api/run?run=linked-run",
        "/api/model?run=ae2d/../../outside/run",
        "/api/generate.png?run=linked-run",
    ],
)
def test_paths_outside_runs_dir_are_refused(server, traps, path):
    status, _, body = get(server, path)
    assert status == 403, body
    assert "RUNS_DIR" in json.loads(body)["error"]


def test_the_real_run_beside_runs_dir_is_refused_by_its_relative_and_absolute_path(server, traps, serve_runs):
    rel = os.path.relpath(traps / "run", serve_runs)
    assert rel.startswith("..") and (traps / "run" / "config.yaml").is_file()
    for run in (rel, str(traps / "run")):
        status, _, _ = get(server, "/api/run?run=" + run)
        assert status == 403
    assert "linked-run" not in [r["id"] for r in get_json(server, "/api/runs")["runs"]]  # symlinks not followed


def test_a_foreign_host_header_is_refused(server):
    """DNS rebinding: a page from another site that resolves its name to 127.0.0.1 gets nothing."""
    status, _, body = get(server, "/api/runs", host="evil.example:80")
    assert status == 403 and "is not this machine" in json.loads(body)["error"]
    assert get(server, "/api/runs", host=f"localhost:{server.server_address[1]}")[0] == 200


def test_serve_command_binds_loopback_only_by_default(serve_runs):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genmodels", "serve", str(serve_runs), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving 5 runs" in line and "http://127.0.0.1:" in line, line + proc.stderr.read()
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        # 127.0.0.2 is this machine too; a socket bound to 127.0.0.1 (and not 0.0.0.0) does not answer it.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_errors_are_one_line(tmp_path, serve_runs, capsys):
    from genmodels.cli import main

    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "genmodels", "serve", str(tmp_path / "missing")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stderr.startswith("error: RUNS_DIR") and len(r.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(serve_runs), "--port", str(port)]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--host" in out and "example" in out and "genmodels serve runs/" in out


# ----------------------------------------------------------------- what each model declares


def test_sampling_options_come_from_the_models_declarations(server):
    from genmodels.models.diffusion import SAMPLERS

    options = {o["name"]: o for o in get_json(server, "/api/model?run=diffusion")["sample_options"]}
    assert options["sampler"]["type"] == "str" and options["sampler"]["choices"] == list(SAMPLERS)
    assert options["steps"]["type"] == "int" and options["steps"]["minimum"] == 1 and options["steps"]["help"]
    status, _, body = get(server, "/api/generate.png?run=diffusion&n=1&opt.sampler=bogus")
    assert status == 400 and "sampler must be one of" in json.loads(body)["error"]
    status, _, body = get(server, "/api/generate.png?run=diffusion&n=1&opt.steps=0")
    assert status == 400 and "steps must be >= 1" in json.loads(body)["error"]


def test_completion_is_the_shared_implementation(server, serve_runs):
    """The web app's sheet is ``complete_images`` + ``completion_sheet``, as ``genmodels complete`` draws it."""
    from genmodels.viz.completion import complete_images, completion_sheet

    run = load_run(serve_runs / "pixelcnn", device="cpu")
    x = torch.from_numpy(run.load_data("test").images[5:6]).float().div(255.0)
    result = complete_images(run.model, x, 4, samples=3, generator=torch.Generator().manual_seed(7))
    _, _, body = get(server, "/api/complete.png?run=pixelcnn&index=5&rows=4&samples=3&seed=7")
    assert np.array_equal(png(body), grid_of(completion_sheet(result, 4), nrow=5))
    _, _, body = get(server, "/api/complete.png?run=pixelcnn&index=5&rows=4&samples=3&seed=7&opt.temperature=0.5")
    assert not np.array_equal(png(body), grid_of(completion_sheet(result, 4), nrow=5))  # the option reaches it


@pytest.fixture(scope="module")
def binarised_pixelcnn():
    """An untrained class-conditional PixelCNN over dynamically binarised 8x8 images (3 classes)."""
    from genmodels.models import make_config, model_spec
    from helpers import TINY

    cfg = make_config(
        "conditional-pixelcnn", {**TINY["conditional-pixelcnn"], "image_shape": (1, 8, 8), "num_classes": 3}
    )
    return model_spec("conditional-pixelcnn").build(cfg).eval()


def test_every_completion_keeps_the_same_observed_rows(binarised_pixelcnn):
    """Dynamic binarisation draws a fresh image per call: it is applied once, so all completions share
    the rows they keep (the old web app and CLI each had to remember to)."""
    from genmodels.viz.completion import complete_images, completion_sheet

    x = torch.full((2, 1, 8, 8), 0.5)
    out = complete_images(
        binarised_pixelcnn, x, 3, samples=4, generator=torch.Generator().manual_seed(0), labels=torch.tensor([0, 2])
    )
    assert out.observed.shape == (2, 1, 8, 8) and out.completions.shape == (2, 4, 1, 8, 8)
    assert set(out.observed.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(out.completions[:, :, :, :3], out.observed[:, None, :, :3].expand(2, 4, 1, 3, 8))
    sheet = completion_sheet(out, 3)
    assert sheet.shape == (2 * 6, 1, 8, 8) and (sheet[0, :, 3:] == 0.5).all() and torch.equal(sheet[5], out.observed[0])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"rows": 9}, "rows must be in 0..8"),
        ({"samples": 0}, "completions per image must be >= 1"),
        ({"labels": None}, "is class-conditional; pass the class"),
        ({"labels": torch.tensor([3])}, "class labels must be in 0..2"),
        ({"x": torch.zeros(1, 1, 9, 9)}, "must be 1x8x8"),
        ({"steps": 3}, "does not take the sampling option 'steps'"),
        ({"sampler": "slow"}, "sampler must be one of fast, naive"),
    ],
)
def test_completion_refuses_bad_requests_with_one_clear_error(binarised_pixelcnn, kwargs, words):
    from genmodels.viz.completion import complete_images

    args = {"x": torch.zeros(1, 1, 8, 8), "rows": 4, "samples": 1, "labels": torch.tensor([1]), **kwargs}
    with pytest.raises(ConfigError, match=words):
        complete_images(binarised_pixelcnn, args.pop("x"), args.pop("rows"), generator=None, **args)


def test_completion_needs_a_completable_model(serve_runs):
    from genmodels.viz.completion import complete_images

    run = load_run(serve_runs / "ae2d", device="cpu")
    with pytest.raises(ConfigError, match="cannot complete images"):
        complete_images(run.model, torch.zeros(1, 1, 8, 8), 4, samples=1, generator=None)


# ----------------------------------------------------------------- damaged and hostile run directories

SECRET = "SECRET-0123456789-id_ed25519"
QUICK_S = 20  # every answer below comes in milliseconds; a request that waits on a FIFO never does


@contextlib.contextmanager
def serving(root: Path):
    """The app over ``root`` on a free loopback port, in a thread of this process."""
    from genmodels.serve import make_server

    srv = make_server(root, port=0, device="cpu")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def quick_get(srv, path: str) -> tuple[int, bytes]:
    t0 = time.perf_counter()
    status, _, body = get(srv, path, timeout=QUICK_S)
    assert time.perf_counter() - t0 < QUICK_S / 2, path
    return status, body


@pytest.fixture
def own_runs(serve_runs, tmp_path) -> Path:
    """A RUNS_DIR of its own (the shared one stays clean) holding a copy of the real run ae2d, and a
    'secret' beside it that is valid JSON and YAML (so a leak would parse and show)."""
    root = tmp_path / "runs"
    shutil.copytree(serve_runs / "ae2d", root / "ae2d", ignore=shutil.ignore_patterns(".lock"))
    secret = {"model_name": SECRET, "dataset": SECRET, "status": SECRET, "summary_lines": [SECRET]}
    (tmp_path / "id_ed25519").write_text(json.dumps(secret))
    return root


@pytest.mark.parametrize("name", ["config.yaml", "run.json", "eval.json"])
def test_a_record_symlinked_out_of_its_run_is_never_returned(own_runs, name):
    spy = own_runs / "spy"
    shutil.copytree(own_runs / "ae2d", spy)
    (spy / name).unlink()
    (spy / name).symlink_to(own_runs.parent / "id_ed25519")
    with serving(own_runs) as srv:
        for path in ("/api/runs", "/api/run?run=spy", "/api/leaderboard", "/api/model?run=spy", f"/files/spy/{name}"):
            status, body = quick_get(srv, path)
            assert SECRET.encode() not in body, path
            assert status != 500, body
        rows = {r["id"]: r for r in get_json(srv, "/api/runs")["runs"]}
        assert rows["ae2d"]["damaged"] is None and rows["ae2d"]["model_name"] == "mlp-ae"
        assert f"spy/{name} leads outside spy" in rows["spy"]["damaged"]
        page = get_json(srv, "/api/run?run=spy")
        assert page["summary"]["damaged"] == rows["spy"]["damaged"]
        assert page["series"]["loss"]  # what is not damaged is still shown


def test_a_record_symlinked_to_another_run_is_refused_too(own_runs):
    """Confinement is to the run's own directory, not only to RUNS_DIR."""
    other = own_runs / "other"
    shutil.copytree(own_runs / "ae2d", other)
    (other / "run.json").unlink()
    (other / "run.json").symlink_to(own_runs / "ae2d" / "run.json")
    (other / "borrowed.png").symlink_to(own_runs / "ae2d" / "loss.png")
    with serving(own_runs) as srv:
        row = next(r for r in get_json(srv, "/api/runs")["runs"] if r["id"] == "other")
        assert "other/run.json leads outside other" in row["damaged"] and row["model_name"] == "mlp-ae"
        status, body = quick_get(srv, "/files/other/borrowed.png")
        assert status == 403 and "outside its run" in json.loads(body)["error"]
        assert "borrowed" not in [f["name"] for f in get_json(srv, "/api/run?run=other")["figures"]]
        assert quick_get(srv, "/files/ae2d/loss.png")[0] == 200


def _replace(path: Path, how: str) -> None:
    path.unlink(missing_ok=True)
    if how == "fifo":
        os.mkfifo(path)
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_bytes(b"step-\xff\xfe\n")  # not UTF-8


@pytest.mark.parametrize(
    "name, how, words",
    [
        ("checkpoints/latest", "not-utf8", "is not UTF-8 text"),
        ("checkpoints/latest", "dev-zero", "leads outside"),
        ("checkpoints/latest", "fifo", "is a FIFO"),
        ("run.json", "fifo", "is a FIFO"),
        ("config.yaml", "fifo", "is a FIFO"),
        ("eval.json", "dev-zero", "leads outside"),
        ("metrics.jsonl", "fifo", "is a FIFO"),
        ("samples/final.png", "fifo", None),
    ],
)
def test_one_damaged_run_is_flagged_and_the_others_still_listed(own_runs, name, how, words):
    """The old app answered 500 (a `latest` that is not UTF-8) or hung (a FIFO, /dev/zero) for the whole list."""
    broken = own_runs / "broken"
    shutil.copytree(own_runs / "ae2d", broken)
    _replace(broken / name, how)
    with serving(own_runs) as srv:
        status, body = quick_get(srv, "/api/runs")
        assert status == 200, body
        rows = {r["id"]: r for r in json.loads(body)["runs"]}
        assert set(rows) == {"ae2d", "broken"} and rows["ae2d"]["damaged"] is None
        status, body = quick_get(srv, "/api/run?run=broken")
        assert status == 200, body
        damaged = json.loads(body)["summary"]["damaged"]
        if words is None:  # a grid that is not a regular file is only left out
            assert damaged is None and "final" not in [g["label"] for g in json.loads(body)["grids"]]
            assert quick_get(srv, "/files/broken/samples/final.png")[0] == 404
        else:
            assert words in damaged and f"broken/{name}" in damaged
        if name != "metrics.jsonl":
            assert words is None or words in rows["broken"]["damaged"]
        assert quick_get(srv, "/api/leaderboard")[0] == 200
        status, body = quick_get(srv, "/api/model?run=broken")
        assert status in (200, 409), body
        if name in ("checkpoints/latest", "config.yaml"):
            assert status == 409 and words in json.loads(body)["error"]


def test_a_damaged_record_nested_too_deeply_or_too_large_is_flagged(own_runs):
    (own_runs / "ae2d" / "run.json").write_text("[" * 5000 + "]" * 5000)
    nested = own_runs / "yaml"
    shutil.copytree(own_runs / "ae2d", nested)
    laughs = ["a: &a [" + ", ".join(["x"] * 10) + "]"]
    laughs += [f"{k}: &{k} [" + ", ".join([f"*{p}"] * 10) + "]" for p, k in zip("abcdefg", "bcdefgh", strict=True)]
    (nested / "config.yaml").write_text("\n".join(laughs) + "\n")  # 10**8 nodes once expanded
    with serving(own_runs) as srv:
        status, body = quick_get(srv, "/api/runs")
        rows = {r["id"]: r for r in json.loads(body)["runs"]}
        assert status == 200 and "nested too deeply" in rows["ae2d"]["damaged"]
        assert "too large" in rows["yaml"]["damaged"]
        status, body = quick_get(srv, "/api/run?run=yaml")
        assert status == 200 and json.loads(body)["config"] is None


def test_the_loss_curves_read_only_the_tail_of_a_long_log(own_runs, monkeypatch):
    from genmodels.serve import runs as R

    records = "".join(json.dumps({"step": i, "loss": float(i)}) + "\n" for i in range(1000)) + '{"step": 10'
    (own_runs / "ae2d" / "metrics.jsonl").write_text(records)
    monkeypatch.setattr(R, "MAX_METRICS_BYTES", 3000)
    with serving(own_runs) as srv:
        loss = get_json(srv, "/api/run?run=ae2d")["series"]["loss"]
    steps = [s for s, _ in loss]
    assert steps == list(range(steps[0], 1000)) and 850 < steps[0] < 1000  # whole records only, up to the last


@pytest.mark.parametrize(
    "path",
    ["/files/" + "a" * 5000 + ".png", "/files/ae2d/" + "d/" * 2500 + "x.png", "/api/run?run=" + "c" * 5000],
    ids=["files-name-5000", "files-path-5000", "run-5000"],
)
def test_a_very_long_path_is_not_found(server, path):
    status, _, body = get(server, path)
    assert status == 404 and "longer than any file name" in json.loads(body)["error"]
    assert len(body) < 400  # the path is not echoed back whole


def test_serve_refuses_a_bad_device_before_it_starts(serve_runs):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "genmodels", "serve", str(serve_runs), "--port", "0", "--device", "foo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # the old app started serving here (and answered 500 to every model request)
    )
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.startswith("error: device 'foo'") and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ----------------------------------------------------------------- colour runs (issue 12, point 6)


@pytest.fixture(scope="module")
def colour_server(tmp_path_factory):
    """The app over tiny runs trained on real colour emoji (serve_fixtures.COLOUR_RUNS)."""
    from serve_fixtures import colour_runs_dir

    root = colour_runs_dir(tmp_path_factory)
    with serving(root) as srv:
        yield srv, root


def colourful(rgb: np.ndarray) -> float:
    """Mean absolute difference between the colour channels (0 for any grey picture)."""
    c = rgb.astype(int)
    return float(np.abs(c[..., 0] - c[..., 1]).mean() + np.abs(c[..., 1] - c[..., 2]).mean())


def test_colour_runs_are_listed_and_their_grids_are_the_run_files_in_colour(colour_server):
    srv, root = colour_server
    rows = {r["id"]: r for r in get_json(srv, "/api/runs")["runs"]}
    assert set(rows) == {"rgb-vae", "rgb-pixelcnn", "colorize"}
    assert {r["dataset"] for r in rows.values()} == {"emoji", "colorize:emoji"}
    data = get_json(srv, "/api/run?run=rgb-vae")
    assert [g["step"] for g in data["grids"]] == [10, 20, 30, 30]
    for g in data["grids"]:
        status, headers, body = get(srv, "/files/" + g["file"])
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert body == (root / g["file"]).read_bytes()
        sheet = png(body)
        assert sheet.ndim == 3 and sheet.shape[2] == 3 and colourful(sheet) > 3


def test_colour_generate_and_interpolate_are_the_librarys_colour_images(colour_server):
    srv, root = colour_server
    info = get_json(srv, "/api/model?run=rgb-vae")
    assert info["interpolate"] and info["explore"] and not info["conditional"]
    _, _, body = get(srv, "/api/generate.png?run=rgb-vae&n=16&seed=3")
    run = load_run(root / "rgb-vae", device="cpu")
    expected = grid_of(run.sample(16, seed=3), nrow=8)
    assert expected.shape == (2 * 18 + 2, 8 * 18 + 2, 3)
    assert np.array_equal(png(body), expected) and colourful(png(body)) > 3
    status, _, body = get(srv, "/api/interpolate.png?run=rgb-vae&a=5&b=9&steps=6")
    assert status == 200
    row = tiles(png(body), 16, 6)
    assert row[0].shape == (16, 16, 3)
    _, _, one = get(srv, "/api/generate.png?run=rgb-vae&n=1&seed=5")
    assert np.abs(png(one).astype(int) - row[0].astype(int)).max() <= 2
    status, _, body = get(srv, "/api/decode.png?run=rgb-vae&z=0,0")
    assert status == 200 and png(body).shape == (16, 16, 3)


def test_colour_completion_keeps_every_channel_of_the_top_rows(colour_server):
    srv, root = colour_server
    test = load_run(root / "rgb-pixelcnn", device="cpu").load_data("test")
    status, _, body = get(srv, "/api/complete.png?run=rgb-pixelcnn&index=7&rows=3&samples=2&seed=0")
    assert status == 200
    parts = tiles(png(body), 8, 4)  # kept | 2 completions | original
    original = test.images[7].transpose(1, 2, 0)
    assert colourful(original) > 3  # a colourful emoji, so a grey or channel-swapped answer would show
    assert np.array_equal(parts[-1], original)
    for c in parts[:3]:
        assert np.array_equal(c[:3], original[:3])
    _, _, thumb = get(srv, "/api/test_image.png?run=rgb-pixelcnn&index=7")
    assert np.array_equal(png(thumb), original)
