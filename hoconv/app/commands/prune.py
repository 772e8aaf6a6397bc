"""`hoconv prune`: remove the rank components a lasso drove to zero, for real.

Train with ``hoconv train --lasso auto`` (or ``--lasso GAMMA --proximal``; the paper's
automatic rank selection), then prune: CP components (zero weights) and Tucker ranks (zero
core slices) go, factors shrink, the checkpoint gets smaller and faster, and every other
command (evaluate, predict, export, ``train --init`` to fine-tune) rebuilds the pruned model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hoconv.app.commands import refuse_overwriting_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prune` subcommand."""
    p = subparsers.add_parser(
        "prune", help="prune zeroed CP / Tucker rank components", description=__doc__
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint to prune (e.g. RUN/best.pt)")
    p.add_argument("--out", required=True, help="pruned checkpoint to write")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="remove components with |weight| (Tucker: core-slice norm) <= this (0.0: only exact zeros)",
    )
    p.add_argument(
        "--report-dir", default=None, help="folder for ranks.md and ranks.png (figure 9)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prune the checkpoint, print the per-layer table; exit code 0 on success."""
    from hoconv.app.engine.checkpoint import prune_checkpoint
    from hoconv.pruning import plot_rank_report, prune_hint, rank_report_table

    refuse_overwriting_source(args.checkpoint, args.out)
    report = prune_checkpoint(args.checkpoint, args.out, args.threshold)
    table = rank_report_table(report)
    print(table)
    if args.report_dir:
        folder = Path(args.report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ranks.md").write_text(table + "\n")
        plot_rank_report(report, folder / "ranks.png")
    print(f"wrote {args.out}: {report.params_before:,} -> {report.params_after:,} parameters")
    hint = prune_hint(report)
    if hint:
        print(hint)
    return 0
