"""CPConv vs dense ``nn.Conv3d`` with and without the CLI's allocator tuning, side by side.

Usage: ``PYTHONPATH=. python benchmarks/allocator.py [--ranks 64 273] [--rounds 3]
[--reps 5] [--threads 2]``.

The ``hoconv`` command line calls :func:`hoconv.app.runtime.tune_allocator` (glibc ``mallopt``)
before every command; a script that only does ``import hoconv`` does not. Each round runs
one fresh subprocess per setting, alternately ("plain import" = glibc's defaults, "tuned" =
after ``tune_allocator()``); inside, the dense conv and the CP layer (default path,
``implementation="auto"``) run interleaved on input (4, 64, 16, 32, 32), forward+backward,
median of ``--reps`` after a warm-up. Reported per setting: the medians over rounds of the
ms and of the speed-up over dense, and the minor page faults per forward+backward of each
(what glibc's defaults cost: freed blocks returned to the kernel are faulted in and zeroed
again; the CP layer's large tensors come from its own pool, :mod:`hoconv._fast.workspace`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SHAPE = (4, 64, 16, 32, 32)


def _child(rank: int, reps: int, threads: int, tuned: bool) -> dict:
    """One setting in this process: ms of dense and CP fwd+bwd, CP page faults per call."""
    import torch

    import hoconv
    from hoconv.app import runtime

    if tuned:
        runtime.tune_allocator()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    grad = torch.randn(SHAPE)
    layer = hoconv.CPConv(64, 64, 3, dim=3, rank=rank, padding=1)
    dense = torch.nn.Conv3d(64, 64, 3, padding=1)
    times: dict[str, list[float]] = {"dense": [], "cp": []}
    faults: dict[str, list[int]] = {"dense": [], "cp": []}

    def step(module) -> None:
        xg = x.clone().requires_grad_(True)
        module(xg).backward(grad)

    for module in (dense, layer):  # warm-up (oneDNN primitives, native build, plan cache)
        step(module)
    for _ in range(reps):
        for name, module in (("dense", dense), ("cp", layer)):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            step(module)
            times[name].append((time.perf_counter() - t0) * 1e3)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    route = layer.route(x.requires_grad_(True)) if hasattr(layer, "route") else None
    return {
        "dense_ms": statistics.median(times["dense"]),
        "cp_ms": statistics.median(times["cp"]),
        "cp_faults": statistics.median(faults["cp"]),
        "dense_faults": statistics.median(faults["dense"]),
        "route": f"{route.path}/{route.schedule}" if route else "(no plan)",
    }


def _run_child(rank: int, reps: int, threads: int, tuned: bool) -> dict:
    args = [sys.executable, __file__, "--child", "tuned" if tuned else "plain"]
    args += ["--ranks", str(rank), "--reps", str(reps), "--threads", str(threads)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 273])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per setting")
    parser.add_argument("--reps", type=int, default=5, help="timed calls per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["plain", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.ranks[0], args.reps, args.threads, args.child == "tuned")))
        return
    print(f"CPU: {_cpu_name()}; {args.threads} threads; load before {os.getloadavg()}")
    print(
        "| rank | setting | route | dense ms | CP ms | speed-up | page faults / call: dense, CP |"
    )
    print("|---|---|---|---|---|---|---|")
    for rank in args.ranks:
        runs: dict[str, list[dict]] = {"plain import": [], "tuned": []}
        for _ in range(args.rounds):
            for name in runs:  # alternate the settings, one fresh process each
                runs[name].append(_run_child(rank, args.reps, args.threads, name == "tuned"))
        for name, vals in runs.items():
            dense = statistics.median(v["dense_ms"] for v in vals)
            cp = statistics.median(v["cp_ms"] for v in vals)
            ratio = statistics.median(v["dense_ms"] / v["cp_ms"] for v in vals)
            faults = [statistics.median(v[f"{k}_faults"] for v in vals) for k in ("dense", "cp")]
            print(f"| {rank} | {name} | {vals[0]['route']} | {dense:.1f} | {cp:.1f} | "
                  f"{ratio:.2f}x | {faults[0]:.0f}, {faults[1]:.0f} |")  # fmt: skip
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
