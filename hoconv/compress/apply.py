"""Search candidates, solve, rebuild the model; for a latency budget, measure and iterate."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from hoconv.compress import candidates as C
from hoconv.compress import width as W
from hoconv.compress.latency import LatencyTable
from hoconv.compress.measure import (
    interleaved_ms,
    model_macs,
    param_count,
    whole_and_rest_ms,
)
from hoconv.compress.solver import Budget, BudgetUnreachable, cheapest, parse_budget, solve
from hoconv.compress.verdict import BudgetNotMet, BudgetWarning, CompressReport, check_met
from hoconv.factorization import _set_submodule

__all__ = ["BudgetNotMet", "BudgetWarning", "CompressReport", "apply_choices", "compress_model"]

KINDS = {"cp": ("cp",), "tucker": ("tucker",), "auto": ("cp", "tucker")}
# A latency budget is solved for 5 % under it: the final timing, a separate measurement, moves
# by a few percent from run to run (0.498x in the last round, 0.502x in the final timing).
LATENCY_AIM = 0.95
COST = {"params": "params", "macs": "macs", "latency": "ms"}  # budget metric -> cost field


def apply_choices(model: nn.Module, factorized: dict[str, dict]) -> None:
    """Replace each named dense conv by an (uninitialized) CP / Tucker layer, and each named
    inverted-residual block of kind ``"width"`` by one of hidden width ``rank``, in place.

    Used by :func:`hoconv.app.engine.checkpoint.build_model` for the spec's ``"factorized"`` entry.
    """
    for name, choice in factorized.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"factorized layer {name!r} is not in the model") from None
        if choice["kind"] == "width":
            new = W.narrowed_empty(module, choice["rank"])
        else:
            new = C.empty_layer(module, choice["kind"], choice["rank"])
        _set_submodule(model, name, new)


def _units(model: nn.Module, sample: torch.Tensor, pointwise: bool, block_width: bool) -> list:
    """What the solver picks for, in model order: factorizable convs (:class:`C.LayerInfo`) and,
    with ``block_width``, width blocks (:class:`W.BlockInfo`) instead of the convs inside them."""
    infos = C.record_shapes(model, sample, pointwise)
    if not block_width:
        return infos
    blocks = W.record_blocks(model, sample)
    inside = tuple(f"{b.name}.block." for b in blocks)  # expand / project 1x1 (not shortcuts)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    units = [i for i in infos if not i.name.startswith(inside)] + blocks
    return sorted(units, key=lambda u: order[u.name])


def _dense_ms(info, latency) -> float:
    """Measured (cached) forward ms of a dense conv or block."""
    if isinstance(info, W.BlockInfo):
        return W.dense_ms(info, latency)
    return C.dense_ms(info, latency)


def _chosen_ms(info, picked: dict, layer: nn.Module, latency) -> float:
    """Measured (cached) forward ms of the chosen layer or block."""
    key = (W.block_key(info, picked["rank"]) if isinstance(info, W.BlockInfo)
           else C.layer_key(info, picked["kind"], picked["rank"]))  # fmt: skip
    return latency.forward_ms(key, layer, info.input_shape)


def _candidates(info, kinds, fractions, latency, errors, useful) -> list[C.Candidate]:
    """A conv's CP / Tucker candidates, or a block's width candidates (their own grid)."""
    if isinstance(info, W.BlockInfo):
        return W.block_candidates(info, W.FRACTIONS, latency, useful)
    return C.layer_candidates(info, kinds, fractions, latency, errors, useful)


def _cost_tables(infos, cands, metric: str, latency):
    """Solver input: per-layer options with their ``cost`` in ``metric``, and the dense costs."""
    attr = COST[metric]
    table, dense = {}, {}
    for info in infos:
        table[info.name] = [dict(vars(c), cost=getattr(c, attr), cand=c) for c in cands[info.name]]
        if metric == "latency":
            dense[info.name] = _dense_ms(info, latency)
        else:
            dense[info.name] = info.params if metric == "params" else info.macs
    return table, dense


def _solve_or_cheapest(table, dense, total, metric):
    """``solve``; when even the cheapest candidates are over the target, the cheapest choice
    (latency: measured and reported as not met) or one clear error (params / MACs)."""
    try:
        return solve(table, dense, total["fixed"], total["target"]), False
    except BudgetUnreachable as err:
        if metric == "latency":
            return cheapest(table, dense), True
        whole = total["fixed"] + sum(dense.values())
        raise ValueError(
            f"budget {metric}={total['target'] / whole:.4g} cannot be met: the smallest "
            f"candidates of every factorizable conv give {err.floor / whole:.4f}x of the "
            f"original {metric} (the reachable minimum with these layers); raise the budget "
            "(or, if 1x1 convs hold much of the model, factorize them too: --pointwise)"
        ) from None


def _search(infos, kinds, metric, latency, errors, target_of, say):
    """Coarse grid, solve, refine around each pick, solve again.

    Returns:
        ``(choice, table, dense, unreachable)``; ``unreachable``: the choice is the cheapest
        one and still over the (latency) target.
    """
    search_latency = latency if metric == "latency" else None
    _, dense = _cost_tables(infos, {i.name: [] for i in infos}, metric, latency)
    attr = COST[metric]
    useful = {i.name: (lambda c, d=dense[i.name]: getattr(c, attr) < d) for i in infos}
    cands = {}
    for n, i in enumerate(infos, 1):
        cands[i.name] = _candidates(i, kinds, C.COARSE, search_latency, errors, useful[i.name])
        say(f"candidates {n}/{len(infos)} {i.name}: {len(cands[i.name])}")
    table, dense = _cost_tables(infos, cands, metric, latency)
    total = target_of(dense)
    try:
        choice = solve(table, dense, total["fixed"], total["target"])
    except BudgetUnreachable:  # refine below the cheapest picks before giving up
        choice = cheapest(table, dense)
    say("refining around the first solve's picks")
    for info in infos:
        if isinstance(info, W.BlockInfo):  # the width grid is fine already
            continue
        picked = choice[info.name]["cand"] if choice[info.name] else None
        extra = C.refine_fractions(picked, C.COARSE)
        known = {(c.kind, c.rank) for c in cands[info.name]}
        fresh = C.layer_candidates(info, kinds, extra, search_latency, errors, useful[info.name])
        cands[info.name] += [c for c in fresh if (c.kind, c.rank) not in known]
    table, dense = _cost_tables(infos, cands, metric, latency)
    choice, unreachable = _solve_or_cheapest(table, dense, total, metric)
    return choice, table, dense, unreachable


def _build(model, infos, choice, errors: C.ErrorCache) -> nn.Module:
    """A copy of ``model`` with the chosen layers: the candidates' own decompositions."""
    new = copy.deepcopy(model)
    for info in infos:
        picked = choice[info.name]
        if picked is None:
            continue
        if isinstance(info, W.BlockInfo):
            _set_submodule(new, info.name, W.build(info, picked["rank"]))
        else:
            layer = errors.layer(info.conv, picked["kind"], picked["rank"])
            _set_submodule(new, info.name, copy.deepcopy(layer))
    return new.eval()


