"""`hoconv demo`: train on images -> transduce -> temporal -> fine-tune, against a frame-wise
fine-tune and three 3-D models trained from scratch, on the embedded synthetic data set, as a
fair comparison: the same budget and schedule for every model, the lr of each chosen by a small
search on the validation split, 3 seeds (5 with --full), mean +- std. Writes DIR/report.md
and the figures.

The default profile runs in about 7 minutes on a 2-core CPU (measured: 7.0 min wall, 13.1 min
of CPU over 2 processes; width-8 models, 32 px, 8-frame clips); at that size every model stays
weak (mean CCC about 0.1) and the scratch 3-D models do not learn: report.md says so. `--full`
is the budget where the 3-D baselines learn (width 16, 96 subjects, 5 seeds; the scratch models
also get the static model's steps on clips: equal steps in total; measured: 19.3 min wall,
37.3 min CPU, test mean CCC 0.43 +- 0.05 CP-3-D, 0.55 +- 0.03 R3D-18 and 0.41 +- 0.06
R(2+1)D-18 from scratch, 0.50-0.52 for the models from stills). `--tiny` runs the whole path
in seconds (numbers meaningless; CI).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    p = subparsers.add_parser(
        "demo", help="the paper's pipeline on synthetic data", description=__doc__
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--full", action="store_true", help="the budget where the 3-D baselines learn"
    )
    size.add_argument("--tiny", action="store_true", help="seconds-long smoke run (CI)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument(
        "--jobs", type=int, default=None, help="runs in parallel (default: the profile's, 2)"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a key of hoconv/app/configs/demo.yaml (e.g. seeds=[0,1,2,3,4])",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per run (default 1: fastest for these small models; the runs "
        "use the cores through --jobs; 0 keeps torch's default)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print where the report is."""
    from hoconv.app.demo import run_demo
    from hoconv.app.engine.config import parse_key_values

    profile = "full" if args.full else "tiny" if args.tiny else "default"
    overrides = parse_key_values(args.set, "--set")
    if args.jobs is not None:
        overrides["jobs"] = args.jobs
    result = run_demo(
        args.out,
        profile=profile,
        device=args.device,
        overrides=overrides,
        progress=not args.no_progress,
        threads=args.threads or None,
    )
    print(f"demo done in {result['total_s'] / 60:.1f} min: {args.out}/report.md")
    return 0
