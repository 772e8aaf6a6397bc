"""The compress report: per-layer table and figure, whole-model numbers per stage, as md / json / png."""

from __future__ import annotations

import json
from pathlib import Path

STAGES = ("original", "compressed", "finetuned")


def _fmt(value, spec: str = ",") -> str:
    return "-" if value is None else format(value, spec)


COLOURS = {"cp": "C0", "tucker": "C1", "width": "C2"}  # dense: grey


def rank_text(row: dict) -> str:
    """A row's rank as shown: ``k of R`` for a block's width (R: its dense hidden width)."""
    if "of" in row:
        return f"{row['rank']} of {row['of']}" if row["kind"] == "width" else f"- of {row['of']}"
    return str(row["rank"])


def layer_table(report) -> str:
    """Markdown table: layer, kind, rank, error, params, MACs, measured ms.

    The error is a conv's kernel reconstruction error, or a block's relative output error
    (kind ``width``: a narrower hidden width, rank ``k of R``)."""
    lines = [
        "| layer | kind | rank | error | params | MACs | ms (dense ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        lines.append(
            f"| {r['name']} | {r['kind']} | {rank_text(r)} | {r['error']:.3f} | {r['params']:,} "
            f"| {r['macs']:,} | {_fmt(r['ms'], '.3f')} ({_fmt(r['dense_ms'], '.3f')}) |"
        )
    return "\n".join(lines)


def whole_table(report, metric_name: str = "score") -> str:
    """Markdown table of whole-model params / MACs / forward ms / validation metric per stage."""
    base = report.whole["original"]
    lines = [
        f"| stage | params | MACs | forward ms | ms ratio | {metric_name} |",
        "|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        w = report.whole.get(stage)
        if w is None:
            continue
        ratio = w["ms"] / base["ms"] if w.get("ms") and base.get("ms") else None
        lines.append(
            f"| {stage} | {w['params']:,} ({w['params'] / base['params']:.3f}) "
            f"| {w['macs']:,} ({w['macs'] / max(1, base['macs']):.3f}) | {_fmt(w['ms'], '.2f')} "
            f"| {_fmt(ratio, '.3f')} | {_fmt(w.get('score'), '.4f')} |"
        )
    return "\n".join(lines)


def summary(report, metric_name: str = "score") -> str:
    """The whole report as markdown."""
    b = report.budget
    rounds = "; ".join(
        f"target {r['target']:.4g}, predicted {r['predicted']:.4g}"
        + (f", measured ratio {r['measured_ratio']:.3f}" if "measured_ratio" in r else "")
        + (f" ({r['note']})" if "note" in r else "")
        for r in report.rounds
    )
    met = [] if report.note is None else [f"**{report.note}**", ""]
    return "\n".join([
        f"# hoconv compress: budget {b.metric}={b.fraction}", "", *met,
        whole_table(report, metric_name), "",
        "ms: median whole forward, original and compressed timed interleaved in one process.", "",
        layer_table(report), "",
        f"solver rounds: {rounds}", "",
        f"candidate search {report.search_s:.1f} s ({report.decompositions} decompositions, "
        f"{report.latency_measured} latency measurements; the rest from the caches)",
    ])  # fmt: skip


def to_json(report) -> dict:
    """The report as plain JSON data."""
    rows = [dict(r, rank=list(r["rank"]) if isinstance(r["rank"], tuple) else r["rank"])
            for r in report.rows]  # fmt: skip
    return {"budget": vars(report.budget), "rows": rows, "whole": report.whole,
            "rounds": report.rounds, "search_s": report.search_s,
            "budget_met": report.budget_met, "note": report.note,
            "decompositions": report.decompositions,
            "latency_measured": report.latency_measured}  # fmt: skip


def plot_layers(report, path: str | Path) -> Path:
    """Per-layer figure: params, MACs and measured ms of dense vs chosen, error and rank marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report.rows
    y = np.arange(len(rows))
    fig, axes = plt.subplots(1, 4, figsize=(15, 0.32 * len(rows) + 1.8), sharey=True)
    panels = [("params", "dense_params", "parameters"), ("macs", "dense_macs", "MACs"),
              ("ms", "dense_ms", "measured forward ms")]  # fmt: skip
    for ax, (key, dense_key, title) in zip(axes, panels):
        ax.barh(y + 0.2, [r[dense_key] or 0 for r in rows], 0.4, color="0.75", label="dense")
        colours = [COLOURS.get(r["kind"], "0.45") for r in rows]
        ax.barh(y - 0.2, [r[key] or 0 for r in rows], 0.4, color=colours, label="chosen")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # labelled minor ticks overlapped
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7, loc="lower right")
    axes[3].barh(y, [r["error"] for r in rows], 0.6, color="C3")
    for yi, r in zip(y, rows):
        axes[3].text(r["error"] + 0.005, yi, f"{r['kind']} {rank_text(r)}", va="center",
                     fontsize=6)  # fmt: skip
    axes[3].set_title("error: kernel, or block output (kind, rank)", fontsize=9)
    axes[3].set_xlim(0, max([r["error"] for r in rows] + [0.1]) * 1.6)
    axes[0].set_yticks(y, [r["name"] for r in rows], fontsize=7)
    axes[0].invert_yaxis()
    b = report.budget
    fig.suptitle(f"hoconv compress, budget {b.metric}={b.fraction} (blue CP, orange Tucker, "
                 "green block width, grey dense)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(report, folder: str | Path, metric_name: str = "score") -> list[Path]:
    """``compress.md``, ``compress.json`` and ``compress_layers.png`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compress.md").write_text(summary(report, metric_name) + "\n")
    (folder / "compress.json").write_text(json.dumps(to_json(report), indent=1))
    figure = plot_layers(report, folder / "compress_layers.png")
    return [folder / "compress.md", folder / "compress.json", figure]
