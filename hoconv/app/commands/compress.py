"""`hoconv compress`: factorize a trained checkpoint's convs to meet a params / MACs / latency budget.

Per conv: CP / Tucker candidates with their reconstruction error, parameters, MACs and (for a
latency budget) forward ms measured here at the layer's real input shape (cached per shape in
``$HOCONV_CACHE/compress-latency.json``, errors in ``compress-errors.json``); a greedy
error-per-cost solver picks per-layer kind and rank, layers where factorizing does not pay stay
dense. Budgets are fractions of the whole model: all parameters, all conv + linear MACs, or the
whole forward on --input-shape (measured against the original, re-solved while it misses).
With --block-width each MobileNet-v2 inverted-residual block (expansion > 1) is one more
candidate whose options keep k of its R hidden channels (the block's CP rank; the k that matter
most on the sample), instead of factorizing its 1x1 convs. With --finetune-epochs the
compressed model is distilled from the original on the data of `hoconv train` (the
checkpoint's by default). The output checkpoint loads with evaluate / predict / export like any
other.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from hoconv.app.commands import refuse_overwriting_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compress` subcommand."""
    p = subparsers.add_parser("compress", help="factorize a model to a budget", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="checkpoint to compress (e.g. RUN/best.pt)")
    p.add_argument("--out", required=True, help="compressed checkpoint to write")
    p.add_argument("--budget", required=True, help="params=F | macs=F | latency=F, 0 < F <= 1")
    p.add_argument(
        "--kind",
        default="auto",
        choices=("cp", "tucker", "auto"),
        help="CP, Tucker, or either per layer",
    )
    p.add_argument("--input-shape", required=True, help="shape the model runs at, e.g. 1,3,64,64")
    p.add_argument("--pointwise", action="store_true", help="also factorize 1x1 convs (low rank)")
    p.add_argument(
        "--block-width",
        action="store_true",
        help="narrow the hidden width (the block's CP rank) of inverted-residual blocks",
    )
    p.add_argument(
        "--best-effort",
        action="store_true",
        help="latency budget out of reach: keep the fastest choice, warn, exit 0 (default: exit 2)",
    )
    p.add_argument(
        "--report-dir", default=None, help="folder for compress.md / .json / _layers.png"
    )
    g = p.add_argument_group("data (as in `hoconv train`; default: the checkpoint's own)")
    g.add_argument("--data", help="data set registry name")
    g.add_argument("--data-root", help="folder of the data set")
    g.add_argument("--mode", choices=("static", "video"), help="images or clips")
    g.add_argument("--image-size", type=int, help="input image size (data set option)")
    g.add_argument("--clip-length", type=int, help="frames per clip (data set option)")
    g.add_argument("--data-arg", action="append", metavar="KEY=VALUE", help="data set keyword")
    g.add_argument("--batch-size", type=int, help="batch size of fine-tune and validation")
    g.add_argument("--workers", type=int, help="DataLoader worker processes")
    f = p.add_argument_group("distillation fine-tune (from the original model)")
    f.add_argument("--finetune-epochs", type=int, default=0, help="epochs (0: no fine-tune)")
    f.add_argument("--finetune-lr", type=float, default=5e-4, help="Adam lr")
    f.add_argument("--task-weight", type=float, default=1.0, help="task loss")
    f.add_argument("--mse-weight", type=float, default=1.0,
                   help="MSE to the teacher's V/A, affect")  # fmt: skip
    f.add_argument("--kl-weight", type=float, default=1.0,
                   help="KL to the teacher's logits (expression / classes)")  # fmt: skip
    f.add_argument("--temperature", type=float, default=4.0, help="KL temperature")
    f.add_argument("--max-train-batches", type=int, help="cap on batches per fine-tune epoch")
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


def data_overrides(args: argparse.Namespace) -> dict:
    """The data-config keys given on the command line (None = take the checkpoint's)."""
    from hoconv.app.engine import config as config_io

    kwargs = config_io.parse_key_values(args.data_arg, "--data-arg")
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    if args.clip_length is not None:
        kwargs["clip_length"] = args.clip_length
    flags = {k: getattr(args, k) for k in ("data", "data_root", "mode", "batch_size", "workers")}
    flags["data_kwargs"] = kwargs or None
    return flags


def _progress(line: str) -> None:
    print(f"hoconv compress: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Compress (and distil) the checkpoint, print the report; exit code 0 on success."""
    import torch

    from hoconv.app.compress.finetune import DistillSettings
    from hoconv.app.compress.pipeline import compress_checkpoint
    from hoconv.app.compress.report import summary, write_report
    from hoconv.compress import BudgetNotMet, BudgetWarning, parse_budget

    refuse_overwriting_source(args.checkpoint, args.out)
    budget = parse_budget(args.budget)
    settings = DistillSettings(
        epochs=args.finetune_epochs, lr=args.finetune_lr, task_weight=args.task_weight,
        mse_weight=args.mse_weight, kl_weight=args.kl_weight, temperature=args.temperature,
        max_batches=args.max_train_batches,
    )  # fmt: skip
    sample = torch.randn(*parse_shape(args.input_shape))
    metric = "val score (mean V/A CCC or top-1)"
    try:
        with warnings.catch_warnings():  # the one warning line is printed below
            warnings.simplefilter("ignore", BudgetWarning)
            report, history = compress_checkpoint(
                args.checkpoint, args.out, sample, budget, args.kind, data=data_overrides(args),
                settings=settings, pointwise=args.pointwise, block_width=args.block_width,
                best_effort=args.best_effort, progress=_progress,
            )  # fmt: skip
    except BudgetNotMet as err:  # the report still shows what the cheapest choice gives
        print(summary(err.report, metric))
        if args.report_dir:
            write_report(err.report, args.report_dir, metric)
            print(f"report in {args.report_dir}")
        raise ValueError(f"{err} (nothing written; --best-effort keeps it)") from None
    print(summary(report, metric))
    if report.note:
        print(f"hoconv compress: warning: {report.note}", file=sys.stderr)
    if history:
        print("fine-tune: " + ", ".join(f"epoch {h['epoch']} {h['score']:.4f}" for h in history))
    if args.report_dir:
        write_report(report, args.report_dir, metric)
        print(f"report in {args.report_dir}")
    print(f"wrote {args.out}")
    return 0
