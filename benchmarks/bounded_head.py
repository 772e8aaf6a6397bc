"""Does the tanh-bounded valence / arousal head (``bound_va``) change CCC? Side by side.

Trains the demo's 2-D model (CP-ResNet-18-2D, the demo's width and stills) with and without
``bound_va`` for the same epochs, lr and schedule, seeds interleaved (seed 0 bounded, seed 0
unbounded, seed 1 ...) in one process, and prints the test-split CCC (mean +- std over seeds)
of each; ``--video`` does the same for R3D-18 on the demo's clips.

    PYTHONPATH=. python benchmarks/bounded_head.py --epochs 4 --seeds 0 1 2 --out /tmp/bh
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from hoconv.app.demo import demo_settings
from hoconv.app.demo_jobs import train_cfg, warm_data_cache
from hoconv.app.demo_stats import mean_std, pm
from hoconv.app.engine import evaluate, train


def main() -> None:  # noqa: D103
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--video", action="store_true", help="R3D-18 on clips instead")
    p.add_argument("--out", type=Path, default=Path("bounded_head_out"))
    args = p.parse_args()
    torch.set_num_threads(1)
    s = warm_data_cache(demo_settings("default"), args.out / "data_cache")
    mode, model = ("video", "r3d_18") if args.video else ("static", "cp_resnet18_2d")
    scores: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for seed in args.seeds:
        for bounded in (True, False):
            cfg = train_cfg(s, mode=mode, model=model, epochs=args.epochs, lr=args.lr, seed=seed)
            cfg["model_kwargs"] = {**cfg["model_kwargs"], "bound_va": bounded}
            run = args.out / f"{'bounded' if bounded else 'linear'}_seed{seed}"
            t0 = time.perf_counter()
            train(cfg, run)
            m = evaluate(run / "best.pt", run / "eval", split="test", plots_too=False)
            scores[bounded].append((m["valence"]["ccc"], m["arousal"]["ccc"]))
            print(f"seed {seed} bound_va={bounded}: test CCC V {m['valence']['ccc']:.3f} "
                  f"A {m['arousal']['ccc']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    print(f"\n{model} on {mode} data, {args.epochs} epochs, lr {args.lr:g}, seeds {args.seeds}; "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    for bounded, pairs in scores.items():
        v, a = [p[0] for p in pairs], [p[1] for p in pairs]
        print(f"bound_va={bounded!s:5}: V CCC {pm(mean_std(v))}  A CCC {pm(mean_std(a))}")


if __name__ == "__main__":
    main()