def compress_model(
    model: nn.Module,
    sample: torch.Tensor,
    budget: Budget | str,
    kind: str = "auto",
    latency: LatencyTable | None = None,
    errors: C.ErrorCache | None = None,
    pointwise: bool = False,
    block_width: bool = False,
    max_rounds: int = 4,
    timing_repeats: int = 15,
    best_effort: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[nn.Module, dict[str, dict], CompressReport]:
    """Factorize ``model``'s convs so that its params / MACs / forward latency meet ``budget``.

    ``budget`` is a :class:`Budget` or its text (``"latency=0.5"``). Budgets are fractions of
    the whole model (all parameters; every conv and linear layer's
    MACs; the whole forward on ``sample``). For latency the solver predicts the forward as the
    rest of the model (timed here without the factorizable layers, :func:`_latency_whole`)
    plus each layer's measured ms, aiming ``LATENCY_AIM`` under the budget; the result is then
    timed against the original (interleaved) and, while it misses, the target is scaled by
    ``fraction x original / measured`` and solved again (``max_rounds`` in all).

    A latency budget the cheapest candidates cannot reach keeps the fastest choice per
    layer (and a budget still missed after ``max_rounds`` keeps the last round's): with
    ``best_effort`` that model is returned with ``report.budget_met = False``, ``report.note``
    and a warning, else :class:`BudgetNotMet` (a ValueError carrying model and report) is
    raised. A params / MACs budget below the reachable minimum raises one ValueError naming it.
    ``progress`` gets one line per searched layer and per solver round.

    With ``block_width`` every inverted-residual block with expansion > 1 is one more solver
    layer whose options are narrower hidden widths (the block's CP rank, :mod:`width`; error:
    the block's relative output error on the sample); its expand / project 1x1 convs are then
    not offered for factorizing.

    Returns:
        ``(new_model, factorized_spec, report)``; ``factorized_spec`` maps layer name to
        ``{"kind", "rank"}`` (what the checkpoint records; kind ``"width"``: rank is the
        block's kept hidden width).
    """
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    kinds = KINDS.get(kind)
    if kinds is None:
        raise ValueError(f"--kind must be cp, tucker or auto, got {kind!r}")
    model = model.eval()
    infos = _units(model, sample, pointwise, block_width)
    if not infos:
        raise ValueError(
            "compress found no dense conv (groups=1, kernel > 1) to factorize"
            + (" and no inverted-residual block with expansion > 1" if block_width else "")
        )
    say = progress or (lambda line: None)
    if block_width and not any(isinstance(i, W.BlockInfo) for i in infos):
        say("--block-width: no inverted-residual block with expansion > 1; convs only")
    latency = latency if latency is not None else LatencyTable()
    errors = errors if errors is not None else C.ErrorCache()
    report = CompressReport(budget)
    orig = {"params": param_count(model), "macs": model_macs(model, sample)}
    whole = (
        _latency_whole(model, sample, infos, latency, report, timing_repeats)
        if budget.metric == "latency"
        else orig[COST[budget.metric]]
    )
    scale = [budget.fraction * (LATENCY_AIM if budget.metric == "latency" else 1.0)]

    def target_of(dense):
        return {"fixed": max(0.0, whole - sum(dense.values())), "target": scale[0] * whole}

    start = time.perf_counter()
    choice, table, dense, unreachable = _search(
        infos, kinds, budget.metric, latency, errors, target_of, say
    )
    report.search_s = time.perf_counter() - start
    say(f"search done in {report.search_s:.0f} s ({errors.computed} decompositions)")
    new, choice = _latency_rounds(
        model, sample, infos, (choice, table, dense), errors, report, target_of, scale,
        whole, unreachable, max_rounds, timing_repeats, say,
    )  # fmt: skip
    spec = _fill_report(report, model, new, infos, choice, latency, sample, orig, timing_repeats)
    report.decompositions, report.latency_measured = errors.computed, latency.measured
    errors.save()
    check_met(report, new, spec, best_effort)
    return new, spec, report


def _latency_whole(model, sample, infos, latency, report, repeats) -> float:
    """The original's forward in the per-layer table's units, split as the model runs it.

    The solver adds table ms (each layer timed on its own, maybe at another time and load);
    the rest of the model is measured here, interleaved with the whole: with ``D`` the table's
    sum over the factorizable layers and ``s`` their measured in-model share, the whole is
    ``D / s`` and the rest ``D / s - D``, so table ms and rest are in the same units.
    """
    dense = sum(_dense_ms(info, latency) for info in infos)
    ms = whole_and_rest_ms(model, sample, [info.name for info in infos], repeats)
    report.in_model_share = max(0.0, 1.0 - ms["rest"] / ms["whole"])
    if report.in_model_share < 0.02:  # the layers are lost in the timing noise: no rescaling
        return dense + ms["rest"]
    return dense / report.in_model_share


def _picks(choice: dict) -> dict:
    """A choice as layer -> (kind, rank) or None, for comparing two choices."""
    return {n: None if o is None else (o["kind"], o["rank"]) for n, o in choice.items()}


def _latency_rounds(model, sample, infos, solved, errors, report, target_of, scale, whole,
                    unreachable, max_rounds, repeats, say):  # fmt: skip
    """Build the choice; for latency, time it against the original and re-solve while it misses.

    Returns the model of the last round and its choice; ``report.rounds`` gets one entry each.
    """
    choice, table, dense = solved
    metric, fraction = report.budget.metric, report.budget.fraction
    new = _build(model, infos, choice, errors)
    for round_no in range(1, max_rounds + 1):
        predicted = target_of(dense)["fixed"] + sum(
            dense[n] if o is None else o["cost"] for n, o in choice.items()
        )
        entry = {"target": scale[0] * whole, "predicted": predicted}
        report.rounds.append(entry)
        if metric != "latency":
            break
        ms = interleaved_ms({"original": model, "compressed": new}, sample, repeats)
        entry["measured_ratio"] = ms["compressed"] / ms["original"]
        say(f"round {round_no}: measured {entry['measured_ratio']:.3f}x of the original forward "
            f"(target {fraction:g})")  # fmt: skip
        if unreachable:
            entry["note"] = (
                "the cheapest candidates are predicted over the target"
                if round_no == 1
                else "cheapest candidates measured: no solve reached the target"
            )
            break
        if entry["measured_ratio"] <= fraction:
            break
        scale[0] *= fraction / entry["measured_ratio"]
        try:
            choice = solve(table, dense, target_of(dense)["fixed"], scale[0] * whole)
        except BudgetUnreachable:  # below every solve: measure the cheapest choice, then stop
            fastest = cheapest(table, dense)
            if _picks(fastest) == _picks(choice):
                entry["note"] = "no cheaper choice: the cheapest candidates were reached"
                break
            choice, unreachable = fastest, True
        new = _build(model, infos, choice, errors)
    return new, choice


def _fill_report(report, model, new, infos, choice, latency, sample, orig, repeats) -> dict:
    """Per-layer rows (measured ms of dense and chosen layer) and whole-model numbers."""
    spec = {}
    for info in infos:
        picked = choice[info.name]
        layer = new.get_submodule(info.name)
        row = {"name": info.name, "kind": "dense", "rank": "-", "error": 0.0,
               "params": info.params, "macs": info.macs, "dense_params": info.params,
               "dense_macs": info.macs, "dense_ms": _dense_ms(info, latency)}  # fmt: skip
        row["ms"] = row["dense_ms"]
        if isinstance(info, W.BlockInfo):
            row["of"] = info.hidden  # a width row's rank is "k of R"
        if picked is not None:
            rank = picked["rank"]
            spec[info.name] = {
                "kind": picked["kind"],
                "rank": list(rank) if isinstance(rank, tuple) else rank,
            }
            error = picked["error"] if picked["kind"] == "width" else layer.decomposition_error
            row.update(kind=picked["kind"], rank=rank, error=float(error),
                       params=picked["params"], macs=picked["macs"],
                       ms=_chosen_ms(info, picked, layer, latency))  # fmt: skip
        report.rows.append(row)
    ms = interleaved_ms({"original": model, "compressed": new}, sample, repeats)
    report.whole["original"] = {**orig, "ms": ms["original"], "score": None}
    report.whole["compressed"] = {"params": param_count(new), "macs": model_macs(new, sample),
                                  "ms": ms["compressed"], "score": None}  # fmt: skip
    return spec
