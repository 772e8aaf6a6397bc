"""What a compression run reports, and the verdict on a latency budget (met, or why not)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from torch import nn

from hoconv.compress.solver import Budget


@dataclass
class CompressReport:
    """Per-layer rows, whole-model numbers per stage, the latency rounds and the search cost.

    ``whole`` maps a stage (``"original"``, ``"compressed"``, later ``"finetuned"``) to
    ``{"params", "macs", "ms", "score"}``; ``ms`` of the original and the compressed model are
    timed together, interleaved. ``rounds`` lists, per solve, the target, the solver's predicted
    cost and (latency budgets) the measured whole-forward ratio. ``in_model_share``: the share
    of the original's forward its factorizable layers take in the model (latency budgets).
    """

    budget: Budget
    rows: list[dict] = field(default_factory=list)
    whole: dict[str, dict] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    search_s: float = 0.0
    in_model_share: float | None = None
    decompositions: int = 0
    latency_measured: int = 0
    budget_met: bool = True
    note: str | None = None


class BudgetWarning(UserWarning):
    """A latency budget that was not met, kept with ``best_effort``."""


class BudgetNotMet(ValueError):
    """A latency budget the cheapest choices could not reach (``best_effort=False``).

    Carries what was built anyway: ``model``, ``spec`` and the filled-in ``report`` (whose
    ``note`` is this error's message), so a caller can still write the report.
    """

    def __init__(self, report: CompressReport, model: nn.Module, spec: dict) -> None:
        super().__init__(report.note)
        self.report, self.model, self.spec = report, model, spec


def check_met(report, new, spec, best_effort: bool) -> None:
    """Latency: the final measured ratio (compress.json's) against the budget.

    Not met: ``report.note`` says so; with ``best_effort`` a warning, else :class:`BudgetNotMet`.
    """
    b = report.budget
    if b.metric != "latency":
        return
    ratio = report.whole["compressed"]["ms"] / report.whole["original"]["ms"]
    if ratio <= b.fraction:
        return
    report.budget_met = False
    report.note = (
        f"budget not met: measured {ratio:.2f}x of the original (target {b.fraction:g}), "
        "cheapest choice kept"
        if report.rounds and "note" in report.rounds[-1]
        else f"budget not met: measured {ratio:.2f}x of the original (target {b.fraction:g}) "
        f"after {len(report.rounds)} solver rounds"
    ) + conv_share_hint(report)
    if not best_effort:
        raise BudgetNotMet(report, new, spec)
    warnings.warn(report.note, BudgetWarning, stacklevel=3)


def conv_share_hint(report) -> str:
    """Why a latency budget may be out of reach: the factorizable convs' share of the forward.

    The share is measured in the model (its forward against the model without those layers,
    ``report.in_model_share``), else their own dense timings over the original's forward; when
    even removing them all would leave more than the budget, the rest of the model (norms,
    activations, pooling, heads) bounds what factorizing can save, and the hint says so.
    """
    share = report.in_model_share
    if share is None:  # not measured in the model: their own timings over the whole
        original_ms = report.whole.get("original", {}).get("ms")
        conv_ms = sum(row["dense_ms"] or 0.0 for row in report.rows)
        share = conv_ms / original_ms if original_ms else None
    if share is None or 1 - share <= report.budget.fraction:
        return ""
    what = "convs and blocks" if any("of" in row for row in report.rows) else "convs"
    return (
        f"; the factorizable {what} take {share:.0%} of the original's forward (measured in "
        f"the model), so even without them it would take ~{1 - share:.2f}x: the rest of the "
        "model bounds this budget"
    )
