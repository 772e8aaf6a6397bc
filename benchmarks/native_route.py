"""Dense conv vs the eager CP route vs the native builds, interleaved in one process.

Usage: ``PYTHONPATH=. python benchmarks/native_route.py [--reps 3] [--rounds 2]
[--ranks 64 273] [--threads 1 2]``.

For the input (4, 64, 16, 32, 32), 3x3x3 kernels, 64 -> 64 channels: the dense
``nn.Conv3d``, the CP layer (``implementation="fast"``) on the eager route (the native
kernels off) and on the native route with each build variant this CPU runs (``avx512``,
``avx2`` = ``-march=x86-64-v3``, ``generic``), forced with ``HOCONV_NATIVE=1`` and
``HOCONV_NATIVE_ISA``. Per (threads, rank): medians over rounds of per-round medians (ms),
fwd (no grad) and fwd+bwd, the speed-up over dense and the ratio to eager. The load average
is printed before and after (the numbers are only comparable within one run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import hoconv
from hoconv._fast import native_build, plan


def _time(fn, reps: int) -> float:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def _measure(module, x, reps: int) -> tuple[float, float]:
    # a real output gradient (``.sum().backward()`` gives a stride-0 one)
    grad = torch.randn_like(x)

    def fwd():
        with torch.no_grad():
            module(x)

    def fwdbwd():
        xg = x.clone().requires_grad_(True)
        module(xg).backward(grad)

    return _time(fwd, reps), _time(fwdbwd, reps)


def _route(name: str) -> None:
    """Set the environment and the route rule so that the next calls take route ``name``."""
    os.environ["HOCONV_NATIVE"] = "1" if name.startswith("native-") else ""
    os.environ["HOCONV_NATIVE_ISA"] = name.removeprefix("native-") if "-" in name else ""


def _medians(vals: list[tuple[float, float]]) -> list[float]:
    return [statistics.median(v[i] for v in vals) for i in (0, 1)]


def _threads_table(threads: int, x: torch.Tensor, args) -> None:
    """One table: every route at every rank, rounds interleaved (dense, then each route)."""
    torch.set_num_threads(threads)
    dense = torch.nn.Conv3d(64, 64, 3, padding=1)
    layers = {r: hoconv.CPConv(64, 64, 3, dim=3, rank=r, padding=1, implementation="fast")
              for r in args.ranks}  # fmt: skip
    names = ["eager", *(f"native-{v}" for v in native_build.cpu_variants())]
    rows: dict[tuple[int, str], list[tuple[float, float]]] = {}
    dense_rows = []
    with plan.tuned(native_faster_on=()):  # eager unless HOCONV_NATIVE=1 forces native
        for _ in range(args.rounds):
            dense_rows.append(_measure(dense, x, args.reps))
            for rank, layer in layers.items():
                for name in names:
                    _route(name)
                    rows.setdefault((rank, name), []).append(_measure(layer, x, args.reps))
    os.environ.pop("HOCONV_NATIVE", None)
    os.environ.pop("HOCONV_NATIVE_ISA", None)
    dense_ms = _medians(dense_rows)
    print(f"threads {threads}: dense nn.Conv3d fwd {dense_ms[0]:.1f} ms, "
          f"fwd+bwd {dense_ms[1]:.1f} ms; load {os.getloadavg()}")  # fmt: skip
    for (rank, name), vals in rows.items():
        ms, eager = _medians(vals), _medians(rows[(rank, "eager")])
        cells = [
            f"{m:7.1f} ms ({d / m:4.2f}x dense, {m / e:4.2f} of eager)"
            for m, d, e in zip(ms, dense_ms, eager)
        ]
        print(f"  rank {rank:3d} {name:15s} fwd {cells[0]}  fwd+bwd {cells[1]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 273])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(4, 64, 16, 32, 32)
    print(f"variants {native_build.cpu_variants()}; native route by default on "
          f"{plan.TUNING.native_faster_on}; load {os.getloadavg()}")  # fmt: skip
    for threads in args.threads:
        _threads_table(threads, x, args)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
