"""``hoconv bench``: time dense vs factorized convolutions side by side (see docs/performance.md)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = subparsers.add_parser("bench", help="benchmark dense vs CP/Tucker convolutions")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``hoconv bench`` and ``benchmarks/conv.py``."""
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    p.add_argument(
        "--quick", action="store_true", help="tiny shapes, no memory runs (seconds; CI smoke)"
    )
    p.add_argument("--config", choices=["3d", "2d", "both"], default="both")
    p.add_argument("--ranks", type=int, nargs="+", help="CP ranks of the rank sweep")
    p.add_argument("--channels", type=int, nargs="*", help="C = T values of the channel sweep")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per candidate (>= 1)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when present)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument(
        "--layout", choices=["cf", "cl", "both"], default="both",
        help="input memory layout: channels-first, channels-last (every candidate gets it), both",
    )  # fmt: skip


DEFAULT_RANKS = {"3d": [16, 64, 128, 273], "2d": [32, 64], "3d-quick": [4, 8], "2d-quick": [4]}
DEFAULT_CHANNELS = {"3d": [16, 32, 128], "2d": [], "3d-quick": [4], "2d-quick": []}


def harness() -> ModuleType:
    """The benchmark harness, ``benchmarks/harness.py`` of the source checkout."""
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "harness.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"hoconv bench runs benchmarks/harness.py of a source checkout; not found at {path}"
        )
    module = sys.modules.get("hoconv_bench_harness")
    if module is None:
        spec = importlib.util.spec_from_file_location("hoconv_bench_harness", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write results.md, results.json and speed.png."""
    bench = harness()
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
        raise ValueError(
            f"--device must be cpu, cuda (when available) or auto, got {args.device!r}"
        )
    torch.set_num_threads(args.threads)
    configs = ["3d", "2d"] if args.config == "both" else [args.config]
    if args.quick:
        configs = [f"{c}-quick" for c in configs]
    ranks = {c: args.ranks or DEFAULT_RANKS[c] for c in configs}
    channels = {c: DEFAULT_CHANNELS[c] if args.channels is None else args.channels for c in configs}
    memory = not (args.no_memory or args.quick)  # a subprocess per candidate: not for smoke runs
    layouts = ["cf", "cl"] if args.layout == "both" else [args.layout]
    results = bench.run(configs, ranks, channels, args.repeats, device, memory, layouts=layouts)
    bench.write(results, args.out)
    print(
        f"wrote {args.out / 'results.md'}, results.json, speed.png ({device}, {args.threads} threads)"
    )
    return 0
