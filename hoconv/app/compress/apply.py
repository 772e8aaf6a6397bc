"""Search candidates, solve, rebuild the model; for a latency budget, measure and iterate."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from hoconv.app.compress import candidates as C
from hoconv.app.compress.latency import LatencyTable
from hoconv.app.compress.measure import interleaved_ms, model_macs, param_count
from hoconv.app.compress.solver import Budget, solve
from hoconv.factorization import _set_submodule

KINDS = {"cp": ("cp",), "tucker": ("tucker",), "auto": ("cp", "tucker")}


@dataclass
class CompressReport:
    """Per-layer rows, whole-model numbers per stage, the latency rounds and the search cost.

    ``whole`` maps a stage (``"original"``, ``"compressed"``, later ``"finetuned"``) to
    ``{"params", "macs", "ms", "score"}``; ``ms`` of the original and the compressed model are
    timed together, interleaved. ``rounds`` lists, per solve, the target, the solver's predicted
    cost and (latency budgets) the measured whole-forward ratio.
    """

    budget: Budget
    rows: list[dict] = field(default_factory=list)
    whole: dict[str, dict] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    search_s: float = 0.0
    decompositions: int = 0
    latency_measured: int = 0


def apply_choices(model: nn.Module, factorized: dict[str, dict]) -> None:
    """Replace each named dense conv by an (uninitialized) CP / Tucker layer, in place.

    Used by :func:`hoconv.app.engine.checkpoint.build_model` for the spec's ``"factorized"`` entry.
    """
    for name, choice in factorized.items():
        try:
            conv = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"factorized layer {name!r} is not in the model") from None
        _set_submodule(model, name, C.empty_layer(conv, choice["kind"], choice["rank"]))


def _cost_tables(infos, cands, metric: str, latency):
    """Solver input: per-layer options with their ``cost`` in ``metric``, and the dense costs."""
    attr = {"params": "params", "macs": "macs", "latency": "ms"}[metric]
    table, dense = {}, {}
    for info in infos:
        table[info.name] = [dict(vars(c), cost=getattr(c, attr), cand=c) for c in cands[info.name]]
        if metric == "latency":
            dense[info.name] = C.dense_ms(info, latency)
        else:
            dense[info.name] = info.params if metric == "params" else info.macs
    return table, dense


def _search(infos, kinds, metric, latency, errors, target_of):
    """Coarse grid, solve, refine around each pick, solve again; returns (choice, table, dense)."""
    search_latency = latency if metric == "latency" else None
    _, dense = _cost_tables(infos, {i.name: [] for i in infos}, metric, latency)
    attr = {"params": "params", "macs": "macs", "latency": "ms"}[metric]
    useful = {i.name: (lambda c, d=dense[i.name]: getattr(c, attr) < d) for i in infos}
    cands = {
        i.name: C.layer_candidates(i, kinds, C.COARSE, search_latency, errors, useful[i.name])
        for i in infos
    }
    table, dense = _cost_tables(infos, cands, metric, latency)
    total = target_of(dense)
    choice = solve(table, dense, total["fixed"], total["target"])
    for info in infos:
        picked = choice[info.name]["cand"] if choice[info.name] else None
        extra = C.refine_fractions(picked, C.COARSE)
        known = {(c.kind, c.rank) for c in cands[info.name]}
        fresh = C.layer_candidates(info, kinds, extra, search_latency, errors, useful[info.name])
        cands[info.name] += [c for c in fresh if (c.kind, c.rank) not in known]
    table, dense = _cost_tables(infos, cands, metric, latency)
    return solve(table, dense, total["fixed"], total["target"]), table, dense


def _build(model, infos, choice, built: dict) -> nn.Module:
    """A copy of ``model`` with the chosen layers decomposed (full iterations; memoised)."""
    new = copy.deepcopy(model)
    for info in infos:
        picked = choice[info.name]
        if picked is None:
            continue
        key = (info.name, picked["kind"], picked["rank"])
        if key not in built:
            built[key] = C.decompose(picked["kind"], info.conv, picked["rank"])
        _set_submodule(new, info.name, copy.deepcopy(built[key]))
    return new.eval()


def compress_model(
    model: nn.Module,
    sample: torch.Tensor,
    budget: Budget,
    kind: str = "auto",
    latency: LatencyTable | None = None,
    errors: C.ErrorCache | None = None,
    pointwise: bool = False,
    max_rounds: int = 4,
    timing_repeats: int = 15,
) -> tuple[nn.Module, dict[str, dict], CompressReport]:
    """Factorize ``model``'s convs so that its params / MACs / forward latency meet ``budget``.

    Budgets are fractions of the whole model (all parameters; every conv and linear layer's
    MACs; the whole forward on ``sample``). For latency the solver predicts the forward as the
    rest of the model (whole minus the dense convs) plus each layer's measured ms; the result
    is then timed against the original (interleaved) and, while it misses, the target is
    scaled by ``fraction x original / measured`` and solved again (``max_rounds`` in all).

    Returns:
        ``(new_model, factorized_spec, report)``; ``factorized_spec`` maps layer name to
        ``{"kind", "rank"}`` (what the checkpoint records).
    """
    kinds = KINDS.get(kind)
    if kinds is None:
        raise ValueError(f"--kind must be cp, tucker or auto, got {kind!r}")
    model = model.eval()
    infos = C.record_shapes(model, sample, pointwise)
    if not infos:
        raise ValueError("compress found no dense conv (groups=1, kernel > 1) to factorize")
    latency = latency if latency is not None else LatencyTable()
    errors = errors if errors is not None else C.ErrorCache()
    report = CompressReport(budget)
    orig = {"params": param_count(model), "macs": model_macs(model, sample)}
    # the solver's whole-model ms is a minimum, like the per-layer entries it is split into
    orig["ms"] = interleaved_ms({"m": model}, sample, timing_repeats, statistic="min")["m"]
    whole = {"params": orig["params"], "macs": orig["macs"], "latency": orig["ms"]}[budget.metric]
    scale = [budget.fraction]

    def target_of(dense):
        return {"fixed": max(0.0, whole - sum(dense.values())), "target": scale[0] * whole}

    start = time.perf_counter()
    choice, table, dense = _search(infos, kinds, budget.metric, latency, errors, target_of)
    report.search_s = time.perf_counter() - start
    built: dict = {}
    new = _build(model, infos, choice, built)
    best = (new, choice)
    for _ in range(max_rounds):
        predicted = target_of(dense)["fixed"] + sum(
            dense[n] if o is None else o["cost"] for n, o in choice.items()
        )
        entry = {"target": scale[0] * whole, "predicted": predicted}
        report.rounds.append(entry)
        if budget.metric != "latency":
            break
        ms = interleaved_ms({"original": model, "compressed": new}, sample, timing_repeats)
        entry["measured_ratio"] = ms["compressed"] / ms["original"]
        best = (new, choice)
        if entry["measured_ratio"] <= budget.fraction:
            break
        scale[0] *= budget.fraction / entry["measured_ratio"]
        try:
            choice = solve(table, dense, target_of(dense)["fixed"], scale[0] * whole)
        except ValueError:  # even the cheapest candidates cannot go lower: keep the last
            entry["note"] = "no cheaper choice: the cheapest candidates were reached"
            break
        new = _build(model, infos, choice, built)
    new, choice = best
    spec = _fill_report(report, model, new, infos, choice, latency, sample, orig, timing_repeats)
    report.decompositions, report.latency_measured = errors.computed, latency.measured
    errors.save()
    return new, spec, report


def _fill_report(report, model, new, infos, choice, latency, sample, orig, repeats) -> dict:
    """Per-layer rows (measured ms of dense and chosen layer) and whole-model numbers."""
    spec = {}
    for info in infos:
        picked = choice[info.name]
        layer = new.get_submodule(info.name)
        row = {"name": info.name, "kind": "dense", "rank": "-", "error": 0.0,
               "params": info.params, "macs": info.macs, "dense_params": info.params,
               "dense_macs": info.macs, "dense_ms": C.dense_ms(info, latency)}  # fmt: skip
        row["ms"] = row["dense_ms"]
        if picked is not None:
            rank = picked["rank"]
            spec[info.name] = {
                "kind": picked["kind"],
                "rank": list(rank) if isinstance(rank, tuple) else rank,
            }
            row.update(kind=picked["kind"], rank=rank, error=float(layer.decomposition_error),
                       params=picked["params"], macs=picked["macs"],
                       ms=latency.forward_ms(C.layer_key(info, picked["kind"], rank), layer,
                                             info.input_shape))  # fmt: skip
        report.rows.append(row)
    ms = interleaved_ms({"original": model, "compressed": new}, sample, repeats)
    report.whole["original"] = {**orig, "ms": ms["original"], "score": None}
    report.whole["compressed"] = {"params": param_count(new), "macs": model_macs(new, sample),
                                  "ms": ms["compressed"], "score": None}  # fmt: skip
    return spec
