"""`hoconv transduce`: turn a 2-D (image) checkpoint into a 3-D (video) one.

The new temporal factors start as a delta at the kernel centre (``--init center``): on a clip
of identical frames the video model gives, at every frame, what the image model gives.
Next step: ``hoconv train --mode video --init FILE --phase temporal``, then ``--phase all``.
"""

from __future__ import annotations

import argparse

from hoconv.app.commands import refuse_overwriting_source


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `transduce` subcommand."""
    p = subparsers.add_parser(
        "transduce", help="2-D checkpoint -> 3-D checkpoint", description=__doc__
    )
    p.add_argument("--checkpoint", required=True, help="source checkpoint (e.g. RUN/best.pt)")
    p.add_argument("--out", required=True, help="transduced checkpoint to write")
    p.add_argument("--dims", type=int, default=1, help="number of new axes (default 1: time)")
    p.add_argument("--kernel-size", type=int, default=3, help="kernel size on the new axes")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--padding", default="same", help='"same", "valid" or an integer')
    p.add_argument("--dilation", type=int, default=1)
    p.add_argument(
        "--init",
        default="center",
        choices=("center", "ones", "average"),
        help="initialisation of the new factors (the paper used ones)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Transduce the checkpoint; exit code 0 on success."""
    from hoconv.app.engine.checkpoint import transduce_checkpoint

    refuse_overwriting_source(args.checkpoint, args.out)
    padding = int(args.padding) if str(args.padding).lstrip("-").isdigit() else args.padding
    spec = transduce_checkpoint(
        args.checkpoint,
        args.out,
        dims=args.dims,
        kernel_size=args.kernel_size,
        stride=args.stride,
        padding=padding,
        dilation=args.dilation,
        init=args.init,
    )
    print(f"wrote {args.out}: {spec['name']} + {len(spec['transductions'])} transduction(s)")
    return 0
