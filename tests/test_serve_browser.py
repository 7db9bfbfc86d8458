"""The web app in a real headless Chromium (Debian's, driven by Playwright): `genmodels serve` runs as
its own process, the test clicks through every page, checks that each picture rendered and is not
blank, and saves a screenshot of every page under the pytest tmp dir (``.../screenshots*/``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_fixtures import EVALUATED, SERVE_RUNS, serve_runs_dir

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory) -> Path:
    """RUNS_DIR holding one tiny trained run per family (see serve_fixtures.SERVE_RUNS)."""
    return serve_runs_dir(tmp_path_factory)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium dials out at start, and a closed network refuses it.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# An <img> drawn onto a canvas and read back: what the browser decoded, as grey levels.
PIXELS_JS = """(img) => {
  if (!img.complete || !img.naturalWidth) return null;
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const g = new Array(c.width * c.height);
  for (let i = 0; i < g.length; i++) g[i] = (d[4 * i] + d[4 * i + 1] + d[4 * i + 2]) / 3;
  return {w: c.width, h: c.height, g: g, shown: img.getBoundingClientRect().width};
}"""


# The inpaint painter's 8x8 cells, 1 where painted (white), row by row.
PAINTED_JS = """(c) => { const s = c.width / 8, d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const out = []; for (let r = 0; r < 8; r++) for (let q = 0; q < 8; q++)
    out.push(d[4 * (Math.floor((r + 0.5) * s) * c.width + Math.floor((q + 0.5) * s))] > 127 ? 1 : 0);
  return out; }"""


def _need_browser() -> None:
    """Chromium and Playwright are test requirements; CI (CI=true) installs both, so there a miss fails."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing = "Playwright for Python (pip install -e '.[test]')"
    else:
        missing = None if Path(CHROMIUM).exists() else "Debian's chromium (apt-get install -y chromium chromium-driver)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need {missing}; .ci/run installs it")
        pytest.skip(f"needs {missing}; .ci/run installs it")


@contextlib.contextmanager
def serve_process(root: Path):
    """`genmodels serve ROOT --port 0` as a real process; yields its address."""
    _need_browser()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genmodels", "serve", str(root), "--port", "0", "--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if "http://127.0.0.1:" not in line:
            pytest.fail(f"genmodels serve did not start: {line} {proc.stderr.read()}")
        yield line.split(" at ")[1].split()[0].rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(serve_runs):
    """The app over the shared tiny runs, as a real process."""
    with serve_process(serve_runs) as url:
        yield url


@pytest.fixture(scope="module")
def page(app_url, tmp_path_factory):
    """A fresh headless Chromium profile and one page; collects the page's JavaScript errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp(), prefix="chromium-profile-"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        pg = ctx.new_page()
        pg.set_default_timeout(90_000)  # a first model load on a busy 2-core machine
        pg.js_errors = []
        pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
        pg.on("console", lambda m: m.type == "error" and pg.js_errors.append(m.text))
        yield pg
        ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def pixels(page, selector: str) -> np.ndarray:
    """The rendered image's grey levels, (H, W); fails if it does not decode or is not on screen."""
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector
    )
    r = page.locator(selector).evaluate(PIXELS_JS)
    assert r is not None, f"{selector} did not render"
    assert r["shown"] > 0, f"{selector} is not displayed"
    return np.array(r["g"], dtype=float).reshape(r["h"], r["w"])


def assert_picture(page, selector: str, tile: int | None = None, per_row: int | None = None) -> np.ndarray:
    """The image rendered, and is a picture: its first tile is not flat.

    Args:
        tile: the image size of a grid (with a 2-pixel frame); None for a single image.
        per_row: for a grid the trainer saved (scaled up for small images), its images per row.
    """
    g = pixels(page, selector)
    scale = round(g.shape[1] / (per_row * (tile + 2) + 2)) if tile and per_row else 1
    first = g[2 * scale : (2 + tile) * scale, 2 * scale : (2 + tile) * scale] if tile else g
    assert first.std() > 2.0, f"{selector} looks blank (std {first.std():.2f})"
    return g


