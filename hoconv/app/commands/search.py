"""`hoconv search`: randomised grid search over Adam's lr, betas and weight decay.

Draws ``--trials`` distinct points of the grid in ``hoconv/app/configs/search.yaml`` (the
paper's ranges; ``--grid FILE`` replaces it), trains each (every train flag applies) in
OUT/trial_K, and ranks them by validation score (mean V/A CCC). Writes OUT/search.json and
OUT/search.csv; the best trial's checkpoint is OUT/trial_K/best.pt.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import random
from pathlib import Path

from hoconv.app.commands.train import add_train_arguments, resolve_config
from hoconv.app.engine import config as config_io


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 or -1 would silently run nothing)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `search` subcommand."""
    p = subparsers.add_parser("search", help="hyper-parameter search", description=__doc__)
    add_train_arguments(p)
    p.add_argument("--trials", type=_positive_int, help="number of grid points to try (default 4)")
    p.add_argument("--grid", help="YAML file with a `grid:` of lr / beta1 / beta2 / weight_decay")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the draw of grid points")
    p.add_argument("--out", required=True, help="folder of the trials")
    p.set_defaults(func=run)


def draw_trials(grid: dict, trials: int, seed: int) -> list[dict]:
    """``trials`` distinct points of the grid, drawn uniformly with ``seed``."""
    keys = ("lr", "beta1", "beta2", "weight_decay")
    missing = [k for k in keys if not grid.get(k)]
    if missing:
        raise ValueError(f"--grid: missing or empty {', '.join(missing)}")
    points = list(itertools.product(*(grid[k] for k in keys)))
    if trials < 1:
        raise ValueError(f"--trials: expected a positive integer, got {trials}")
    chosen = random.Random(seed).sample(points, min(trials, len(points)))
    return [dict(zip(keys, point)) for point in chosen]


def run(args: argparse.Namespace) -> int:
    """Run the trials; print and save the ranking; exit code 0."""
    from hoconv.app.cli import CLIError
    from hoconv.app.engine import TrainingError, train

    search_cfg = config_io.packaged_config("search")
    if args.grid:
        search_cfg = config_io.merge(search_cfg, config_io.read_yaml(args.grid), where=args.grid)
    trials = draw_trials(search_cfg["grid"], args.trials or search_cfg["trials"], args.search_seed)
    base = resolve_config(args)
    out = Path(args.out)
    results = []
    for k, point in enumerate(trials):
        cfg = {
            **base,
            "lr": point["lr"],
            "betas": [point["beta1"], point["beta2"]],
            "weight_decay": point["weight_decay"],
        }
        try:
            res = train(cfg, out / f"trial_{k}")
            score, status = res["best"]["score"] if res["best"] else float("-inf"), "ok"
        except TrainingError as err:
            score, status = float("-inf"), f"stopped: {err}"
        results.append(
            {
                "trial": k,
                **point,
                "score": score,
                "status": status,
                "run_dir": str(out / f"trial_{k}"),
            }
        )
        print(
            f"trial {k}: lr {point['lr']:g} betas ({point['beta1']}, {point['beta2']}) "
            f"wd {point['weight_decay']:g} -> score {score:.4f} {status if status != 'ok' else ''}"
        )
    ranked = sorted(results, key=lambda r: r["score"], reverse=True)
    out.mkdir(parents=True, exist_ok=True)
    safe = [{**r, "score": r["score"] if r["score"] != float("-inf") else None} for r in ranked]
    (out / "search.json").write_text(json.dumps({"best": safe[0], "trials": safe}, indent=2))
    with open(out / "search.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(ranked[0]))
        writer.writeheader()
        writer.writerows(ranked)
    if ranked[0]["score"] == float("-inf"):
        raise CLIError("every trial failed; see search.json")
    print(
        f"best: trial {ranked[0]['trial']} (score {ranked[0]['score']:.4f}) in {ranked[0]['run_dir']}"
    )
    return 0
