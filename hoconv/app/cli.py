"""hoconv: factorized higher-order convolutions, transduction to video, affect estimation.

Expected failures (bad input, unreadable data, file system errors, disk full, a stopped run)
are printed as one line ``hoconv CMD: error: ...`` with exit code 2; Ctrl-C as one line with
exit code 130 (128 + SIGINT); set ``HOCONV_DEBUG=1`` for the traceback.
Before running a command the CLI applies :func:`hoconv.app.runtime.tune_allocator` (freed
activations are reused instead of page-faulted afresh); ``--no-tune-allocator`` skips it.
``--implementation`` sets the path of every CP layer (:func:`hoconv.set_implementation`).

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace, returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from hoconv import __version__
from hoconv._fast.switch import ENV_IMPLEMENTATION, IMPLEMENTATIONS, set_implementation
from hoconv.app import runtime

# One entry per subcommand module under hoconv/app/commands/.
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
    "serve",
)


# One example per subcommand, shown at the end of its --help.
EXAMPLES: dict[str, str] = {
    "layers": "hoconv layers --input-size 16 112 112",
    "report": "hoconv report --out report/",
    "bench": "hoconv bench --out bench/",
    "train": "hoconv train --data synthetic --mode static --model cp_resnet18_2d --epochs 10 "
    "--width 16 --out runs/img",
    "evaluate": "hoconv evaluate --checkpoint runs/img/best.pt --data synthetic --split test "
    "--out runs/eval",
    "transduce": "hoconv transduce --checkpoint runs/img/best.pt --out runs/video_init.pt "
    "--dims 1 --kernel-size 3",
    "prune": "hoconv prune --checkpoint runs/lasso/last.pt --out runs/pruned.pt",
    "search": "hoconv search --data synthetic --model cp_resnet18_2d --out runs/search",
    "demo": "hoconv demo --out demo_out",
    "predict": "hoconv predict face.jpg clip.mp4 --checkpoint runs/vid/best.pt --out predictions/",
    "export": "hoconv export --checkpoint runs/img/best.pt --format onnx --out model.onnx",
    "compress": "hoconv compress --checkpoint runs/img/best.pt --budget params=0.3 --kind auto "
    "--input-shape 1,3,64,64 --out runs/compressed.pt",
    "serve": "hoconv serve --checkpoint runs/img/best.pt runs/vid/best.pt --port 8000",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions / epilogs as written and appends each flag's non-None default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default:" in text or action.default in (None, argparse.SUPPRESS, False):
            return text
        if action.option_strings and action.nargs != 0:
            return f"{text} (default: %(default)s)"
        return text


def _finish_subparser(name: str, sub: argparse.ArgumentParser, summary: str | None) -> None:
    """Give a subcommand's parser the shared formatter, a description and an example."""
    sub.formatter_class = HelpFormatter
    if not sub.description:
        sub.description = summary
    example = f"Example:\n  {EXAMPLES[name]}"
    sub.epilog = f"{sub.epilog}\n\n{example}" if sub.epilog else example


class CLIError(Exception):
    """An error reported to the user as one line, with a non-zero exit code."""


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="hoconv",
        description=__doc__.splitlines()[0],
        epilog="Start with `hoconv demo --out demo_out`; `hoconv COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"hoconv {__version__}")
    parser.add_argument(
        "--no-tune-allocator", action="store_true",
        help="leave glibc's allocator settings alone (see hoconv.app.runtime.tune_allocator)",
    )  # fmt: skip
    parser.add_argument(
        "--implementation", choices=IMPLEMENTATIONS, default=None,
        help="path of every CP layer without its own (hoconv.set_implementation; default: "
        "$HOCONV_IMPLEMENTATION, else auto)",
    )  # fmt: skip
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hoconv.app.commands.{name}").register(subparsers)
    summaries = {a.dest: a.help for a in subparsers._choices_actions}
    for name, sub in subparsers.choices.items():
        _finish_subparser(name, sub, summaries.get(name))
    return parser


EXIT_ERROR = 2  # an expected failure: bad input, unreadable data, file system, disk full
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, the shell's convention)


def _expected(err: BaseException) -> bool:
    """True for failures reported as one line: bad input, data, files, a stopped run."""
    from hoconv.app.data.report import CorruptDataError

    if isinstance(err, (CLIError, ValueError, TypeError, OSError, CorruptDataError)):
        return True
    trainer = sys.modules.get("hoconv.app.engine.trainer")
    return trainer is not None and isinstance(err, trainer.TrainingError)


def one_line(err: BaseException) -> str:
    """The error as one line: an OSError's reason and path; a DataLoader worker's original
    message (not its traceback)."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Original Traceback" in text and lines:  # re-raised from a DataLoader worker
        return re.sub(r"^[\w.]+: ", "", lines[-1])
    return lines[0] if lines else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hoconv` console script.

    Returns:
        0 on success, 2 for an expected failure (one line on stderr: ``hoconv CMD: error:
        ...``), 130 when interrupted by Ctrl-C (one line too).
    """
    args = build_parser().parse_args(argv)
    if not args.no_tune_allocator:
        runtime.tune_allocator()
    if args.implementation is not None:  # this process, and the processes it starts
        set_implementation(args.implementation)
        os.environ[ENV_IMPLEMENTATION] = args.implementation
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:
        if os.environ.get("HOCONV_DEBUG"):
            raise
        detail = f"; {one_line(err)}" if str(err) else ""
        print(f"hoconv {args.command}: error: interrupted (Ctrl-C){detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if not _expected(err) or os.environ.get("HOCONV_DEBUG"):  # HOCONV_DEBUG: traceback
            raise
        print(f"hoconv {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
