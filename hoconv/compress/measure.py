"""Whole-model measurements: MACs of every layer, interleaved forward timing, and the model
with some layers standing in at no cost (to time the rest)."""

from __future__ import annotations

import copy
import statistics
import time
from math import prod

import torch
from torch import nn

from hoconv._conv_base import FactorizedConv
from hoconv.factorization import _set_submodule


def _leaf_macs(module: nn.Module, inputs: tuple, output) -> int:
    """MACs of one counted module on its recorded input / output (0 for what is not counted)."""
    if isinstance(module, FactorizedConv):
        return int(module.macs(tuple(inputs[0].shape)))
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * prod(module.kernel_size)
        return int(output.numel() * per_output)
    if isinstance(module, nn.Linear):
        return int(output.numel() * module.in_features)
    return 0


def forward_with_hooks(model: nn.Module, sample: torch.Tensor, hooks: list) -> None:
    """One no-grad eval forward of ``model`` on ``sample`` for ``hooks`` to record from; then the
    hooks are removed and the model's train / eval mode restored (also when the forward raises)."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(sample)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def model_macs(model: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-accumulates of one forward of ``model`` on ``sample``: every conv and linear layer.

    Dense and grouped convs count ``output numel x C/groups x prod(K)``, linear layers
    ``output numel x in_features``, factorized convs their stage-by-stage ``macs``; the
    modules inside a factorized conv are not counted twice. Norms, activations and pools
    (a few ops per element) are left out, as in the usual MAC counts.
    """
    total = [0]
    inside: set[int] = set()
    for module in model.modules():
        if isinstance(module, FactorizedConv):
            inside.update(id(m) for m in module.modules() if m is not module)

    def hook(module, inputs, output):
        total[0] += _leaf_macs(module, inputs, output)

    counted = (FactorizedConv, nn.modules.conv._ConvNd, nn.Linear)
    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, counted) and id(m) not in inside
    ]
    forward_with_hooks(model, sample, hooks)
    return total[0]


def interleaved_ms(
    models: dict[str, nn.Module],
    sample: torch.Tensor,
    repeats: int = 15,
    warmup: int = 2,
    statistic: str = "median",
) -> dict[str, float]:
    """Median (or ``"min"``) forward ms of each model on ``sample``, timed in turns (A, B, A, B).

    Interleaving spreads the machine's load changes over every model alike; the order
    inside each round rotates so no model is always first.
    """
    names = list(models)
    for m in models.values():
        m.eval()
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for _ in range(warmup):
            for n in names:
                models[n](sample)
        for i in range(repeats):
            for n in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                models[n](sample)
                times[n].append((time.perf_counter() - start) * 1e3)
    pick = min if statistic == "min" else statistics.median
    return {n: pick(t) for n, t in times.items()}


def param_count(model: nn.Module) -> int:
    """Number of parameter scalars."""
    return sum(p.numel() for p in model.parameters())


class _Recorded(nn.Module):
    """Stands in for a layer at zero cost: returns the output the layer gave on the sample."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.output


def without_layers(model: nn.Module, sample: torch.Tensor, names: list[str]) -> nn.Module:
    """A copy of ``model`` whose named layers return their recorded output on ``sample``.

    Its forward on ``sample`` gives the same result as ``model``'s and costs everything but
    those layers: what the rest of the model takes, measured rather than derived. A named
    layer inside another named one goes with the outer one.
    """
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda module, inputs, output: outputs.__setitem__(name, output.detach().clone())

    hooks = [model.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    forward_with_hooks(model, sample, hooks)
    rest = copy.deepcopy(model).eval()
    for name in sorted(names):  # a layer inside one already stood in for goes with it
        if not any(name.startswith(f"{done}.") for done in names if done != name):
            _set_submodule(rest, name, _Recorded(outputs[name]))
    return rest


def whole_and_rest_ms(
    model: nn.Module, sample: torch.Tensor, names: list[str], repeats: int = 15
) -> dict[str, float]:
    """Fastest forward ms of ``model`` and of the model without the named layers, interleaved.

    Their difference is what those layers take *in the model* (caches and threads as they are
    there), the figure a per-layer table measured on its own, maybe at another time, can miss.
    """
    rest = without_layers(model, sample, names)
    return interleaved_ms({"whole": model, "rest": rest}, sample, repeats, statistic="min")
