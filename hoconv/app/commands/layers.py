"""`hoconv layers`: parameter and operation counts of dense vs CP vs Tucker convolutions."""

from __future__ import annotations

import argparse

from hoconv import rank as R
from hoconv.layers import CPConv, TuckerConv

# The appendix's 3-D ConvNet (Jester): 3x3x3 convs with these (in, out) channels.
JESTER_STACK = ((3, 64), (64, 128), (128, 256), (256, 256))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "layers",
        help="parameter / MAC table of dense, CP and Tucker convolutions",
        description="Print parameters and MACs of dense, CP and Tucker convolutions for a stack of layers "
        "(default: the appendix's 3-D ConvNet, CP rank 6 x input channels).",
    )
    parser.add_argument("--channels", nargs="+", default=None, metavar="IN:OUT",
                        help="layer channel pairs, e.g. 64:128 128:256 (default: the Jester stack)")  # fmt: skip
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--dim", type=int, default=3, help="number of spatial axes")
    parser.add_argument("--input-size", type=int, nargs="+", default=[16, 32, 32],
                        help="spatial input size used for MACs (one int per axis)")  # fmt: skip
    parser.add_argument("--rank", default="6x",
                        help="CP rank: an int, a fraction of dense params (0.5), 'same', or '<k>x' = k x in_channels")  # fmt: skip
    parser.add_argument(
        "--tucker-rank", default="same", help="Tucker rank: int, fraction or 'same'"
    )
    parser.set_defaults(func=run)


def _parse_rank(text: str, in_channels: int) -> R.RankArg:
    if text.endswith("x"):
        return round(float(text[:-1]) * in_channels)
    if text == "same":
        return text
    return float(text) if "." in text else int(text)


def _parse_pairs(pairs: list[str] | None) -> tuple[tuple[int, int], ...]:
    if pairs is None:
        return JESTER_STACK
    parsed = []
    for pair in pairs:
        try:
            c, t = (int(v) for v in pair.split(":"))
        except ValueError:
            raise ValueError(
                f"--channels entries must look like IN:OUT (e.g. 64:128), got {pair!r}"
            ) from None
        parsed.append((c, t))
    return tuple(parsed)


def run(args: argparse.Namespace) -> int:
    pairs = _parse_pairs(args.channels)
    if len(args.input_size) != args.dim:
        raise ValueError(
            f"--input-size needs {args.dim} ints (one per axis), got {args.input_size}"
        )
    rows, totals = [], [0, 0, 0, 0, 0, 0]
    for c, t in pairs:
        shape = (1, c, *args.input_size)
        cp = CPConv(
            c,
            t,
            args.kernel_size,
            dim=args.dim,
            rank=_parse_rank(args.rank, c),
            padding="same",
            bias=False,
        )
        tucker = TuckerConv(c, t, args.kernel_size, dim=args.dim, rank=_parse_rank(args.tucker_rank, c),
                            padding="same", bias=False)  # fmt: skip
        kernel = (args.kernel_size,) * args.dim
        dense_params = R.dense_parameter_count(c, t, kernel)
        dense_macs = t * c * R.prod(kernel) * R.prod(args.input_size)
        values = (dense_params, R.parameter_count(cp), R.parameter_count(tucker),
                  dense_macs, cp.macs(shape), tucker.macs(shape))  # fmt: skip
        totals = [a + b for a, b in zip(totals, values)]
        rows.append((f"{c}->{t}", f"R={cp.rank}", f"R={tucker.rank}", *values))
    print("| layer | CP rank | Tucker ranks | dense params | CP params | Tucker params | "
          "dense MACs | CP MACs | Tucker MACs |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, cp_rank, tucker_rank, *values in rows:
        print(
            f"| {name} | {cp_rank} | {tucker_rank} | " + " | ".join(f"{v:,}" for v in values) + " |"
        )
    print("| total | | | " + " | ".join(f"{v:,}" for v in totals) + " |")
    print(f"\nCP params include the weights vectors (R per layer); MACs for one input of spatial size "
          f"{tuple(args.input_size)}; FLOPs = 2 x MACs.")  # fmt: skip
    return 0
