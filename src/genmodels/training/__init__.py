"""Training: the generic Trainer, checkpoints, run directories and the train / load_run API."""

from genmodels.training.config import DataConfig, TrainConfig, resolve_run_config
from genmodels.training.run import Run, build_model, load_run, train
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
