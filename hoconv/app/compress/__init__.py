"""Compress a trained network to a budget: per-layer CP / Tucker ranks picked by a solver.

``candidates`` lists each conv's options (error, params, MACs, measured ms), ``solver`` picks one
per layer to meet a budget at least total error, ``apply`` rebuilds the
compressed model, ``finetune`` distils it from the original, ``pipeline`` runs it on a checkpoint.
"""

from hoconv.app.compress.apply import CompressReport, apply_choices, compress_model
from hoconv.app.compress.candidates import (
    Candidate,
    ErrorCache,
    LayerInfo,
    layer_candidates,
    record_shapes,
)
from hoconv.app.compress.finetune import DistillSettings, distillation_loss, finetune
from hoconv.app.compress.latency import LatencyTable
from hoconv.app.compress.measure import interleaved_ms, model_macs
from hoconv.app.compress.pipeline import compress_checkpoint
from hoconv.app.compress.solver import Budget, parse_budget, solve

__all__ = [
    "Budget",
    "Candidate",
    "CompressReport",
    "DistillSettings",
    "ErrorCache",
    "LatencyTable",
    "LayerInfo",
    "apply_choices",
    "compress_checkpoint",
    "compress_model",
    "distillation_loss",
    "finetune",
    "interleaved_ms",
    "layer_candidates",
    "model_macs",
    "parse_budget",
    "record_shapes",
    "solve",
]
