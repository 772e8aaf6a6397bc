"""Budgets and the greedy solver that picks one candidate per layer.

Objective (what "least error" means here): the sum over layers of the relative Frobenius
reconstruction error of the layer's kernel, each layer weighted 1. Dense keeps error 0.
"""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("params", "macs", "latency")


class BudgetUnreachable(ValueError):
    """Even the cheapest option of every layer is over the target; ``floor`` is that minimum."""

    def __init__(self, floor: float, target: float) -> None:
        super().__init__(
            f"budget cannot be met: the cheapest candidates total {floor:.4g} > target {target:.4g}"
        )
        self.floor, self.target = floor, target


@dataclass(frozen=True)
class Budget:
    """A budget: the compressed model's ``metric`` must be <= ``fraction`` x the original's."""

    metric: str
    fraction: float


def parse_budget(text: str) -> Budget:
    """Parse ``params=0.3``, ``macs=0.25`` or ``latency=0.5``.

    Raises:
        ValueError: not ``METRIC=FRACTION`` with a known metric and 0 < fraction <= 1.
    """
    metric, sep, value = str(text).partition("=")
    metric = metric.strip().lower()
    if not sep or metric not in METRICS:
        raise ValueError(
            f"budget {text!r}: expected METRIC=FRACTION with METRIC one of {', '.join(METRICS)} "
            "(e.g. params=0.3)"
        )
    try:
        fraction = float(value)
    except ValueError:
        raise ValueError(f"budget {text!r}: fraction {value!r} is not a number") from None
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"budget {text!r}: fraction must be in (0, 1], got {fraction}")
    return Budget(metric, fraction)


def solve(
    table: dict[str, list[dict]],
    dense_cost: dict[str, float],
    fixed_cost: float,
    target: float,
) -> dict[str, dict | None]:
    """Pick per layer one option (or dense, ``None``) with total cost <= ``target``.

    Greedy on error-per-cost: starting from all dense, repeatedly take the move (a layer to a
    cheaper option) that adds the least error per unit of cost saved, until the budget is met;
    then spend any slack by moving layers back to more accurate options that still fit.
    Options that cost as much as dense or more are never taken (the layer stays dense).

    Args:
        table: layer name -> options, each a dict with at least ``"cost"`` and ``"error"``.
        dense_cost: layer name -> cost of the dense layer.
        fixed_cost: cost of everything that is not a candidate layer.
        target: the total cost allowed.

    Returns:
        Layer name -> chosen option, or ``None`` for dense.

    Raises:
        BudgetUnreachable: (a ValueError) even the cheapest option of every layer does not
            meet ``target``.
    """
    options = _cheaper_options(table, dense_cost)
    floor = fixed_cost + sum(
        opts[0]["cost"] if opts else dense_cost[n] for n, opts in options.items()
    )
    if floor > target:
        raise BudgetUnreachable(floor, target)
    choice: dict[str, dict | None] = {name: None for name in table}

    def cost(name: str, option: dict | None) -> float:
        return dense_cost[name] if option is None else option["cost"]

    def error(option: dict | None) -> float:
        return 0.0 if option is None else option["error"]

    total = fixed_cost + sum(dense_cost.values())
    while total > target:
        best = None
        for name, opts in options.items():
            here = choice[name]
            for o in opts:
                saved = cost(name, here) - o["cost"]
                if saved <= 0:
                    continue
                ratio = (o["error"] - error(here)) / saved
                if best is None or ratio < best[0]:
                    best = (ratio, name, o)
        _, name, o = best
        total -= cost(name, choice[name]) - o["cost"]
        choice[name] = o
    return _spend_slack(choice, options, dense_cost, total, target)


def _cheaper_options(table, dense_cost) -> dict[str, list[dict]]:
    """Per layer, the options cheaper than dense, cheapest first."""
    return {
        name: sorted((o for o in opts if o["cost"] < dense_cost[name]), key=lambda o: o["cost"])
        for name, opts in table.items()
    }


def cheapest(table: dict[str, list[dict]], dense_cost: dict[str, float]) -> dict[str, dict | None]:
    """Per layer its cheapest option, or ``None`` (dense) where no option is cheaper than dense."""
    return {
        name: opts[0] if opts else None
        for name, opts in _cheaper_options(table, dense_cost).items()
    }


def _spend_slack(choice, options, dense_cost, total, target):
    """Upgrade layers (largest error drop first) while the total stays within ``target``."""
    improved = True
    while improved:
        improved = False
        best = None
        for name, opts in options.items():
            here = choice[name]
            here_cost = dense_cost[name] if here is None else here["cost"]
            here_err = 0.0 if here is None else here["error"]
            for o in [None, *opts]:
                o_cost = dense_cost[name] if o is None else o["cost"]
                gain = here_err - (0.0 if o is None else o["error"])
                if gain > 0 and total + o_cost - here_cost <= target:
                    if best is None or gain > best[0]:
                        best = (gain, name, o, o_cost - here_cost)
        if best is not None:
            _, name, o, delta = best
            choice[name] = o
            total += delta
            improved = True
    return choice
