"""Native (C) kernels vs the eager fast path vs the dense conv, interleaved in one process.

Usage: ``PYTHONPATH=. python benchmarks/native_route.py [--reps 5] [--threads 1]``.
Prints per-repetition medians (ms) of fwd and fwd+bwd for the issue's shape (4, 64, 16, 32,
32) at rank 64, on the variant this process builds (``HOCONV_NATIVE_ISA`` forces one), with
the native route forced (``HOCONV_NATIVE=1``) and turned off (the eager kernels) by
switching the route's rule between calls, and the route ``auto`` takes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import hoconv
from hoconv._fast import native, plan


def _time(fn, reps: int) -> float:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rank", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(4, 64, 16, 32, 32)
    layer = hoconv.CPConv(64, 64, 3, dim=3, rank=args.rank, padding=1, implementation="fast")
    dense = torch.nn.Conv3d(64, 64, 3, padding=1)

    def fwd(m):
        with torch.no_grad():
            m(x)

    def fwdbwd(m):
        xg = x.requires_grad_(False).clone().requires_grad_(True)
        m(xg).sum().backward()

    print(f"variant {native.variant()} (runnable {native.cpu_variants()}), load {os.getloadavg()}")
    rows: dict[str, list[tuple[float, float]]] = {"native": [], "eager": [], "dense": []}
    for _ in range(args.rounds):
        for name in rows:
            os.environ["HOCONV_NATIVE"] = "1" if name == "native" else ""
            m = dense if name == "dense" else layer
            rule = {"native_faster_on": ()} if name == "eager" else {}
            with plan.tuned(**rule):
                rows[name].append(
                    (_time(lambda m=m: fwd(m), args.reps), _time(lambda m=m: fwdbwd(m), args.reps))
                )
    os.environ.pop("HOCONV_NATIVE", None)
    for name, vals in rows.items():
        f = statistics.median(v[0] for v in vals)
        b = statistics.median(v[1] for v in vals)
        print(
            f"{name:7s} fwd {f:7.1f} ms  fwd+bwd {b:7.1f} ms   rounds {[(round(a), round(c)) for a, c in vals]}"
        )
    takes = plan.native_refusal(plan.machine()) is None
    print(f"auto route now takes native: {takes}; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