def wait_new_src(page, selector: str, old: str) -> None:
    page.wait_for_function(
        "([s, old]) => { const i = document.querySelector(s);"
        " return i && i.src !== old && i.complete && i.naturalWidth > 0; }",
        arg=[selector, old],
    )


def src(page, selector: str) -> str:
    return page.locator(selector).get_attribute("src") or ""


def test_every_page_renders_in_chromium(page, app_url, shots, serve_runs):
    page.goto(app_url + "/")
    page.wait_for_selector("#runs-table")
    assert page.locator("#runs-table tr.run-row").count() == len(SERVE_RUNS)
    board = page.locator("#leaderboard .leaderboard-table tbody tr")
    assert board.count() == len(EVALUATED) and board.first.locator("a.run-link").inner_text() == EVALUATED[0]
    page.screenshot(path=shots / "01-runs.png", full_page=True)

    page.click("#nav-leaderboard")
    page.wait_for_selector("#page-leaderboard .leaderboard-table")
    assert "FID" in page.locator("#page-leaderboard thead").inner_text()
    page.screenshot(path=shots / "02-leaderboard.png", full_page=True)
    page.click(f"#page-leaderboard a.run-link[data-run='{EVALUATED[0]}']")
    page.wait_for_selector(f"#page-run[data-run='{EVALUATED[0]}'] #eval pre")

    for i, name in enumerate(SERVE_RUNS):
        page.click("#nav-runs")
        page.wait_for_selector("#runs-table")
        page.click(f"#runs-table a.run-link[data-run='{name}']")
        page.wait_for_selector(f"#page-run[data-run='{name}']")
        check_run_page(page, name, serve_runs)
        page.screenshot(path=shots / f"{i + 3:02d}-run-{name}.png", full_page=True)
    assert page.js_errors == []
    assert len(list(shots.glob("*.png"))) == 2 + len(SERVE_RUNS)


