"""`hoconv export`: a checkpoint's model as ONNX or TorchScript, checked against PyTorch.

Writes FILE and FILE.json (input shape, normalisation, output columns). The export is run
on a random batch and compared with PyTorch (ONNX Runtime for ONNX, when installed);
a difference above --tolerance is an error.
"""

from __future__ import annotations

import argparse

from hoconv.app.commands import refuse_overwriting_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX / TorchScript",
                              description=__doc__)  # fmt: skip
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--image-size", type=int, help="override the checkpoint's training image size")
    p.add_argument(
        "--clip-length", type=int, help="3-D models: frames per clip (default: training)"
    )
    p.add_argument("--dynamo", action="store_true", help="ONNX through torch.export")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check, print one line; exit 0."""
    from hoconv.app.export import export_checkpoint

    refuse_overwriting_source(args.checkpoint, args.out)
    for name in ("image_size", "clip_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(
                f"--{name.replace('_', '-')}: expected a positive integer, got {value}"
            )
    info = export_checkpoint(args.checkpoint, args.out, args.format, image_size=args.image_size,
                             clip_length=args.clip_length, dynamo=args.dynamo,
                             check=not args.no_check)  # fmt: skip
    diff = info["max_abs_difference"]
    if diff is not None and not diff <= args.tolerance:
        raise ValueError(
            f"export of {args.checkpoint} differs from PyTorch by {diff:.3g} "
            f"(> --tolerance {args.tolerance:g}); the file is kept at {args.out} for inspection"
        )
    checked = "not checked" if diff is None else f"max |difference| vs PyTorch {diff:.2e}"
    print(f"wrote {info['file']} ({args.format}, input {info['input_shape']}; {checked})")
    return 0
