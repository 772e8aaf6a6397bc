"""`hoconv compress` on checkpoints: the library's :mod:`hoconv.compress` plus the engine.

``finetune`` distils the compressed model from the original, ``pipeline`` runs compress /
score / distil / write on a checkpoint, ``report`` writes compress.md / .json / _layers.png.
The budget, solver, candidates and :func:`~hoconv.compress.compress_model` are in
:mod:`hoconv.compress`.
"""

from hoconv.app.compress.finetune import DistillSettings, distillation_loss, finetune
from hoconv.app.compress.pipeline import compress_checkpoint

__all__ = ["DistillSettings", "compress_checkpoint", "distillation_loss", "finetune"]