def test_leaving_a_run_page_before_its_model_answers_raises_no_error(page, app_url):
    """The model's description can answer after the user has moved on (a slow first load): the app must
    not build the gone page's sections or read their controls from the document (CI once saw a TypeError)."""
    page.js_errors.clear()
    held, holding = [], [True]

    def hold(route) -> None:  # hold the answer while `holding`: the request stays pending
        if holding[0]:
            held.append(route)
        else:
            route.continue_()

    page.route("**/api/model?*", hold)
    page.goto(app_url + "/#/run/cvae2d")
    page.wait_for_selector("#page-run[data-run='cvae2d'] #model-area")
    while not held:
        page.wait_for_timeout(20)
    page.click("#nav-runs")
    page.wait_for_selector("#runs-table")
    holding[0] = False
    for route in held:
        route.continue_()  # the late answer arrives on the runs list
    page.wait_for_timeout(1500)  # for it and any timer a built section would start
    assert page.js_errors == []
    assert page.locator("#generate").count() == 0
    # Coming back still works: the page and its generated grid appear.
    page.click("#runs-table a.run-link[data-run='cvae2d']")
    page.wait_for_function(
        "() => { const i = document.querySelector('#gen-img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    page.unroute("**/api/model?*")
    assert page.js_errors == []


def check_run_page(page, name: str, serve_runs: Path) -> None:
    """Every section of one run page works: curves, the grid slider, generate, and what the model offers."""
    size = 8 if "data.image_size" in SERVE_RUNS[name][2] else 28
    curves = page.locator("#losses svg.curve-svg")
    assert curves.count() >= 1 and int(curves.first.get_attribute("data-points")) >= 2
    assert page.locator("#losses svg.curve-svg path").first.get_attribute("d").count("L") >= 1

    grid = assert_picture(page, "#grid-img", tile=size, per_row=3)  # train.grid = 3
    slider = page.locator("#grid-slider")
    if int(slider.get_attribute("max")) > 0:
        old = src(page, "#grid-img")
        slider.evaluate("(s) => { s.value = 0; s.dispatchEvent(new Event('input')); }")
        wait_new_src(page, "#grid-img", old)
        assert page.locator("#grid-label").inner_text().startswith("step 10")
        assert not np.array_equal(assert_picture(page, "#grid-img", tile=size, per_row=3), grid)

    page.wait_for_selector("#gen-img:not([hidden])")  # drawn on arrival, without a click
    first = assert_picture(page, "#gen-img", tile=size)
    assert first.shape == (2 * (size + 2) + 2, 8 * (size + 2) + 2)  # 16 images, 8 a row
    assert page.locator("#gen-timing").inner_text().startswith("server ")
    old = src(page, "#gen-img")
    page.fill("#gen-seed", "5")
    if page.locator("#gen-class").count():
        page.select_option("#gen-class", "3")
    page.click("#gen-button")
    wait_new_src(page, "#gen-img", old)
    assert not np.array_equal(assert_picture(page, "#gen-img", tile=size), first)

    if page.locator("#interp-button").count():
        page.click("#interp-button")
        page.wait_for_selector("#interp-img:not([hidden])")
        assert assert_picture(page, "#interp-img", tile=size).shape == (size + 4, 10 * (size + 2) + 2)
    if page.locator("#explorer-canvas").count():
        check_explorer(page)
    if page.locator("#complete-button").count():
        page.click("#complete-thumbs img[data-index='3']")
        assert page.input_value("#complete-index") == "3"
        page.click("#complete-button")
        page.wait_for_selector("#complete-img:not([hidden])")
        assert assert_picture(page, "#complete-img", tile=size).shape == (size + 4, 6 * (size + 2) + 2)
        assert_picture(page, "#complete-thumbs img[data-index='3']")
    if page.locator("#inpaint-button").count():
        page.click("#inpaint-thumbs img[data-index='2']")
        page.click("#inpaint-button")
        page.wait_for_selector("#inpaint-img:not([hidden])")
        assert assert_picture(page, "#inpaint-img", tile=size).shape == (size + 4, 6 * (size + 2) + 2)
        assert page.locator("#inpaint-error").inner_text() == ""
    if page.locator("#edit-button").count():
        if page.locator("#edit-class").count():
            page.select_option("#edit-class", "3")
        page.click("#edit-button")
        page.wait_for_selector("#edit-img:not([hidden])")
        per = 5 if page.locator("#edit-strength").count() else 2  # SDEdit: the image and 4 edits
        assert assert_picture(page, "#edit-img", tile=size).shape == (size + 4, per * (size + 2) + 2)
        assert page.locator("#edit-error").inner_text() == ""
    for fig in page.locator("#figures img").all():
        assert fig.evaluate("(i) => i.complete && i.naturalWidth > 0"), fig.get_attribute("src")


def check_explorer(page) -> None:
    """Moving the pointer over the latent map decodes the point under it."""
    page.wait_for_selector("#explorer-img[data-z]")
    canvas = page.locator("#explorer-canvas")
    assert int(canvas.get_attribute("data-points")) == 297  # the digits test split's codes
    drawn = canvas.evaluate(
        "(c) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] < 250 || d[i + 1] < 250; return n; }"
    )
    assert drawn > 100  # the dots are on the map
    centre = assert_picture(page, "#explorer-img")
    box = canvas.bounding_box()
    z0 = page.get_attribute("#explorer-img", "data-z")
    page.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.15 * box["height"])
    page.mouse.move(box["x"] + 0.12 * box["width"], box["y"] + 0.1 * box["height"], steps=4)
    page.wait_for_function(
        "(z0) => { const i = document.querySelector('#explorer-img'); return i.dataset.z !== z0 && i.complete; }",
        arg=z0,
    )
    page.wait_for_timeout(300)  # let the last queued point land
    corner = assert_picture(page, "#explorer-img")
    assert not np.array_equal(corner, centre)
    zx, zy = (float(v) for v in page.get_attribute("#explorer-img", "data-z").split(","))
    cx, cy = (float(v) for v in z0.split(","))
    assert zx < cx and zy > cy  # up and to the left of the centre: smaller z0, larger z1


