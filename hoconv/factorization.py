"""Factorization of whole models: every dense ``nn.Conv{1,2,3}d`` replaced by a CP / Tucker layer."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from hoconv._fast.switch import check_implementation
from hoconv.layers import CPConv, TuckerConv
from hoconv.rank import RankArg


def _is_factorizable(module: nn.Module, skip_pointwise: bool) -> bool:
    return (
        isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not (skip_pointwise and all(k == 1 for k in module.kernel_size))
    )


def factorize(
    model: nn.Module,
    kind: str = "cp",
    rank: RankArg | tuple[int, int] = "same",
    *,
    skip_pointwise: bool = True,
    seed: int = 0,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
    implementation: str | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Return a copy of ``model`` with every dense ``nn.Conv{1,2,3}d`` replaced by its decomposition.

    Args:
        model: source model (left untouched).
        kind: ``"cp"`` or ``"tucker"``.
        rank: rank argument of :class:`CPConv` / :class:`TuckerConv` (the same for every layer).
        skip_pointwise: keep 1x1 convolutions dense (factorizing them saves nothing).
        seed: decomposition seed.
        filter_fn: optional ``(qualified_name, conv) -> bool`` choosing which convs to replace.
        implementation: of every new CPConv (None: they follow
            :func:`hoconv.set_implementation`); TuckerConv has one path.

    A conv reachable under several names (shared) is decomposed once and the same
    factorized layer is set under every name.

    Returns:
        The new model and the relative reconstruction error of each replaced conv, by name.
    """
    factories = {"cp": CPConv.from_dense, "tucker": TuckerConv.from_dense}
    if kind not in factories:
        raise ValueError(f"kind must be 'cp' or 'tucker', got {kind!r}")
    if implementation is not None:
        check_implementation(implementation)
    new = copy.deepcopy(model)
    errors: dict[str, float] = {}
    names: dict[int, list[str]] = {}  # a conv shared under several names: all its names
    for name, module in new.named_modules(remove_duplicate=False):
        if _is_factorizable(module, skip_pointwise):
            names.setdefault(id(module), []).append(name)
    for aliases in names.values():
        module = new.get_submodule(aliases[0])
        if filter_fn and not any(filter_fn(name, module) for name in aliases):
            continue
        extra = {"implementation": implementation} if kind == "cp" else {}
        layer = factories[kind](module, rank, seed=seed, **extra)  # decomposed once
        for name in aliases:
            _set_submodule(new, name, layer)
            errors[name] = layer.decomposition_error
    if not errors:
        raise ValueError(
            "factorize found no dense nn.Conv1d/2d/3d (groups=1, kernel > 1) to replace"
        )
    return new, errors


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
