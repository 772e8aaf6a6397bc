"""Model-zoo benchmark: the paper's parameter / FLOP tables plus measured training throughput.

Prints the tables of ``hoconv report`` and then trains (forward + backward + SGD step)
cp_resnet18_3d, r3d_18 and r2plus1d_18 side by side in one run, on CPU with 2 threads, and
reports clips/s. Default clip: batch 2 of 3 x 8 x 56 x 56 (a documented smaller size than the
paper's 16 x 112 x 112, which takes minutes per step on 2 cores); full-width (64) models,
2 outputs. Run: ``PYTHONPATH=. python benchmarks/models.py [--frames 16 --size 112] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from hoconv import rank as hrank
from hoconv.app import runtime
from hoconv.app.commands.report import compute_all, render, write_outputs
from hoconv.models import create_model

MODELS = ("cp_resnet18_3d", "r3d_18", "r2plus1d_18")


def make_step(name: str, shape: tuple[int, ...], layout: str):
    """One training step (forward, MSE loss, backward, SGD step) of model ``name``."""
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(*shape)
    if layout == "cl":  # channels-last model and input (torch.channels_last_3d)
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    target = torch.randn(shape[0], shape[2], 2)  # (N, T, 2) valence/arousal per frame

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), target).backward()
        opt.step()

    return model, step


def throughput(
    names: tuple[str, ...], layouts: list[str], shape: tuple[int, ...], steps: int, warmup: int
) -> list[dict]:
    """Clips/s of every (model, layout), their training steps interleaved round-robin.

    Each round gives every run one untimed step, then one timed step: the untimed one absorbs
    the switch from the previous model (caches, allocator), as in a real run of one model.
    """
    runs = {(n, lay): make_step(n, shape, lay) for n in names for lay in layouts}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for i in range(warmup + steps):
        for key, (_, step) in runs.items():
            step()
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[key].append(time.perf_counter() - start)
    rows = []
    for (name, layout), (model, _) in runs.items():
        median = statistics.median(times[(name, layout)])
        rows.append({
            "model": name,
            "layout": layout,
            "params": hrank.parameter_count(model),
            "gflops_fwd": hrank.flops(model, shape) / 1e9,
            "s_per_step_median": median,
            "clips_per_s": shape[0] / median,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--layout", choices=["cf", "cl", "both"], default="both")
    parser.add_argument("--no-tune-allocator", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_tune_allocator:  # as the hoconv CLI does
        runtime.tune_allocator()

    tables = compute_all()
    markdown = render(tables["table4"], tables["table6"], tables["table7"], tables["figure6"])
    shape = (args.batch, 3, args.frames, args.size, args.size)
    layouts = ["cf", "cl"] if args.layout == "both" else [args.layout]
    rows = throughput(MODELS, layouts, shape, args.steps, args.warmup)
    ref = {(r["model"], r["layout"]): r["clips_per_s"] for r in rows}
    lines = [
        "",
        f"## Training throughput (CPU, {args.threads} threads, clips {shape}, median of "
        f"{args.steps} interleaved rounds (each: an untimed + a timed step per model) after "
        f"{args.warmup} warm-up)",
        "",
        "| model | layout | params | GFLOPs fwd / batch | s/step | clips/s | "
        "speed vs r3d_18 | vs r2plus1d_18 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lay = r["layout"]
        lines.append(
            f"| `{r['model']}` | {lay} | {r['params'] / 1e6:.2f}M | {r['gflops_fwd']:.2f} | "
            f"{r['s_per_step_median']:.3f} | {r['clips_per_s']:.2f} | "
            f"{r['clips_per_s'] / ref[('r3d_18', lay)]:.2f}x | "
            f"{r['clips_per_s'] / ref[('r2plus1d_18', lay)]:.2f}x |"
        )
    markdown += "\n".join(lines) + "\n"
    print(markdown, end="")
    if args.out is not None:
        tables["throughput"] = {"shape": shape, "threads": args.threads, "rows": rows}
        write_outputs(tables, markdown, args.out)


if __name__ == "__main__":
    main()