def test_a_damaged_run_is_listed_as_damaged_and_its_page_says_why(page, app_url, serve_runs):
    """A run whose `latest` is a FIFO (the old app hung on it): marked in the list with the reason, the
    other runs listed as before, and its page opens with the reason on top."""
    broken = serve_runs / "zz-broken"
    (broken / "checkpoints").mkdir(parents=True)
    try:
        for name in ("config.yaml", "run.json"):
            shutil.copy(serve_runs / "ae2d" / name, broken / name)
        os.mkfifo(broken / "checkpoints" / "latest")
        page.js_errors.clear()
        page.goto(app_url + "/#/")
        page.reload()
        row = page.locator("#runs-table tr.run-row.damaged")
        row.wait_for()
        assert row.count() == 1 and row.get_attribute("data-run") == "zz-broken"
        assert "zz-broken/checkpoints/latest is a FIFO" in row.locator(".damage").inner_text()
        assert row.locator("td.status-damaged").inner_text() == "damaged"
        assert page.locator("#runs-table tr.run-row:not(.damaged)").count() == len(SERVE_RUNS)
        page.click("#runs-table a.run-link[data-run='zz-broken']")
        assert "latest is a FIFO" in page.locator("#run-damaged").inner_text()
        page.wait_for_selector("#model-error")  # the model cannot load: said once, in its place
        assert "is a FIFO" in page.locator("#model-error").inner_text()
        # Chromium logs the model's 409 answer as a console error; nothing else may appear there.
        assert [e for e in page.js_errors if "status of 409" not in e] == []
    finally:
        shutil.rmtree(broken)


def test_sampling_options_are_the_models_declared_controls(page, app_url):
    page.goto(app_url + "/#/run/diffusion")
    page.wait_for_selector("#gen-img:not([hidden])")
    sampler = page.locator("#generate select.opt[name='sampler']")
    assert sampler.locator("option").all_inner_texts()[1:] == ["ddpm", "ddim", "dpm-solver"]
    assert "at least 1" in page.locator("#generate input.opt[name='steps']").get_attribute("title")
    old = src(page, "#gen-img")
    sampler.select_option("ddim")
    page.fill("#generate input.opt[name='steps']", "2")
    page.click("#gen-button")
    wait_new_src(page, "#gen-img", old)
    assert page.locator("#gen-error").inner_text() == ""


# What the browser decoded, in colour: (H, W, 3) as [r, g, b] rows.
RGB_JS = """(img) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push(d[i], d[i + 1], d[i + 2]);
  return {w: c.width, h: c.height, rgb: out};
}"""


def test_a_colour_run_page_shows_its_grids_and_samples_in_colour(page, tmp_path_factory):
    from serve_fixtures import colour_runs_dir

    root = colour_runs_dir(tmp_path_factory)
    with serve_process(root) as url:
        page.js_errors.clear()
        page.goto(url + "/#/run/rgb-vae")
        page.wait_for_selector("#gen-img:not([hidden])")
        for selector in ("#grid-img", "#gen-img"):
            page.wait_for_function(
                "(s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
                arg=selector,
            )
            r = page.locator(selector).evaluate(RGB_JS)
            shown = np.array(r["rgb"], dtype=np.uint8).reshape(r["h"], r["w"], 3)
            # The bytes behind the picture's src (a served file or a blob the page made), fetched in the page.
            raw = page.locator(selector).evaluate(
                "async (i) => Array.from(new Uint8Array(await (await fetch(i.src)).arrayBuffer()))"
            )
            sent = np.asarray(Image.open(io.BytesIO(bytes(raw))).convert("RGB"))
            assert np.array_equal(shown, sent), selector  # the browser shows the colour picture it was sent
            c = shown.astype(int)
            assert np.abs(c[..., 0] - c[..., 1]).mean() + np.abs(c[..., 1] - c[..., 2]).mean() > 3, selector
        page.screenshot(path=tmp_path_factory.mktemp("colour-shots") / "run-rgb-vae.png", full_page=True)
        assert page.js_errors == []


