"""`hoconv evaluate`: metrics of a checkpoint on a split, with the paper's figures.

Writes DIR/metrics.json ({"valence": {rmse, sagr, pcc, ccc}, "arousal": {...},
"expression": {"accuracy"} when present, "n": readable samples scored, "skipped":
unreadable samples left out}) computed on all gathered predictions,
DIR/predictions.csv, DIR/va_over_time.png (per video, the paper's figure 8) and
DIR/circumplex.png.
"""

from __future__ import annotations

import argparse

from hoconv.app.engine import config as config_io


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
    p = subparsers.add_parser("evaluate", help="evaluate a checkpoint", description=__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="data set (default: the one the checkpoint was trained on)")
    p.add_argument("--data-root")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--mode",
        choices=("static", "video"),
        help="default: the checkpoint's; a 2-D model on video runs frame by frame",
    )
    p.add_argument(
        "--data-arg", action="append", metavar="KEY=VALUE", help="extra data set keyword"
    )
    p.add_argument("--batch-size", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--device")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--per-video",
        action="store_true",
        help='also report the mean over videos (as "per_video_mean"; the default pools frames)',
    )
    p.add_argument("--out", required=True, help="folder for metrics.json and the figures")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the metrics; exit code 0."""
    from hoconv.app.engine import evaluate, read_checkpoint, tasks

    overrides = {
        "data": args.data,
        "mode": args.mode,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "device": args.device,
    }
    if args.data_root is not None:
        overrides["data_root"] = args.data_root
    extra = config_io.parse_key_values(args.data_arg, "--data-arg")
    if extra:
        overrides["data_kwargs"] = extra
    metrics = evaluate(
        args.checkpoint,
        args.out,
        overrides=overrides,
        split=args.split,
        plots_too=not args.no_plots,
        per_video=args.per_video,
    )
    task = tasks.get(read_checkpoint(args.checkpoint)["config"]["task"])
    print(f"{args.split}: {task.summary_line(metrics)}; written to {args.out}")
    return 0
