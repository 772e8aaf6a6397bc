"""`hoconv compress` on checkpoints: the library's :mod:`hoconv.compress` plus the engine.

``finetune`` distils the compressed model from the original, ``pipeline`` runs compress /
score / distil / write on a checkpoint, ``report`` writes compress.md / .json / _layers.png.
The library names are re-exported here for existing callers.
"""

from hoconv.app.compress.finetune import DistillSettings, distillation_loss, finetune
from hoconv.app.compress.pipeline import compress_checkpoint
from hoconv.compress import (
    Budget,
    BudgetNotMet,
    BudgetWarning,
    Candidate,
    CompressReport,
    ErrorCache,
    LatencyTable,
    LayerInfo,
    apply_choices,
    compress_model,
    interleaved_ms,
    layer_candidates,
    model_macs,
    parse_budget,
    record_shapes,
    solve,
)

__all__ = [
    "Budget",
    "BudgetNotMet",
    "BudgetWarning",
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
