"""``genmodels serve``: a local web app to browse runs and play with their models.

Standard library only on the server side (``http.server``), plain HTML/CSS/JavaScript in the
browser; models are used through their public protocol, so every family appears as it lands.
"""

from __future__ import annotations

import sys
from pathlib import Path

from genmodels.serve.app import App, make_server


def serve(runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto") -> None:
    """Serve RUNS_DIR at http://HOST:PORT/ until interrupted (Ctrl-C).

    Args:
        runs_dir: the folder whose run directories (and their eval.json files) the app shows.
        host: the address to bind; the default keeps the app on this machine.
        port: the TCP port; 0 picks a free one (the address printed says which).
        device: where models run ("auto" picks CUDA when present).
    """
    from genmodels.serve.runs import find_runs

    server = make_server(runs_dir, host, port, device)
    root = server.RequestHandlerClass.app.root
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    n = len(find_runs(root))
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {host}: anyone who can reach this machine can browse {root} and run its models",
            file=sys.stderr,
        )
    print(
        f"serving {n} run{'s' if n != 1 else ''} under {root} at http://{shown}:{bound_port}/ (Ctrl-C stops)",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


__all__ = ["App", "make_server", "serve"]
