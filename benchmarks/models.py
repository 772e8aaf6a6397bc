"""Model-zoo benchmark: the paper's parameter / FLOP tables plus measured training throughput.

Prints the tables of ``hoconv report`` and then trains (forward + backward + SGD step)
cp_resnet18_3d, r3d_18 and r2plus1d_18 side by side in one run, on CPU with 2 threads, and
reports clips/s. Default clip: batch 2 of 3 x 8 x 56 x 56 (a documented smaller size than the
paper's 16 x 112 x 112, which takes minutes per step on 2 cores); full-width (64) models,
2 outputs. Run: ``PYTHONPATH=. python benchmarks/models.py [--frames 16 --size 112] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hoconv import rank as hrank
from hoconv.commands.report import compute_all, render, write_outputs
from hoconv.models import create_model

MODELS = ("cp_resnet18_3d", "r3d_18", "r2plus1d_18")


def throughput(name: str, shape: tuple[int, ...], steps: int, warmup: int) -> dict:
    """Clips/s of training steps (forward, MSE loss, backward, SGD step) of model ``name``."""
    torch.manual_seed(0)
    model = create_model(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(*shape)
    target = torch.randn(shape[0], shape[2], 2)  # (N, T, 2) valence/arousal per frame
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    best = min(times)
    mean = sum(times) / len(times)
    return {
        "model": name,
        "params": hrank.parameter_count(model),
        "gflops_fwd": hrank.flops(model, shape) / 1e9,
        "clips_per_s_mean": shape[0] / mean,
        "clips_per_s_best": shape[0] / best,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tables = compute_all()
    markdown = render(tables["table4"], tables["table6"], tables["table7"], tables["figure6"])
    shape = (args.batch, 3, args.frames, args.size, args.size)
    rows = [throughput(name, shape, args.steps, args.warmup) for name in MODELS]
    ref = {r["model"]: r["clips_per_s_mean"] for r in rows}
    lines = [
        "",
        f"## Training throughput (CPU, {args.threads} threads, clips {shape}, "
        f"{args.steps} timed steps after {args.warmup} warm-up)",
        "",
        "| model | params | GFLOPs fwd / batch | clips/s (mean) | clips/s (best) | "
        "speed vs r3d_18 | vs r2plus1d_18 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['model']}` | {r['params'] / 1e6:.2f}M | {r['gflops_fwd']:.2f} | "
            f"{r['clips_per_s_mean']:.3f} | {r['clips_per_s_best']:.3f} | "
            f"{r['clips_per_s_mean'] / ref['r3d_18']:.2f}x | "
            f"{r['clips_per_s_mean'] / ref['r2plus1d_18']:.2f}x |"
        )
    markdown += "\n".join(lines) + "\n"
    print(markdown, end="")
    if args.out is not None:
        tables["throughput"] = {"shape": shape, "threads": args.threads, "rows": rows}
        write_outputs(tables, markdown, args.out)


if __name__ == "__main__":
    main()
