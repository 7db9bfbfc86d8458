"""Evaluation: one protocol for every family, written as eval.json / eval.md, and the leaderboard.

- ``features``: the shipped feature networks (``load_feature_net``), whose penultimate layer replaces
  Inception on small grey images, and the classifier trainer.
- ``metrics``: FID, KID, precision / recall, density / coverage, class coverage, memorisation.
- ``reference``: cached statistics of real test images.
- ``likelihood``: test NLL in nats and bits per dimension (the ``model.nll`` protocol).
- ``classifier_tests``: classification accuracy score and the augmentation experiment.
- ``report``: ``evaluate_run`` / ``evaluate_samples``; ``leaderboard``: the table of every run.

Names are imported lazily so ``import genmodels.eval`` stays light.
"""

from __future__ import annotations

from typing import Any

from genmodels.eval.likelihood import likelihood_report

_LAZY = {
    "evaluate_run": "genmodels.eval.report",
    "evaluate_samples": "genmodels.eval.report",
    "sample_metrics": "genmodels.eval.report",
    "load_feature_net": "genmodels.eval.features",
    "FeatureNet": "genmodels.eval.features",
    "leaderboard": "genmodels.eval.leaderboard",
}

__all__ = ["likelihood_report", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genmodels.eval' has no attribute {name!r}")
