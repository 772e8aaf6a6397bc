"""Put the solver's choices into a model and write a checkpoint the existing loaders read."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from hoconv.compress.candidates import LayerInfo, layer_candidates, record_shapes
from hoconv.compress.latency import LatencyTable
from hoconv.compress.solver import Budget, solve
from hoconv.factorization import _set_submodule
from hoconv.layers import CPConv, TuckerConv


@dataclass
class CompressReport:
    """Per-layer rows (name, kind, rank, error, params, macs, ms) and whole-model totals."""

    rows: list[dict] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0


def _empty_layer(conv: nn.Module, kind: str, rank) -> nn.Module:
    """A factorized layer with ``conv``'s geometry at ``rank`` (weights come later)."""
    cls = {"cp": CPConv, "tucker": TuckerConv}[kind]
    return cls(
        conv.in_channels, conv.out_channels, conv.kernel_size, dim=len(conv.kernel_size),
        rank=tuple(rank) if kind == "tucker" else int(rank), stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
    )  # fmt: skip


def apply_choices(model: nn.Module, factorized: dict[str, dict]) -> None:
    """Replace each named dense conv by an (uninitialized) CP / Tucker layer, in place.

    Used by :func:`hoconv.engine.checkpoint.build_model` for the spec's ``"factorized"`` entry.
    """
    for name, choice in factorized.items():
        try:
            conv = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"factorized layer {name!r} is not in the model") from None
        _set_submodule(model, name, _empty_layer(conv, choice["kind"], choice["rank"]))


def _costs(info: LayerInfo, cands, dense_ms, metric: str):
    key = {"params": "params", "macs": "macs", "latency": "ms"}[metric]
    dense = {"params": info.params, "macs": info.macs, "ms": dense_ms}[key]
    return [dict(vars(c), cost=getattr(c, key)) for c in cands], dense


def compress_model(
    model: nn.Module,
    sample: torch.Tensor,
    budget: Budget,
    kind: str = "auto",
    latency: LatencyTable | None = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, dict], CompressReport]:
    """Factorize ``model``'s convs so that its params / MACs / conv latency meet ``budget``.

    For ``latency`` the budget applies to the summed measured forward ms of the candidate convs
    plus the rest of the model (measured once as whole-model ms minus the dense convs' ms).

    Returns:
        ``(new_model, factorized_spec, report)``; ``factorized_spec`` maps layer name to
        ``{"kind", "rank"}`` (what the checkpoint records).
    """
    kinds = {"cp": ("cp",), "tucker": ("tucker",), "auto": ("cp", "tucker")}.get(kind)
    if kinds is None:
        raise ValueError(f"--kind must be cp, tucker or auto, got {kind!r}")
    infos = record_shapes(model, sample)
    if not infos:
        raise ValueError("compress found no dense conv (groups=1, kernel > 1) to factorize")
    if budget.metric == "latency" and latency is None:
        latency = LatencyTable()
    table, dense_cost, all_cands = {}, {}, {}
    for info in infos:
        cands, dense_ms = layer_candidates(info, kinds, latency=latency)
        all_cands[info.name] = cands
        table[info.name], dense_cost[info.name] = _costs(info, cands, dense_ms, budget.metric)
    total = _model_total(model, sample, infos, budget.metric, dense_cost)
    fixed = total - sum(dense_cost.values())
    choice = solve(table, dense_cost, fixed, budget.fraction * total)
    new = copy.deepcopy(model)
    spec, report = {}, CompressReport()
    for info in infos:
        picked = choice[info.name]
        row = {"name": info.name, "kind": "dense", "rank": "-", "error": 0.0,
               "params": info.params, "macs": info.macs,
               "ms": dense_cost[info.name] if budget.metric == "latency" else None}  # fmt: skip
        if picked is not None:
            torch.manual_seed(seed)
            factories = {"cp": CPConv.from_dense, "tucker": TuckerConv.from_dense}
            layer = factories[picked["kind"]](info.conv, picked["rank"], seed=seed)
            _set_submodule(new, info.name, layer)
            rank = picked["rank"]
            spec[info.name] = {
                "kind": picked["kind"],
                "rank": list(rank) if isinstance(rank, tuple) else rank,
            }
            row.update({k: picked[k] for k in ("kind", "rank", "error", "params", "macs", "ms")})
        report.rows.append(row)
    report.params_before = sum(p.numel() for p in model.parameters())
    report.params_after = sum(p.numel() for p in new.parameters())
    report.macs_before = sum(i.macs for i in infos)
    report.macs_after = sum(r["macs"] for r in report.rows)
    return new, spec, report


def _model_total(model, sample, infos, metric, dense_cost) -> float:
    if metric == "params":
        return float(sum(p.numel() for p in model.parameters()))
    if metric == "macs":
        return float(sum(dense_cost.values()))  # MACs counted over the candidate convs only
    from hoconv.compress.latency import median_ms

    with torch.no_grad():
        whole = median_ms(lambda: model.eval()(sample), repeats=5)
    return max(whole, sum(dense_cost.values()))


def compress_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, sample: torch.Tensor, budget: Budget,
    kind: str = "auto", latency: LatencyTable | None = None,
) -> CompressReport:  # fmt: skip
    """Compress a checkpoint's model and write one that ``load_model`` / evaluate / predict read."""
    from hoconv.engine.checkpoint import load_model, make_checkpoint, write_checkpoint

    model, meta = load_model(src)
    if meta["model"].get("factorized"):
        raise ValueError(f"checkpoint {src} is already compressed; compress the original")
    new, factorized, report = compress_model(model, sample, budget, kind, latency)
    spec = dict(meta["model"])
    ckpt = make_checkpoint(model_spec=spec, state_dict=new.state_dict(), epoch=int(meta.get("epoch", 0)),
                           config=dict(meta.get("config") or {}), history=meta.get("history"),
                           best=meta.get("best"))  # fmt: skip
    ckpt["model"]["factorized"] = factorized
    from hoconv.engine.checkpoint import digest

    ckpt["digest"] = digest(ckpt)
    write_checkpoint(dst, ckpt)
    return report
