"""Rank selection end to end on the embedded data: train (lasso or not), evaluate, prune, evaluate.

Each arm runs the README's commands through the CLI (``hoconv train``, ``hoconv prune``,
``hoconv evaluate``) at one stated budget; the lasso arms are evaluated before and after
``prune`` (the same weights), every arm on the validation split with ``last.pt`` (no
checkpoint selection on the split that is reported)::

    python benchmarks/rank_selection.py --arm auto --seed 0 --out /tmp/rank-sel
    python benchmarks/rank_selection.py --arm none --seed 0 --out /tmp/rank-sel
    python benchmarks/rank_selection.py --summarize --out /tmp/rank-sel

Arms: ``none`` (no lasso), ``auto`` (``--lasso auto --lasso-target 0.3``), ``auto_delay``
(the same after 2 penalty-free epochs), ``none_small`` (no lasso at ``rank=0.6``: the size
``auto`` prunes to, a capacity control), ``auto_big`` (``--lasso auto`` from an over-complete
``rank=1.5``, pruned to about ``none``'s size), ``fixed`` (``--lasso GAMMA --proximal``), and ``tucker_none`` / ``tucker_auto`` (the same on
``tucker_resnet18_2d``: group lasso on the core's slices). Results: OUT/<arm>-s<seed>.json; ``--summarize`` prints the
mean +- std table. Measured numbers are in the README's rank-selection section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from hoconv.app.cli import main

# the README example's budget (one place, so every arm gets the same)
TRAIN = [
    "--data", "synthetic", "--model", "cp_resnet18_2d", "--width", "16", "--image-size", "32",
    "--data-arg", "num_subjects=24", "--data-arg", "fractions=[0.5,0.25,0.25]",
    "--batch-size", "16", "--lr", "3e-3", "--scheduler", "cosine",
    "--keep", "last", "--workers", "0", "--no-progress",
]  # fmt: skip
TUCKER = ["--model", "tucker_resnet18_2d"]  # a later --model wins
ARMS = {
    "none": [],
    "auto": ["--lasso", "auto", "--lasso-target", "0.3"],
    "auto_delay": ["--lasso", "auto", "--lasso-target", "0.3", "--lasso-delay", "2"],
    "fixed": ["--lasso", "0.03", "--proximal"],
    # capacity control: no lasso, started at the size `auto` prunes to (41 % fewer params)
    "none_small": ["--model-arg", "rank=0.6"],
    # rank selection as it is meant: start over-complete (1.5x the dense parameters per conv),
    # let the lasso remove what is not needed, compare the pruned model with `none`
    "auto_big": ["--model-arg", "rank=1.5", "--lasso", "auto", "--lasso-target", "0.34"],
    "tucker_none": TUCKER,
    "tucker_auto": [*TUCKER, "--lasso", "auto", "--lasso-target", "0.3"],
}


def _evaluate(checkpoint: Path, out: Path) -> dict:
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--split", "val", "--no-plots",
                 "--workers", "0", "--out", str(out)])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"evaluate {checkpoint} failed ({code})")
    metrics = json.loads((out / "metrics.json").read_text())
    v, a = metrics["valence"]["ccc"], metrics["arousal"]["ccc"]
    return {"ccc_v": v, "ccc_a": a, "ccc": (v + a) / 2}


def _params(checkpoint: Path) -> int:
    from hoconv.app.engine.checkpoint import load_model

    return sum(p.numel() for p in load_model(checkpoint)[0].parameters())


def run_arm(arm: str, seed: int, out: Path, epochs: int = 6) -> dict:
    """Train one arm for ``epochs`` (every arm of a folder the same), evaluate it (and its pruned
    copy); returns the result row."""
    run = out / f"{arm}-s{seed}"
    t0 = time.perf_counter()
    argv = ["train", *TRAIN, "--epochs", str(epochs), *ARMS[arm], "--seed", str(seed)]
    if main([*argv, "--out", str(run)]) != 0:
        raise RuntimeError(f"train {arm} seed {seed} failed")
    row = {"arm": arm, "seed": seed, "epochs": epochs,
           "train_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    row.update(_evaluate(run / "last.pt", run / "eval"))
    row["params"] = _params(run / "last.pt")
    if "--lasso" in ARMS[arm]:  # every lasso arm is pruned and re-scored
        from hoconv.app.engine.checkpoint import prune_checkpoint

        report = prune_checkpoint(run / "last.pt", run / "pruned.pt")
        row.update(
            pruned_share=report.removed_share,
            kept=report.kept,
            total=report.total,
            params_before=report.params_before,
            params_after=report.params_after,
        )
        pruned = _evaluate(run / "pruned.pt", run / "eval_pruned")
        row.update({f"pruned_{k}": v for k, v in pruned.items()})
    (out / f"{arm}-s{seed}.json").write_text(json.dumps(row, indent=1))
    return row


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "-"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def summarize(out: Path) -> str:
    """Markdown table: per arm, mean +- std over seeds."""
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-s*.json"))]
    lines = [
        "| arm | seeds | val CCC (V+A)/2 | after prune | max CCC change | components removed "
        "| params |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        got = [r for r in rows if r["arm"] == arm]
        if not got:
            continue
        pruned = [r["pruned_ccc"] for r in got if "pruned_ccc" in r]
        share = [100 * r["pruned_share"] for r in got if "pruned_share" in r]
        params = (
            f"{got[0]['params_before']:,} -> {statistics.mean(r['params_after'] for r in got):,.0f}"
            if "params_after" in got[0]
            else f"{got[0]['params']:,}"
            if "params" in got[0]
            else "-"
        )
        change = max(
            (abs(r["pruned_ccc"] - r["ccc"]) for r in got if "pruned_ccc" in r), default=None
        )
        lines.append(
            f"| {arm} | {','.join(str(r['seed']) for r in got)} | "
            f"{_mean_std([r['ccc'] for r in got])} | {_mean_std(pruned) if pruned else '-'} | "
            f"{'-' if change is None else f'{change:.1e}'} | "
            f"{_mean_std(share) + ' %' if share else '-'} | {params} |"
        )
    lines += _paired(rows)
    return "\n".join(lines)


def _paired(rows: list[dict]) -> list[str]:
    """Per seed, each lasso arm's pruned CCC minus its no-lasso twin's CCC (same seed)."""
    out = []
    for arm, twin in (
        ("auto", "none"),
        ("auto_delay", "none"),
        ("none_small", "none"),
        ("auto_big", "none"),
        ("fixed", "none"),
        ("tucker_auto", "tucker_none"),
    ):
        base = {r["seed"]: r["ccc"] for r in rows if r["arm"] == twin}
        diffs = [r.get("pruned_ccc", r["ccc"]) - base[r["seed"]] for r in rows
                 if r["arm"] == arm and r["seed"] in base]  # fmt: skip
        if diffs:
            shown = " / ".join(f"{d:+.3f}" for d in diffs)
            out.append(f"\npaired by seed, {arm} (after prune if pruned) - {twin}: {shown} "
                       f"(mean {_mean_std(diffs)})")  # fmt: skip
    return out


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", choices=tuple(ARMS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6, help="training budget of the arm "
                        "(the README example's 6; use one value per --out folder)")  # fmt: skip
    parser.add_argument("--out", required=True)
    parser.add_argument("--summarize", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.seed, out, args.epochs)))
    if args.summarize:
        print(summarize(out))


if __name__ == "__main__":
    cli()