def test_a_translator_page_translates_test_images_and_offers_no_sampling(page, tmp_path_factory):
    """The colorize run (pix2pix, grey emoji to colour): its page has the Translate panel and no Generate
    panel; the sheet's columns are a grey input, its translation and the colour original, as sent."""
    from serve_fixtures import colour_runs_dir

    root = colour_runs_dir(tmp_path_factory)
    with serve_process(root) as url:
        page.js_errors.clear()
        page.goto(url + "/#/run/colorize")
        page.wait_for_selector("#translate-img:not([hidden])")
        assert page.locator("#generate").count() == 0 and page.locator("#gen-img").count() == 0
        options = page.locator("#translate-direction option").all_inner_texts()
        assert len(options) == 1 and options[0].endswith(" to emoji"), options  # pix2pix: forward only
        page.fill("#translate-n", "4")
        old = src(page, "#translate-img")
        page.click("#translate-button")
        wait_new_src(page, "#translate-img", old)
        r = page.locator("#translate-img").evaluate(RGB_JS)
        shown = np.array(r["rgb"], dtype=np.uint8).reshape(r["h"], r["w"], 3).astype(int)
        assert shown.shape[:2] == (2 + 3 * 18, 2 + 4 * 18)  # 3 rows (input, translation, target) of 4 tiles
        tile = lambda row, col: shown[2 + 18 * row : 18 + 18 * row, 2 + 18 * col : 18 + 18 * col]  # noqa: E731
        for col in range(4):
            grey, target = tile(0, col), tile(2, col)
            assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
            assert np.abs(target[..., 0] - target[..., 1]).mean() + np.abs(target[..., 1] - target[..., 2]).mean() > 3
        test = json.loads(
            page.evaluate("async () => JSON.stringify(await (await fetch('/api/model?run=colorize')).json())")
        )
        assert test["translate"] == ["forward"] and test["generate"] is False
        assert page.js_errors == []


def test_the_sample_grid_holds_its_place_before_it_loads(page, app_url):
    """The training grid loads after the page is built; its box must not grow when it arrives, or every
    section below jumps (a mask being drawn on the inpaint canvas moved away from the pointer mid-stroke:
    the stroke stopped after its first pointer move). With the grid's file held back, the grid's box is
    already its final height and the model sections sit where they will stay."""
    layout = """() => ({ grid: document.querySelector('#grid-img').parentElement.getBoundingClientRect().height,
                        loaded: document.querySelector('#grid-img').naturalWidth > 0,
                        model: document.querySelector('#model-area').getBoundingClientRect().top + window.scrollY })"""
    page.goto(app_url + "/#/run/diffusion")
    page.wait_for_selector("#inpaint-button")
    page.wait_for_function("document.querySelector('#grid-img').complete")
    loaded = page.evaluate(layout)
    assert loaded["loaded"] and loaded["grid"] == 300, loaded

    def hold_grids(route):  # the run's grids point at files that never arrive (the browser cached the real ones)
        resp = route.fetch()
        body = resp.json()
        for g in body["grids"]:
            g["file"] += ".held-back"
        route.fulfill(response=resp, json=body)

    page.route("**/api/run?*", hold_grids)
    try:
        open_run_page(page, app_url, "diffusion")
        page.wait_for_function("document.querySelector('#grid-img').src.endsWith('.held-back')")
        page.wait_for_function("document.querySelector('#grid-img').complete")
        held = page.evaluate(layout)
        assert not held["loaded"], held
        assert held["grid"] == loaded["grid"] and held["model"] == loaded["model"], (held, loaded)
    finally:
        page.unroute("**/api/run?*")


