"""The HTTP side of the web app: a standard-library ``ThreadingHTTPServer`` with a small JSON API.

Routes (all GET; the app never writes into RUNS_DIR):

    /                           the page (static/index.html; the browser routes #/, #/leaderboard, #/run/ID)
    /static/NAME                app.js, style.css
    /api/runs                   the run list, and whether any run has been evaluated
    /api/leaderboard            every eval.json as tables per dataset, sorted by FID
    /api/run?run=ID             one run: meta, config, loss curves, sample grids, figures, eval, checkpoints
    /api/model?run=ID           what the model offers (loads it): classes, latent size, completion, options
    /api/generate.png?run=ID&n=16&seed=0[&class=K][&opt.NAME=V]   samples as a PNG grid
    /api/interpolate.png?run=ID&a=0&b=1&steps=10[&class=K]       decoded path between two samples
    /api/decode.png?run=ID&z=0.5,-1.2[&class=K]                   one decoded latent (the 2-D explorer)
    /api/latent?run=ID                                            the explorer's region and test codes
    /api/test_image.png?run=ID&index=I                            one test image
    /api/complete.png?run=ID&index=I&rows=14&samples=4&seed=0     PixelCNN completion sheet
    /api/inpaint.png?run=ID&index=I&mask=center|0101...&samples=4&seed=0[&opt.NAME=V]   inpainting sheet
    /api/edit.png?run=ID&index=I&strength=0.5[&class=K]&samples=4&seed=0[&opt.NAME=V]   editing sheet
    /api/translate.png?run=ID&index=I&n=8&direction=forward|backward                  translation sheet
    /files/PATH                 a PNG / JSON / YAML / Markdown file under RUNS_DIR (a regular file, confined
                                to the run it belongs to)

Model requests also take ``step`` (a checkpoint) and ``weights`` (ema | raw). Errors are JSON
``{"error": "..."}``: 400 for a bad parameter, 403 for a path outside RUNS_DIR or a foreign Host
header, 404 for an unknown run or file, 409 for a run without a usable checkpoint. A run whose files
are refused or damaged (see ``serve.runs``) is still listed and shown, with ``damaged`` saying why.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from genmodels.errors import CheckpointError, ConfigError, GenmodelsError
from genmodels.serve import runs as R
from genmodels.serve.playground import MAX_IMAGES, Playground

STATIC = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
FILE_TYPES = {
    ".png": "image/png",
    ".json": "application/json",
    ".jsonl": "text/plain",
    ".yaml": "text/plain",
    ".md": "text/plain",
    ".txt": "text/plain",
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_SEED = 2**63 - 1


class App:
    """What every request handler shares: RUNS_DIR (resolved), the loaded models, the static files."""

    def __init__(self, runs_dir: str | Path, device: str = "auto", allow_any_host: bool = False) -> None:
        root = Path(runs_dir).expanduser()
        if not root.is_dir():
            raise ConfigError(f"RUNS_DIR {runs_dir} is not a directory; pass the folder that holds your runs")
        self.root = root.resolve()
        self.playground = Playground(device)  # refuses a bad device name before the server binds
        self.allow_any_host = allow_any_host
        self.static = {
            name: resources.files("genmodels.serve").joinpath("static", name).read_bytes() for name in STATIC
        }


def _int(q: dict[str, str], key: str, default: int | None = None, lo: int = 0, hi: int = MAX_SEED) -> int | None:
    """An integer query parameter in lo..hi; missing or blank gives ``default``."""
    text = q.get(key, "").strip()
    if text == "":
        return default
    try:
        v = int(text)
    except ValueError:
        raise ConfigError(f"parameter {key} must be an integer, got {text[:40]!r}") from None
    if not lo <= v <= hi:
        raise ConfigError(f"parameter {key} must be in {lo}..{hi}, got {v}")
    return v


def _float(q: dict[str, str], key: str, default: float) -> float:
    """A finite number query parameter; missing or blank gives ``default``."""
    text = q.get(key, "").strip()
    if text == "":
        return default
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"parameter {key} must be a number, got {text[:40]!r}") from None
    if not math.isfinite(v):
        raise ConfigError(f"parameter {key} must be a finite number, got {text[:40]!r}")
    return v


def strict_json(obj: Any) -> Any:
    """obj with every NaN or infinity (a diverged run's last loss) replaced by None: browsers' JSON.parse
    rejects the bare NaN that Python's json module writes."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


class Handler(BaseHTTPRequestHandler):
    """One request: route, check, answer JSON, PNG or a static file."""

    server_version = "genmodels-serve"
    app: App  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal shows the address once, not every image request of the explorer."""

    def do_GET(self) -> None:
        """Answer a GET; every failure becomes a JSON error with the matching status."""
        t0 = time.perf_counter()
        try:
            self._check_host()
            parts = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            self._route(parts.path, q, t0)
        except R.PathRefused as e:
            self._error(HTTPStatus.FORBIDDEN, str(e))
        except R.NotFound as e:
            self._error(HTTPStatus.NOT_FOUND, str(e))
        except CheckpointError as e:
            self._error(HTTPStatus.CONFLICT, str(e))
        except GenmodelsError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser moved on (the explorer drops stale requests)
        except Exception as e:  # a bug: say what, keep serving
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}")

    def _check_host(self) -> None:
        """Refuse a Host header that is not this machine's loopback name: a web page elsewhere cannot
        then reach the app through DNS rebinding."""
        if self.app.allow_any_host:
            return
        host = (self.headers.get("Host") or "").strip().lower()
        if not host:  # only browsers can be turned against the app, and a browser always sends Host
            return
        name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
        if name not in LOOPBACK:
            raise R.PathRefused(f"Host {host!r} is not this machine; open the app at http://127.0.0.1:PORT/")

    def _route(self, path: str, q: dict[str, str], t0: float) -> None:
        if path in ("/", "/index.html"):
            return self._send(200, self.app.static["index.html"], STATIC["index.html"])
        if path == "/favicon.ico":  # none: answer "no content" rather than a 404 in the browser's console
            return self._send(204, b"", "image/x-icon")
        if path.startswith("/static/"):
            name = path[len("/static/") :]
            if name not in STATIC:
                raise R.NotFound(f"no static file {name!r}")
            return self._send(200, self.app.static[name], STATIC[name])
        if path.startswith("/files/"):
            return self._file(unquote(path[len("/files/") :]))
        api = API.get(path)
        if api is None:
            raise R.NotFound(f"no page {path!r}; the app lives at /")
        result = api(self, q)
        if isinstance(result, bytes):
            return self._send(200, result, "image/png", t0)
        return self._send(200, json.dumps(strict_json(result)).encode(), "application/json", t0)

    def _file(self, rel: str) -> None:
        root = self.app.root
        path = R.resolve_inside(root, rel)  # a path leaving RUNS_DIR is refused (403) before anything else
        shown = PurePosixPath(rel), PurePosixPath(R.run_id(root, path))  # the name asked for, and the real one
        kinds = {FILE_TYPES.get(p.suffix.lower()) for p in shown}
        if None in kinds or any(part.startswith(".") for p in shown for part in p.parts):
            raise R.NotFound(f"{R.quote_path(rel)} is not a file the app serves (PNG, JSON, YAML, Markdown)")
        self._send(200, R.read_file(root, rel), FILE_TYPES[shown[0].suffix.lower()])

    def _send(self, status: int, body: bytes, kind: str, t0: float | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind + ("; charset=utf-8" if kind.startswith("text/") else ""))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if t0 is not None:
            self.send_header("X-Elapsed-Ms", f"{1000 * (time.perf_counter() - t0):.1f}")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

    # ----------------------------------------------------------------- API

    def _run_path(self, q: dict[str, str]) -> Path:
        if "run" not in q:
            raise ConfigError("parameter run is missing; pass run=ID from /api/runs")
        return R.run_dir(self.app.root, q["run"])

    def _loaded(self, q: dict[str, str]) -> Any:
        step = _int(q, "step", None, 0)
        return self.app.playground.get(self._run_path(q), step, q.get("weights") or "ema")

    def api_runs(self, q: dict[str, str]) -> dict[str, Any]:
        root = self.app.root
        rows = [R.run_summary(root, p) for p in R.find_runs(root)]
        return {"root": str(root), "runs": rows, "evaluated": sum(r["eval"] is not None for r in rows)}

    def api_leaderboard(self, q: dict[str, str]) -> dict[str, Any]:
        return R.leaderboard(self.app.root)

    def api_run(self, q: dict[str, str]) -> dict[str, Any]:
        return R.run_page(self.app.root, self._run_path(q))

    def api_model(self, q: dict[str, str]) -> dict[str, Any]:
        return self.app.playground.info(self._loaded(q).run)

    def api_generate(self, q: dict[str, str]) -> bytes:
        options = {k[4:]: v for k, v in q.items() if k.startswith("opt.")}
        n = _int(q, "n", 16, 1, MAX_IMAGES)
        return self.app.playground.generate(self._loaded(q), n, _int(q, "seed", 0), _int(q, "class"), options)

    def api_interpolate(self, q: dict[str, str]) -> bytes:
        steps = _int(q, "steps", 10, 0, 10**6)
        return self.app.playground.interpolate(
            self._loaded(q), _int(q, "a", 0), _int(q, "b", 1), steps, _int(q, "class")
        )

    def api_decode(self, q: dict[str, str]) -> bytes:
        try:
            z = [float(v) for v in q.get("z", "").split(",")]
        except ValueError:
            raise ConfigError("parameter z must be numbers separated by commas, e.g. z=0.5,-1.2") from None
        return self.app.playground.decode_point(self._loaded(q), z, _int(q, "class"))

    def api_latent(self, q: dict[str, str]) -> dict[str, Any]:
        return self.app.playground.latent_map(self._loaded(q))

    def api_test_image(self, q: dict[str, str]) -> bytes:
        return self.app.playground.test_image(self._loaded(q), _int(q, "index", 0))

    def api_complete(self, q: dict[str, str]) -> bytes:
        options = {k[4:]: v for k, v in q.items() if k.startswith("opt.")}
        return self.app.playground.complete(
            self._loaded(q),
            _int(q, "index", 0),
            _int(q, "rows", 14, 0, 10**6),
            _int(q, "samples", 4, 0, 10**6),
            _int(q, "seed", 0),
            _int(q, "class"),
            options,
        )

    def api_inpaint(self, q: dict[str, str]) -> bytes:
        options = {k[4:]: v for k, v in q.items() if k.startswith("opt.")}
        return self.app.playground.inpaint(
            self._loaded(q),
            _int(q, "index", 0),
            q.get("mask", "center")[:100_000],
            _int(q, "samples", 4, 0, 10**6),
            _int(q, "seed", 0),
            _int(q, "class"),
            options,
        )

    def api_edit(self, q: dict[str, str]) -> bytes:
        options = {k[4:]: v for k, v in q.items() if k.startswith("opt.")}
        return self.app.playground.edit(
            self._loaded(q),
            _int(q, "index", 0),
            _float(q, "strength", 0.5),
            _int(q, "class"),
            _int(q, "samples", 4, 0, 10**6),
            _int(q, "seed", 0),
            options,
        )

    def api_translate(self, q: dict[str, str]) -> bytes:
        return self.app.playground.translate(
            self._loaded(q), _int(q, "index", 0), _int(q, "n", 8, 0, 10**6), q.get("direction", "forward")[:20]
        )


API = {
    "/api/runs": Handler.api_runs,
    "/api/leaderboard": Handler.api_leaderboard,
    "/api/run": Handler.api_run,
    "/api/model": Handler.api_model,
    "/api/generate.png": Handler.api_generate,
    "/api/interpolate.png": Handler.api_interpolate,
    "/api/decode.png": Handler.api_decode,
    "/api/latent": Handler.api_latent,
    "/api/test_image.png": Handler.api_test_image,
    "/api/complete.png": Handler.api_complete,
    "/api/inpaint.png": Handler.api_inpaint,
    "/api/edit.png": Handler.api_edit,
    "/api/translate.png": Handler.api_translate,
}


def make_server(
    runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto"
) -> ThreadingHTTPServer:
    """A ready (bound, not yet serving) server for RUNS_DIR; port 0 picks a free port.

    Args:
        host: the address to bind; anything but loopback exposes every run to the network.
        device: where models run ("auto" picks CUDA when present).

    Raises:
        GenmodelsError: RUNS_DIR is not a directory, or the address cannot be bound.
    """
    app = App(runs_dir, device, allow_any_host=host not in LOOPBACK)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server_cls = ThreadingHTTPServer
    if ":" in host:  # an IPv6 address such as ::1
        import socket

        server_cls = type("Server6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_cls((host, port), handler)
    except OSError as e:
        raise GenmodelsError(
            f"cannot listen on {host}:{port} ({e.strerror or e}); pass another --port (0 picks a free one)"
        ) from None
    server.daemon_threads = True
    return server
