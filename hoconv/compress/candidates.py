"""Per-layer candidates: CP / Tucker ranks with their error, parameters, MACs and measured ms."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
from torch import nn

from hoconv.factorization import _is_factorizable
from hoconv.layers import CPConv, TuckerConv

FRACTIONS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75)


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
    """One factorized option of a layer."""

    kind: str
    rank: int | tuple[int, int]
    error: float
    params: int
    macs: int
    ms: float | None = None


def record_shapes(model: nn.Module, sample: torch.Tensor) -> list[LayerInfo]:
    """Run ``sample`` through ``model`` and record every factorizable conv's in / out shapes."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, module in model.named_modules():
        if _is_factorizable(module, skip_pointwise=True):

            def hook(mod, inputs, output, name=name):
                shapes.setdefault(name, (tuple(inputs[0].shape), tuple(output.shape)))

            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(model.named_modules())
    return [LayerInfo(n, modules[n], *s) for n, s in shapes.items()]


def _factorized(kind: str, conv: nn.Module, fraction: float) -> nn.Module:
    if kind == "cp":
        return CPConv.from_dense(conv, fraction, n_iter_max=50)
    if kind == "tucker":
        return TuckerConv.from_dense(conv, fraction)
    raise ValueError(f"kind must be 'cp', 'tucker' or 'auto', got {kind!r}")


def layer_candidates(
    info: LayerInfo, kinds: tuple[str, ...], fractions=FRACTIONS, latency=None
) -> tuple[list[Candidate], float | None]:
    """Decompose ``info.conv`` at each kind x fraction of its dense parameters.

    Args:
        info: the layer.
        kinds: ``("cp",)``, ``("tucker",)`` or both.
        fractions: target parameter fractions (rank resolved by hoconv.rank).
        latency: optional :class:`LatencyTable` to measure forward ms at ``info.input_shape``.

    Returns:
        ``(candidates, dense_ms)``; ``dense_ms`` is None without a latency table.
    """
    out, seen = [], set()
    for kind in kinds:
        for fraction in fractions:
            layer = _factorized(kind, info.conv, fraction)
            rank = layer.rank if kind == "cp" else tuple(layer.rank)
            if (kind, rank) in seen:
                continue
            seen.add((kind, rank))
            cand = Candidate(
                kind, rank, float(layer.decomposition_error),
                sum(p.numel() for p in layer.parameters()), int(layer.macs(info.input_shape)),
            )  # fmt: skip
            if latency is not None:
                cand.ms = latency.forward_ms(_key(info, kind, rank), layer, info.input_shape)
            out.append(cand)
    dense_ms = None
    if latency is not None:
        dense_ms = latency.forward_ms(_key(info, "dense", 0), info.conv, info.input_shape)
    return out, dense_ms


def _key(info: LayerInfo, kind: str, rank) -> str:
    c = info.conv
    geometry = (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation)
    return f"{kind}|{rank}|{geometry}|bias={c.bias is not None}"
