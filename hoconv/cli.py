"""The `hoconv` command line: a thin dispatcher over `hoconv.commands.<name>` modules.

User errors are printed as one line with exit code 2; set ``HOCONV_DEBUG=1`` for the traceback.
Before running a command the CLI applies :func:`hoconv.runtime.tune_allocator` (freed
activations are reused instead of page-faulted afresh); ``--no-tune-allocator`` skips it.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hoconv import __version__, runtime

# One entry per subcommand module under hoconv/commands/.
COMMAND_MODULES: tuple[str, ...] = (
    "layers",
    "report",
    "bench",
    "train",
    "evaluate",
    "transduce",
    "prune",
    "search",
    "demo",
    "predict",
    "export",
    "compress",
)


class CLIError(Exception):
    """An error reported to the user as one line, with a non-zero exit code."""


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="hoconv", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hoconv {__version__}")
    parser.add_argument(
        "--no-tune-allocator", action="store_true",
        help="leave glibc's allocator settings alone (see hoconv.runtime.tune_allocator)",
    )  # fmt: skip
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hoconv.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hoconv` console script."""
    args = build_parser().parse_args(argv)
    if not args.no_tune_allocator:
        runtime.tune_allocator()
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError) as err:
        if os.environ.get("HOCONV_DEBUG"):  # developers: keep the traceback
            raise
        print(f"hoconv {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
