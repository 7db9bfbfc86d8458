"""The public Python API's entry points that join training and evaluation.

``genmodels.train`` is ``training.session.train`` with the evaluation's class monitor (mode-collapse
warnings for GANs) plugged in; everything else is re-exported from where it lives.
"""

from __future__ import annotations

from typing import Any

from genmodels.runs import Run, load_run
from genmodels.training.session import build_model

__all__ = ["Run", "build_model", "load_run", "train"]


def train(*args: Any, **kwargs: Any) -> Run:
    """Train a model into a run directory and return the loaded Run; see ``training.session.train``."""
    from genmodels.eval.monitor import class_monitor
    from genmodels.training.session import train as train_session

    kwargs.setdefault("monitor", class_monitor)
    return train_session(*args, **kwargs)