def test_the_first_generated_sheet_moves_nothing_below_it(page, app_url):
    """The run page draws a first sheet of samples without a click; its box is reserved before the sheet
    arrives, so no section below moves when it lands (on a slow machine it landed while a mask was being
    painted on the inpaint canvas, and the stroke's last cells fell off the moved canvas)."""
    held = []
    page.route("**/api/generate.png?*", lambda route: held.append(route))  # answered only when let go
    try:
        open_run_page(page, app_url, "diffusion")
        for _ in range(200):  # the page asks for the sheet once it is built
            if held:
                break
            page.wait_for_timeout(50)
        where = "() => document.querySelector('#inpaint-canvas').closest('section').getBoundingClientRect().top"
        before = page.evaluate(where)
        assert len(held) == 1 and page.locator("#gen-img").is_hidden()
        held.pop().continue_()
        page.wait_for_selector("#gen-img:not([hidden])")
        page.wait_for_function("document.querySelector('#gen-img').naturalWidth > 0")
        shown = page.locator("#gen-img").bounding_box()
        assert shown["width"] == 8 * 48 and shown["height"] > 48, shown  # 16 samples: two rows of eight
        assert page.evaluate(where) == before
    finally:
        page.unroute("**/api/generate.png?*")


def open_run_page(page, app_url: str, run: str) -> None:
    """A run's page built anew (going to the same address again only re-reads the hash: the old page stays)."""
    page.goto(app_url + "/#/")
    page.wait_for_selector("#page-run", state="detached")
    page.goto(app_url + f"/#/run/{run}")
    page.wait_for_selector("#inpaint-button" if run == "diffusion" else "#page-run")


def test_a_stroke_that_leaves_the_canvas_paints_to_its_edge(page, app_url):
    """The inpaint painter holds the pointer while the button is down: a drag that ends past the canvas's
    right edge marks every cell up to that edge (without capture the move outside never reached it)."""
    open_run_page(page, app_url, "diffusion")
    page.select_option("#inpaint-mask", "drawn")
    canvas = page.locator("#inpaint-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    y = box["y"] + 0.7 * box["height"]  # row 5 of 8
    page.mouse.move(box["x"] + 0.3 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 1.5 * box["width"], y)  # one move, ending outside the canvas
    page.mouse.up()
    painted = np.array(canvas.evaluate(PAINTED_JS)).reshape(8, 8)
    assert painted[5, 2:].all() and painted.sum() == 6, painted


def test_a_drawn_mask_is_what_the_diffusion_model_fills(page, app_url):
    """Painting on the inpaint canvas hides exactly the painted pixels: the sheet's first tile (the known
    pixels, the hidden ones grey) is grey where the stroke went and nowhere else, and the pixels kept
    are the test image's."""
    open_run_page(page, app_url, "diffusion")
    canvas = page.locator("#inpaint-canvas")
    assert canvas.is_hidden()  # the painter shows only for a drawn mask
    page.select_option("#inpaint-mask", "drawn")
    assert canvas.is_visible()
    canvas.scroll_into_view_if_needed()  # mouse coordinates are the viewport's
    box = canvas.bounding_box()
    y = box["y"] + 0.3 * box["height"]
    page.mouse.move(box["x"] + 0.05 * box["width"], y)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.95 * box["width"], y, steps=3)  # a fast drag: 3 pointer moves over 8 cells
    page.mouse.up()
    # The stroke is gap-free: every cell of row 2 is marked on the canvas, and nothing else (a painter that
    # marked only the cells under each pointer event left gaps in fast or coalesced moves).
    painted = page.locator("#inpaint-canvas").evaluate(PAINTED_JS)
    assert np.array_equal(np.array(painted).reshape(8, 8).nonzero()[0], [2] * 8), np.array(painted).reshape(8, 8)
    page.click("#inpaint-button")
    page.wait_for_selector("#inpaint-img:not([hidden])")
    g = pixels(page, "#inpaint-img")
    known = g[2:10, 2:10]  # the first 8x8 tile: the known pixels
    original = g[2:10, 2 + 5 * 10 : 10 + 5 * 10]  # the last tile: the test image
    grey = np.isclose(known, 127.5, atol=1.0) & ~np.isclose(original, 127.5, atol=1.0)
    rows = sorted(set(np.nonzero(grey)[0].tolist()))
    assert rows == [2], f"the stroke at 30% of the height is row 2 of 8; grey rows {rows}"
    assert grey[2].sum() >= 4  # the stroke's cells, less any whose test pixel is itself mid-grey
    np.testing.assert_array_equal(known[[0, 1, 3, 4, 5, 6, 7]], original[[0, 1, 3, 4, 5, 6, 7]])
