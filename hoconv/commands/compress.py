"""`hoconv compress`: factorize a trained checkpoint's convs to meet a params / MACs / latency budget.

Per conv: CP / Tucker candidates with their reconstruction error, parameters, MACs and (for a
latency budget) forward ms measured here at the layer's real input shape (cached per shape in
``$HOCONV_CACHE/compress-latency.json``); a greedy error-per-cost solver picks per-layer kind and
rank, layers where factorizing does not pay stay dense. The output checkpoint loads with
evaluate / predict / export like any other.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hoconv.commands import refuse_overwriting_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compress` subcommand."""
    p = subparsers.add_parser("compress", help="factorize a model to a budget", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="checkpoint to compress (e.g. RUN/best.pt)")
    p.add_argument("--out", required=True, help="compressed checkpoint to write")
    p.add_argument("--budget", required=True, help="params=F | macs=F | latency=F, 0 < F <= 1")
    p.add_argument("--kind", default="auto", choices=("cp", "tucker", "auto"))
    p.add_argument("--input-shape", required=True, help="shape the model runs at, e.g. 1,3,64,64")
    p.add_argument("--report-dir", default=None, help="folder for compress.md")
    p.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` -> ``(1, 3, 64, 64)``; ValueError on anything else."""
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) < 3 or min(shape) < 1:
        raise ValueError(f"--input-shape {text!r}: expected N,C,*spatial positive ints")
    return shape


def report_table(report) -> str:
    """Markdown table of the per-layer choices and the whole-model totals."""
    lines = [
        "| layer | kind | rank | error | params | MACs | ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        ms = "-" if r["ms"] is None else f"{r['ms']:.3f}"
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['rank']} | {r['error']:.3f} | {r['params']:,} "
            f"| {r['macs']:,} | {ms} |"
        )
    lines.append(f"\nparams {report.params_before:,} -> {report.params_after:,}; "
                 f"conv MACs {report.macs_before:,} -> {report.macs_after:,}")  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Compress the checkpoint, print the per-layer table; exit code 0 on success."""
    import torch

    from hoconv.compress import compress_checkpoint, parse_budget

    refuse_overwriting_source(args.checkpoint, args.out)
    budget = parse_budget(args.budget)
    sample = torch.randn(*parse_shape(args.input_shape))
    report = compress_checkpoint(args.checkpoint, args.out, sample, budget, args.kind)
    table = report_table(report)
    print(table)
    if args.report_dir:
        folder = Path(args.report_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "compress.md").write_text(table + "\n")
    print(f"wrote {args.out}")
    return 0
