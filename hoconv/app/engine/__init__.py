"""Training, evaluation and prediction loops, checkpoints and DDP for hoconv.

Entry points: :func:`train`, :func:`evaluate`, :func:`predict_dataset`, :func:`load_model`
(rebuild a model from a checkpoint for prediction / export), :func:`read_checkpoint`,
:func:`write_checkpoint`.
"""

from hoconv.app.engine.build import Framewise, spatial_dims
from hoconv.app.engine.checkpoint import (
    CheckpointError,
    build_model,
    load_model,
    make_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from hoconv.app.engine.evaluate import evaluate
from hoconv.app.engine.predict import predict_dataset
from hoconv.app.engine.trainer import TrainingError, train

__all__ = [
    "CheckpointError",
    "Framewise",
    "TrainingError",
    "build_model",
    "evaluate",
    "load_model",
    "make_checkpoint",
    "predict_dataset",
    "read_checkpoint",
    "spatial_dims",
    "train",
    "write_checkpoint",
]
