"""Per-layer candidates: CP / Tucker ranks with their error, parameters, MACs and measured ms.

Search speed: ranks come from a coarse grid of parameter fractions (``COARSE``), refined
around each layer's pick (``refine_fractions``); a candidate's error is a short decomposition
(``CANDIDATE_ITERS``) cached on disk by kernel digest, kind and rank (:class:`ErrorCache`), and
its parameters / MACs are counted on an empty layer, so nothing is decomposed twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from math import prod
from pathlib import Path

import torch
from torch import nn

from hoconv import rank as R
from hoconv.compress.measure import forward_with_hooks
from hoconv.factorization import _is_factorizable
from hoconv.layers import CPConv, TuckerConv

COARSE = (0.1, 0.25, 0.5)
# Decomposition iterations, for the candidate errors and for the layers built from the picks
# (the same run, so a pick's error is what the model gets; distillation does the rest).
# Measured on a 256x256x3x3 ResNet-18 kernel: Tucker (HOOI from the HOSVD) at 20 iterations is
# within 1.2e-4 relative error of 200 (0.70277 vs 0.70266 at ranks 128), at a tenth of the time;
# CP (ALS) at 30 within 0.005 of 100 (0.8852 vs 0.8811 at rank 100), at 0.3 of the time.
CANDIDATE_ITERS = {"cp": 30, "tucker": 20}


@dataclass
class LayerInfo:
    """A dense conv to consider: its name, module and the shapes it saw on the sample batch."""

    name: str
    conv: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def params(self) -> int:
        """Dense parameter count."""
        return sum(p.numel() for p in self.conv.parameters())

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates: N x T x C/groups x prod(K) x prod(output positions)."""
        n, t, *out = self.output_shape
        c = self.conv.in_channels // self.conv.groups
        return n * t * c * prod(self.conv.kernel_size) * prod(out)


@dataclass
class Candidate:
    """One factorized option of a layer (``fraction``: the parameter fraction it came from)."""

    kind: str
    rank: int | tuple[int, int]
    error: float
    params: int
    macs: int
    ms: float | None = None
    fraction: float = 0.0


def record_shapes(
    model: nn.Module, sample: torch.Tensor, pointwise: bool = False
) -> list[LayerInfo]:
    """Run ``sample`` through ``model`` and record every factorizable conv's in / out shapes.

    Args:
        model: the network.
        sample: a batch at the size the model will run.
        pointwise: also consider 1x1 convs (a low-rank pair of 1x1 projections).
    """
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, module in model.named_modules():
        if _is_factorizable(module, skip_pointwise=not pointwise):

            def hook(mod, inputs, output, name=name):
                shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))

            hooks.append(module.register_forward_hook(hook))
    forward_with_hooks(model, sample, hooks)
    modules = dict(model.named_modules())
    return [LayerInfo(n, modules[n], *s) for n, s in shapes.items()]


def empty_layer(conv: nn.Module, kind: str, rank) -> nn.Module:
    """A factorized layer with ``conv``'s geometry at ``rank`` (random weights)."""
    cls = {"cp": CPConv, "tucker": TuckerConv}[kind]
    return cls(
        conv.in_channels, conv.out_channels, conv.kernel_size, dim=len(conv.kernel_size),
        rank=tuple(rank) if kind == "tucker" else int(rank), stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, bias=conv.bias is not None,
    )  # fmt: skip


def resolve_rank(kind: str, conv: nn.Module, fraction: float):
    """The rank a parameter ``fraction`` gives (``hoconv.rank``), without decomposing."""
    t, c, *ksize = conv.weight.shape
    if kind == "cp":
        return R.cp_rank(fraction, c, t, ksize)
    if kind == "tucker":
        return tuple(R.tucker_ranks(fraction, c, t, ksize))
    raise ValueError(f"kind must be 'cp', 'tucker' or 'auto', got {kind!r}")


def decompose(kind: str, conv: nn.Module, rank, n_iter_max: int | None = None) -> nn.Module:
    """The factorized layer of ``conv`` at ``rank`` (error in ``decomposition_error``)."""
    kw = {} if n_iter_max is None else {"n_iter_max": n_iter_max}
    if kind == "cp":
        return CPConv.from_dense(conv, int(rank), **kw)
    return TuckerConv.from_dense(conv, tuple(rank), **kw)


