"""What :func:`hoconv.pruning.prune` removed: per-layer ranks, a markdown table, figure 9, a hint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LayerRanks:
    """Kept / total rank components of one factorized layer after pruning.

    A CP layer counts its rank components; a Tucker layer its output plus input ranks
    (``rank_after`` shows them as ``(R_out, R_in)``).
    """

    name: str
    kept: int
    total: int
    params_removed: int
    rank_after: str = ""


@dataclass
class PruneReport:
    """Result of :func:`hoconv.pruning.prune`: per-layer ranks and whole-model parameter counts.

    ``smallest_weight`` is the smallest CP ``|weights[r]|`` or Tucker core-slice norm seen.
    """

    threshold: float
    layers: list[LayerRanks] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    smallest_weight: float = float("inf")

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def removed_share(self) -> float:
        """Share of the rank components removed, in [0, 1]."""
        return 1.0 - self.kept / max(self.total, 1)


def prune_hint(report: PruneReport) -> str | None:
    """What to change when :func:`hoconv.pruning.prune` removed nothing, or None when it did.

    Names the smallest ``|weight|`` seen, so the user can pick ``--threshold`` or train longer
    / with a larger lasso.
    """
    if report.kept < report.total:
        return None
    return (
        f"nothing pruned: the smallest |weight| is {report.smallest_weight:.4g} > threshold "
        f"{report.threshold:g}. Raise --threshold (to at least {report.smallest_weight:.4g}, "
        "which changes outputs), or train with a larger --lasso (or --lasso auto), more epochs, "
        "or --proximal (the proximal step shrinks each weight by lr * gamma per step)"
    )


def rank_report_table(report: PruneReport) -> str:
    """A markdown table of a :class:`PruneReport` (one row per layer, then the total)."""
    lines = [
        f"Pruned at |weight| <= {report.threshold:g}: {report.params_before} -> "
        f"{report.params_after} parameters; smallest |weight| {report.smallest_weight:.4g}",
        "",
        "| layer | kept | total | kept % | parameters removed | rank after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for layer in report.layers:
        share = 100.0 * layer.kept / layer.total
        lines.append(
            f"| {layer.name} | {layer.kept} | {layer.total} | {share:.1f} | "
            f"{layer.params_removed} | {layer.rank_after} |"
        )
    removed = sum(layer.params_removed for layer in report.layers)
    share = 100.0 * report.kept / max(report.total, 1)
    lines.append(f"| **total** | {report.kept} | {report.total} | {share:.1f} | {removed} | |")
    return "\n".join(lines) + "\n"


def plot_rank_report(report: PruneReport, path: str | Path) -> Path:
    """Bar plot of kept / total ranks per layer (like the paper's figure 9), written as an image.

    Uses matplotlib's Agg canvas directly (no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not report.layers:
        raise ValueError("the report has no layers to plot")
    path = Path(path)
    names = [layer.name for layer in report.layers]
    xs = range(len(names))
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(xs, [layer.total for layer in report.layers], color="#cccccc", label="total rank")
    ax.bar(xs, [layer.kept for layer in report.layers], color="#1f77b4", label="kept rank")
    ax.set_xticks(list(xs), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("rank components")
    ax.set_title(
        f"Automatic rank selection: {report.kept}/{report.total} components kept, "
        f"{report.params_before - report.params_after} parameters removed"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
