"""``--lasso auto``: a penalty schedule that picks gamma, so users need not guess it.

The rule (one proximal lasso step after each optimizer step, as ``--proximal``):

0. **Delay** (optional): the first ``delay_epochs`` epochs train without the penalty, so that
   the ramp ranks components the network has learnt to use rather than its initialisation.
1. **Ramp**: gamma starts at ``start`` and doubles every ``doubling_steps`` optimizer steps.
2. **Stop the ramp** at the first step where at least ``target`` of the rank components (CP
   weights, Tucker core slices) are exactly zero, or at the end of an epoch whose validation
   score fell more than ``tolerance`` below the best score seen so far.
3. **Hold**: from then on the penalty is off and the components that were zero stay exactly
   zero (they are re-zeroed after every step), so the rest of the run fine-tunes the kept
   components and ``hoconv prune`` removes the zeroed ones without changing any output.

The gamma reached and why the ramp stopped are kept in :meth:`AutoLasso.state` (the trainer
writes them to the run's ``config.yaml`` as ``lasso_auto``, and to ``log.csv`` each epoch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from hoconv.layers import CPConv
from hoconv.pruning import (
    component_counts,
    optimizer_proximal_step,
    rank_layers,
    tucker_group_norms,
)


@dataclass
class AutoLasso:
    """State of the automatic lasso schedule (see the module docstring for the rule).

    Args:
        target: share of rank components, in (0, 1), to drive to exact zero.
        tolerance: validation-score drop (from the best so far) that stops the ramp.
        start: the first gamma.
        doubling_steps: optimizer steps between doublings of gamma.
        delay_epochs: epochs trained without the penalty before the ramp starts.
    """

    target: float = 0.3
    tolerance: float = 0.02
    start: float = 1e-3
    doubling_steps: int = 20
    delay_epochs: int = 0
    epochs_seen: int = 0
    steps: int = 0
    gamma: float = 0.0
    phase: str = "ramp"
    stopped_by: str | None = None
    zero_share: float = 0.0
    best_score: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise ValueError(f"lasso_target must be in (0, 1), got {self.target!r}")
        if not self.tolerance >= 0:
            raise ValueError(f"lasso_tolerance must be >= 0, got {self.tolerance!r}")
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ValueError(f"lasso_start must be > 0, got {self.start!r}")
        if not (isinstance(self.doubling_steps, int) and self.doubling_steps >= 1):
            raise ValueError(
                f"lasso_doubling_steps must be an integer >= 1, got {self.doubling_steps!r}"
            )
        if not (isinstance(self.delay_epochs, int) and self.delay_epochs >= 0):
            raise ValueError(f"lasso_delay must be an integer >= 0, got {self.delay_epochs!r}")
        self.gamma = self.gamma or self.start
        if self.phase not in ("ramp", "hold"):
            raise ValueError(f"lasso schedule phase must be 'ramp' or 'hold', got {self.phase!r}")
        self._held: list | None = None

    def state(self) -> dict:
        """A plain dict of the schedule (for config.yaml and resuming)."""
        return asdict(self)

    @torch.no_grad()
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Call after each ``optimizer.step()``: one proximal step (ramp) or re-zeroing (hold)."""
        if self.phase == "hold":
            if self._held is None:
                raise RuntimeError("AutoLasso resumed in its hold phase: call resume(model) first")
            _apply_zeros(model, self._held)
            return
        if self.epochs_seen < self.delay_epochs:  # still in the delay: no penalty
            return
        zeros = optimizer_proximal_step(model, optimizer, self.gamma)
        _, total = component_counts(model)
        self.steps += 1
        self.zero_share = zeros / max(total, 1)
        if self.zero_share >= self.target:
            self._hold(model, "target")
        elif self.steps % self.doubling_steps == 0:
            self.gamma *= 2.0

    def end_epoch(self, model: nn.Module, score: float) -> None:
        """Call with each epoch's validation score: a drop beyond ``tolerance`` stops the ramp."""
        ramping = self.epochs_seen >= self.delay_epochs
        self.epochs_seen += 1
        if self.phase == "ramp" and ramping and self.best_score is not None:
            if score < self.best_score - self.tolerance:
                self._hold(model, "tolerance")
        if self.best_score is None or score > self.best_score:
            self.best_score = float(score)

    def _hold(self, model: nn.Module, reason: str) -> None:
        self.phase, self.stopped_by = "hold", reason
        self._held = _zero_masks(model)

    def resume(self, model: nn.Module) -> AutoLasso:
        """Re-read which components are held at zero (before any step of a resumed run)."""
        if self.phase == "hold":
            self._held = _zero_masks(model)
        return self


def _zero_masks(model: nn.Module) -> list:
    """Per rank layer: the CP weights that are zero, or the Tucker (output, input) zero slices."""
    masks = []
    for _, layer in rank_layers(model, "lasso auto"):
        if isinstance(layer, CPConv):
            masks.append(layer.weights == 0)
        else:
            out_norms, in_norms = tucker_group_norms(layer.core)
            masks.append((out_norms == 0, in_norms == 0))
    return masks


def _apply_zeros(model: nn.Module, masks: list) -> None:
    """Set the masked CP weights / Tucker core slices back to exactly zero."""
    for (_, layer), mask in zip(rank_layers(model, "lasso auto"), masks):
        if isinstance(layer, CPConv):
            layer.weights.masked_fill_(mask, 0.0)
        else:
            layer.core[mask[0]] = 0.0
            layer.core[:, mask[1]] = 0.0
