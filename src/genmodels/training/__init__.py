"""Training: the generic Trainer, its batch order and schedule, and training into a run directory.

Reading a run back (``Run``, ``load_run``) lives in ``genmodels.runs``; the public ``genmodels.train``
(``genmodels.api``) adds the evaluation's class monitor to ``training.session.train``.
"""

from genmodels.runs import Run, load_run
from genmodels.training.config import DataConfig, TrainConfig, resolve_run_config
from genmodels.training.session import build_model, train
from genmodels.training.trainer import Trainer, TrainingDiverged

__all__ = [
    "DataConfig",
    "Run",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "build_model",
    "load_run",
    "resolve_run_config",
    "train",
]