class ErrorCache:
    """Candidate reconstruction errors on disk, keyed by kernel digest, kind, rank and iterations.

    The layers decomposed in this process are kept too (:meth:`layer`), so the model built from
    the picks reuses them instead of decomposing again.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        root = os.environ.get("HOCONV_CACHE") or os.path.expanduser("~/.cache/hoconv")
        self.path = Path(path) if path is not None else Path(root) / "compress-errors.json"
        self.computed = 0
        self.layers: dict[str, nn.Module] = {}
        try:
            self.entries: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def _key(self, conv: nn.Module, kind: str, rank) -> str:
        weight = conv.weight.detach().contiguous().cpu()
        digest = hashlib.sha1(weight.numpy().tobytes()).hexdigest()[:16]
        return f"{digest}|{tuple(weight.shape)}|{kind}|{rank}|it={CANDIDATE_ITERS[kind]}"

    def error(self, conv: nn.Module, kind: str, rank) -> float:
        """Relative error of a short decomposition of ``conv`` (cached)."""
        key = self._key(conv, kind, rank)
        if key not in self.entries:
            self.layer(conv, kind, rank)
        return self.entries[key]

    def layer(self, conv: nn.Module, kind: str, rank) -> nn.Module:
        """The factorized layer whose error :meth:`error` gives (decomposed once per process)."""
        key = self._key(conv, kind, rank)
        if key not in self.layers:
            self.layers[key] = decompose(kind, conv, rank, CANDIDATE_ITERS[kind])
            if key not in self.entries:
                self.entries[key] = float(self.layers[key].decomposition_error)
                self.computed += 1
                self.save()  # a long search killed half-way keeps what it computed
        return self.layers[key]

    def save(self) -> None:
        """Write the cache (temp file + rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=0, sort_keys=True))
        os.replace(tmp, self.path)


def layer_candidates(
    info: LayerInfo,
    kinds: tuple[str, ...],
    fractions=COARSE,
    latency=None,
    errors=None,
    useful=None,
) -> list[Candidate]:
    """One candidate per distinct (kind, rank) the ``fractions`` of the dense parameters give.

    Args:
        info: the layer.
        kinds: ``("cp",)``, ``("tucker",)`` or both.
        fractions: target parameter fractions (rank resolved by hoconv.rank).
        latency: optional :class:`LatencyTable` to measure forward ms at ``info.input_shape``.
        errors: :class:`ErrorCache` (a fresh in-memory one when None).
        useful: optional predicate on a candidate's params / MACs / ms; candidates it rejects
            (e.g. no cheaper than dense) are dropped before their decomposition is computed.
    """
    errors = errors if errors is not None else ErrorCache(os.devnull)
    out, seen = [], set()
    for kind in kinds:
        for fraction in sorted(fractions):
            rank = resolve_rank(kind, info.conv, fraction)
            if (kind, rank) in seen:
                continue
            seen.add((kind, rank))
            layer = empty_layer(info.conv, kind, rank)
            cand = Candidate(
                kind, rank, float("nan"), sum(p.numel() for p in layer.parameters()),
                int(layer.macs(info.input_shape)), fraction=fraction,
            )  # fmt: skip
            if cand.macs >= info.macs:  # more work than the dense conv: never faster, not timed
                continue
            if latency is not None:
                cand.ms = latency.forward_ms(layer_key(info, kind, rank), layer, info.input_shape)
            if useful is not None and not useful(cand):
                continue
            cand.error = errors.error(info.conv, kind, rank)
            out.append(cand)
    return out


def dense_ms(info: LayerInfo, latency) -> float:
    """Measured (cached) forward ms of the dense layer at its input shape."""
    return latency.forward_ms(layer_key(info, "dense", 0), info.conv, info.input_shape)


def refine_fractions(picked: Candidate | None, fractions) -> list[float]:
    """The fine grid around a pick: the geometric midpoints to its neighbours in ``fractions``."""
    grid = sorted(set(fractions))
    if picked is None:  # dense: try above the largest coarse fraction
        return [min(0.8, grid[-1] * 1.5)]
    i = grid.index(picked.fraction)
    lower = grid[i - 1] if i > 0 else grid[0] / 2
    upper = grid[i + 1] if i + 1 < len(grid) else min(0.9, grid[-1] * 1.5)
    return [round((lower * picked.fraction) ** 0.5, 4), round((upper * picked.fraction) ** 0.5, 4)]


def layer_key(info: LayerInfo, kind: str, rank) -> str:
    """What a layer's latency depends on besides the input shape: kind, rank, geometry, bias."""
    c = info.conv
    geometry = (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation)
    return f"{kind}|{rank}|{geometry}|bias={c.bias is not None}"
