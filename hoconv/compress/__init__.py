"""Compress a trained network to a budget: per-layer CP / Tucker ranks picked by a solver.

``candidates`` lists each conv's options (error, params, MACs, measured ms), ``solver`` picks one
per layer to meet a budget at least total error, ``apply`` rebuilds / writes the compressed model.
"""

from hoconv.compress.apply import apply_choices, compress_checkpoint, compress_model
from hoconv.compress.candidates import Candidate, LayerInfo, layer_candidates, record_shapes
from hoconv.compress.latency import LatencyTable
from hoconv.compress.solver import Budget, parse_budget, solve

__all__ = [
    "Budget",
    "Candidate",
    "LatencyTable",
    "LayerInfo",
    "apply_choices",
    "compress_checkpoint",
    "compress_model",
    "layer_candidates",
    "parse_budget",
    "record_shapes",
    "solve",
]
