"""Bookkeeping of the demo's fair comparison: budgets, learning-rate choice, mean +- std.

Pure functions on plain dicts (the rows of ``results.json``), so that they are tested on
known numbers without training anything.

A *run* is one trained model: ``{"network", "family", "seed", "lr", "budget": {...},
"metrics": {"valence": {...}, "arousal": {...}}, "wall_s", "cpu_s"}``. A *row* of the report
aggregates the runs of one network over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

METRICS = ("rmse", "sagr", "pcc", "ccc")
DIMS = ("valence", "arousal")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for one value).

    Raises:
        ValueError: no values.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_std: no values")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def mean_ccc(metrics: dict) -> float:
    """The mean of valence and arousal CCC (the demo's single score)."""
    return (metrics["valence"]["ccc"] + metrics["arousal"]["ccc"]) / 2


def choose_lr(trials: Sequence[dict]) -> dict:
    """The trial with the highest validation score (ties: the smaller lr).

    Args:
        trials: ``{"lr", "val_score"}`` each (``val_score``: best mean validation CCC; the
            test split is never looked at).
    """
    if not trials:
        raise ValueError("choose_lr: no trials")
    finite = [t for t in trials if math.isfinite(t["val_score"])]
    if not finite:
        raise ValueError("choose_lr: every trial diverged (non-finite validation score)")
    return max(finite, key=lambda t: (t["val_score"], -t["lr"]))


def check_equal_budget(runs: Sequence[dict], rule: str = "video") -> dict:
    """Check that the runs of a comparison had the equal budget they state; return it.

    Every video model must have the same batch and clip length and, by ``rule``:
    ``video``: the same number of optimizer steps on clips; ``steps``: the same number of
    optimizer steps in total (stills + clips), up to one clip epoch of rounding. The runs of
    one network must share one lr and one budget and have distinct seeds.

    Raises:
        ValueError: naming the first run that breaks the rule.
    """
    video = [r for r in runs if r["budget"]["video_steps"] > 0]
    if not video:
        raise ValueError("check_equal_budget: no video run")
    ref = video[0]
    keys = ("clip_batch_size", "clip_length") + (("video_steps",) if rule == "video" else ())
    for r in video:
        for key in keys:
            if r["budget"][key] != ref["budget"][key]:
                raise ValueError(
                    f"unequal budget: {r['network']} seed {r['seed']} has {key}="
                    f"{r['budget'][key]}, {ref['network']} has {ref['budget'][key]}"
                )
    totals = [r["budget"]["static_steps"] + r["budget"]["video_steps"] for r in video]
    if rule == "steps":
        per_epoch = max(r["budget"]["video_steps"] / _video_epochs(r) for r in video)
        if max(totals) - min(totals) >= per_epoch:
            worst = video[totals.index(min(totals))]
            raise ValueError(
                f"unequal budget: {worst['network']} seed {worst['seed']} has "
                f"{min(totals)} optimizer steps in total, another run {max(totals)}"
            )
    elif rule != "video":
        raise ValueError(f"check_equal_budget: rule must be 'video' or 'steps', got {rule!r}")
    for network, group in group_runs(runs).items():
        seeds = [r["seed"] for r in group]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"{network}: a seed is repeated ({seeds})")
        if len({repr(r["lr"]) for r in group}) != 1:
            raise ValueError(f"{network}: runs of one network must share the chosen lr")
        if any(r["budget"] != group[0]["budget"] for r in group):
            raise ValueError(f"{network}: the seeds of one network must share one budget")
    return {
        "rule": rule,
        **{k: ref["budget"][k] for k in keys},
        "total_steps": (min(totals), max(totals)),
    }


def _video_epochs(run: dict) -> int:
    epochs = run["budget"]["epochs"]
    return sum(v for k, v in epochs.items() if k != "static")


def group_runs(runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Runs by network, in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["network"], []).append(r)
    return groups


def aggregate(runs: Sequence[dict]) -> list[dict]:
    """One row per network: mean and std over seeds of every metric, wall and CPU time."""
    rows = []
    for network, group in group_runs(runs).items():
        stats = {
            dim: {m: mean_std([r["metrics"][dim][m] for r in group]) for m in METRICS}
            for dim in DIMS
        }
        first = group[0]
        rows.append(
            {
                "network": network,
                "family": first["family"],
                "case": first.get("case", ""),
                "seeds": [r["seed"] for r in group],
                "lr": first["lr"],
                "budget": first["budget"],
                "params": first.get("params"),
                "trained_params": first.get("trained_params"),
                "stats": stats,
                "ccc_values": {dim: [r["metrics"][dim]["ccc"] for r in group] for dim in DIMS},
                "mean_ccc": mean_std([mean_ccc(r["metrics"]) for r in group]),
                "wall_s": mean_std([r.get("wall_s", 0.0) for r in group]),
                "cpu_s": mean_std([r.get("cpu_s", 0.0) for r in group]),
            }
        )
    return rows


def headline(rows: Sequence[dict]) -> str:
    """One sentence on the ranking by mean CCC that the numbers support.

    A network is called best only when its mean exceeds every other's by more than the
    larger of the two standard deviations; otherwise the networks within that margin of
    the top are named as not separated.
    """
    if not rows:
        raise ValueError("headline: no rows")
    ranked = sorted(rows, key=lambda r: r["mean_ccc"][0], reverse=True)
    top = ranked[0]
    tied = [
        r
        for r in ranked[1:]
        if top["mean_ccc"][0] - r["mean_ccc"][0] <= max(top["mean_ccc"][1], r["mean_ccc"][1])
    ]
    n = len(top["seeds"])
    if not tied:
        second = ranked[1] if len(ranked) > 1 else None
        margin = f", {top['mean_ccc'][0] - second['mean_ccc'][0]:.3f} ahead of {second['network']}"
        return (
            f"Highest mean CCC: **{top['network']}** ({pm(top['mean_ccc'])} over {n} seeds"
            f"{margin if second else ''}, more than either's std)."
        )
    names = ", ".join(r["network"] for r in tied)
    return (
        f"Highest mean CCC: {top['network']} ({pm(top['mean_ccc'])}, {n} seeds), but "
        f"{names} {'is' if len(tied) == 1 else 'are'} within one std of it: these runs do not "
        "rank them."
    )


def pm(pair: tuple[float, float], digits: int = 3) -> str:
    """``mean +- std`` with ``digits`` decimals."""
    return f"{pair[0]:.{digits}f} +- {pair[1]:.{digits}f}"
