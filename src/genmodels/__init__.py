"""genmodels: the classical deep generative image models with one trainer, one CLI and one evaluation.

The top-level names are imported lazily so ``import genmodels`` stays fast::

    from genmodels import load_dataset, build_model, train, load_run
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_dataset": "genmodels.data",
    "build_model": "genmodels.api",
    "train": "genmodels.api",
    "load_run": "genmodels.runs",
    "Run": "genmodels.runs",
    "MODELS": "genmodels.models",
    "GenmodelsError": "genmodels.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genmodels' has no attribute {name!r}")
