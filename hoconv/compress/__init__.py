"""Compress a network to a budget: per-layer CP / Tucker ranks picked by a solver (library).

``candidates`` lists each conv's options (error, params, MACs, measured ms), ``solver`` picks one
per layer to meet a budget at least total error, ``apply`` rebuilds the compressed model
(:func:`compress_model`), ``width`` offers narrower hidden widths of inverted-residual blocks
(their CP rank) as candidates too, ``evbmf`` gives EVBMF ranks for comparison. Distillation and the
checkpoint pipeline (they use the training engine) live in :mod:`hoconv.app.compress`.
"""

from hoconv.compress.apply import (
    BudgetNotMet,
    BudgetWarning,
    CompressReport,
    apply_choices,
    compress_model,
)
from hoconv.compress.candidates import (
    Candidate,
    ErrorCache,
    LayerInfo,
    layer_candidates,
    record_shapes,
)
from hoconv.compress.evbmf import evbmf_rank, tucker_ranks_evbmf
from hoconv.compress.latency import LatencyTable
from hoconv.compress.measure import interleaved_ms, model_macs, param_count
from hoconv.compress.solver import Budget, parse_budget, solve
from hoconv.compress.width import BlockInfo, block_candidates, narrow, record_blocks

__all__ = [
    "BlockInfo",
    "Budget",
    "BudgetNotMet",
    "BudgetWarning",
    "Candidate",
    "CompressReport",
    "ErrorCache",
    "LatencyTable",
    "LayerInfo",
    "apply_choices",
    "block_candidates",
    "compress_model",
    "evbmf_rank",
    "interleaved_ms",
    "layer_candidates",
    "model_macs",
    "narrow",
    "param_count",
    "parse_budget",
    "record_blocks",
    "record_shapes",
    "solve",
    "tucker_ranks_evbmf",
]
