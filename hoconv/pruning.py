"""Automatic rank selection (paper section 4): a lasso on the ranks, soft-thresholding, pruning.

CP layers: the ``weights`` vector (the paper's lambda) scales each rank component; the
penalty is ``sum_r |weights[r]|``. Tucker layers: a group lasso on the core's slices, one
group per rank index per mode, ``sum_o ||core[o]||_F + sum_i ||core[:, i]||_F``; a zero
output slice ``core[o]`` makes ``out_factor[:, o]`` useless, a zero input slice
``core[:, i]`` makes ``in_factor[i]`` useless.

Training with ``loss + gamma * lasso_penalty(model)`` and, after each ``optimizer.step()``,
``proximal_step(model, lr * gamma)`` (or :func:`optimizer_proximal_step`, matched to Adam)
drives unneeded components to exactly zero; :func:`prune` then removes them physically, so
parameters and FLOPs really drop. The Tucker prox soft-thresholds the output groups, then the
input groups (each family exactly; the two overlap, so their composition is the usual
approximation of the overlapping group lasso's prox, and it yields exact zeros).

The penalties are scale-ambiguous (``weights[r] / a`` with ``out_factor[:, r] * a`` is the
same layer), so :func:`normalize_factors` (exact) first moves the factor norms into the
penalised tensors; the trainer calls it before lasso training.

Optimizer state refers to the old parameter tensors: create a new optimizer after ``prune``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from hoconv.layers import BatchNorm, CPConv, TuckerConv
from hoconv.prune_report import (  # noqa: F401 - the report API lives beside prune
    LayerRanks,
    PruneReport,
    plot_rank_report,
    prune_hint,
    rank_report_table,
)

_TINY = 1e-30


def cp_layers(model: nn.Module) -> list[tuple[str, CPConv]]:
    """The CP convolutions of a model, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, CPConv)]


def tucker_layers(model: nn.Module) -> list[tuple[str, TuckerConv]]:
    """The Tucker convolutions of a model (transduced ones too), with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, TuckerConv)]


def rank_layers(model: nn.Module, what: str) -> list[tuple[str, CPConv | TuckerConv]]:
    """The CP and Tucker layers of a model (the ones a lasso selects ranks of); raise if none."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (CPConv, TuckerConv))]
    if not layers:
        raise ValueError(
            f"{what} needs CP or Tucker layers (CPConv / TuckerConv): the model has none "
            "(use hoconv.factorize(model, kind='cp' or 'tucker'))"
        )
    return layers


def _other_dims(tensor: torch.Tensor, dim: int) -> list[int]:
    return [d for d in range(tensor.dim()) if d != dim]


def tucker_group_norms(core: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frobenius norms of a core's output slices ``(R_out,)`` and input slices ``(R_in,)``."""
    return (
        torch.linalg.vector_norm(core, dim=_other_dims(core, 0)),
        torch.linalg.vector_norm(core, dim=_other_dims(core, 1)),
    )


def lasso_penalty(model: nn.Module) -> torch.Tensor:
    """The rank-selection term: CP ``sum |weights|`` plus the Tucker core-slice group lasso.

    Add ``gamma * lasso_penalty(model)`` to the loss; it is differentiable (sub-gradient at 0).
    """
    terms = []
    for _, layer in rank_layers(model, "lasso_penalty"):
        if isinstance(layer, CPConv):
            terms.append(layer.weights.abs().sum())
        else:
            out_norms, in_norms = tucker_group_norms(layer.core)
            terms.append(out_norms.sum() + in_norms.sum())
    return torch.stack(terms).sum()


def _check_threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _soft_threshold_(w: torch.Tensor, threshold: float | torch.Tensor) -> int:
    """``w <- sign(w) * max(|w| - threshold, 0)`` in place; returns the count of exact zeros."""
    w.copy_(torch.sign(w) * (w.abs() - threshold).clamp_min(0))
    return int((w == 0).sum())


def _group_soft_threshold_(core: torch.Tensor, dim: int, threshold) -> int:
    """Scale each slice of ``core`` along ``dim`` by ``max(1 - threshold / ||slice||, 0)``.

    ``threshold`` is a number or one per slice. Returns the count of slices exactly zero.
    """
    norms = torch.linalg.vector_norm(core, dim=_other_dims(core, dim))  # (R_dim,)
    scale = (1 - threshold / norms.clamp_min(_TINY)).clamp_min(0)
    core.mul_(scale.reshape([-1 if d == dim else 1 for d in range(core.dim())]))
    return int((scale == 0).sum())


def _prox_tucker_(core: torch.Tensor, out_threshold, in_threshold) -> int:
    """Group soft-threshold of the output slices, then of the input slices; zero groups."""
    return _group_soft_threshold_(core, 0, out_threshold) + _group_soft_threshold_(
        core, 1, in_threshold
    )


@torch.no_grad()
def proximal_step(model: nn.Module, threshold: float) -> int:
    """Soft-threshold every CP ``weights`` and group-soft-threshold every Tucker core's slices.

    Call after ``optimizer.step()`` with ``threshold = lr * gamma`` (proximal gradient for the
    lasso): weights reach exactly zero instead of oscillating around it.

    Returns:
        The number of rank components (CP weights, Tucker core slices) exactly zero afterwards.
    """
    threshold = _check_threshold(threshold, "threshold")
    zeros = 0
    for _, layer in rank_layers(model, "proximal_step"):
        if isinstance(layer, CPConv):
            zeros += _soft_threshold_(layer.weights, threshold)
        else:
            zeros += _prox_tucker_(layer.core, threshold, threshold)
    return zeros


def _step_scale(param: nn.Parameter, optimizer: torch.optim.Optimizer):
    """``(lr, denominator)`` of the optimizer's step on ``param``; None when it is not trained.

    Adam's step is ``lr * m_hat / (sqrt(v_hat) + eps)``: its denominator has the shape of
    ``param``. SGD (or no step yet): the denominator is 1.
    """
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            state = optimizer.state.get(param, {})
            if "exp_avg_sq" not in state:
                return group["lr"], 1.0
            step = float(state["step"])
            v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** step)  # shape of param
            return group["lr"], v_hat.sqrt() + group["eps"]
    return None  # not trained (e.g. --phase temporal): leave it


def _group_mean(denominator, core: torch.Tensor, dim: int):
    """A slice's mean step denominator (a number stays a number)."""
    if isinstance(denominator, float):
        return denominator
    return denominator.mean(dim=_other_dims(core, dim))  # (R_dim,)


@torch.no_grad()
def optimizer_proximal_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, gamma: float
) -> int:
    """The lasso's proximal step matched to the optimizer that just stepped (Adam or SGD).

    The proximal operator of ``gamma * |w|`` in Adam's preconditioned metric is a
    soft-threshold at ``lr * gamma / (sqrt(v_hat) + eps)`` (per CP weight); a Tucker slice
    uses the mean of that denominator over the slice. With a plain ``lr * gamma`` Adam's
    bounded (~lr) steps would undo the shrinkage whatever gamma is. Call after
    ``optimizer.step()``.

    Returns:
        The number of rank components (CP weights, Tucker core slices) exactly zero afterwards.
    """
    gamma = _check_threshold(gamma, "gamma")
    zeros = 0
    for _, layer in rank_layers(model, "optimizer_proximal_step"):
        tensor = layer.weights if isinstance(layer, CPConv) else layer.core
        scale = _step_scale(tensor, optimizer)
        if scale is None:
            zeros += _count_zero_components(layer)
        elif isinstance(layer, CPConv):
            zeros += _soft_threshold_(tensor, scale[0] * gamma / scale[1])
        else:
            lr, denominator = scale
            zeros += _prox_tucker_(
                tensor,
                lr * gamma / _group_mean(denominator, tensor, 0),
                lr * gamma / _group_mean(denominator, tensor, 1),
            )
    return zeros


def _count_zero_components(layer: CPConv | TuckerConv) -> int:
    if isinstance(layer, CPConv):
        return int((layer.weights == 0).sum())
    out_norms, in_norms = tucker_group_norms(layer.core)
    return int((out_norms == 0).sum() + (in_norms == 0).sum())


def component_counts(model: nn.Module) -> tuple[int, int]:
    """``(exactly zero, total)`` rank components over the CP and Tucker layers."""
    layers = rank_layers(model, "component_counts")
    total = sum(layer.rank if isinstance(layer, CPConv) else sum(layer.rank) for _, layer in layers)
    with torch.no_grad():
        return sum(_count_zero_components(layer) for _, layer in layers), total


def _unit_columns_(factor: torch.Tensor, dim: int) -> torch.Tensor:
    """Divide ``factor`` by its norms along ``dim`` in place; returns the norms (1 where 0)."""
    norms = torch.linalg.vector_norm(factor, dim=dim)  # (R,)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    factor.div_(norms.unsqueeze(dim))
    return norms


@torch.no_grad()
def normalize_cp_weights(model: nn.Module) -> None:
    """Move CP factor norms into ``weights`` without changing any output (exact rescaling).

    ``out_factor`` columns always get unit norm; ``in_factor`` and ``kernel_factors`` rows
    too when the layer has no Psi (a rank-space BatchNorm makes their scale matter in eval).
    """
    layers = cp_layers(model)
    if not layers:
        raise ValueError("normalize_cp_weights needs CP layers (CPConv): the model has none")
    for _, layer in layers:
        factors = [(layer.out_factor, 0)]
        if layer.psi is None:
            factors += [(layer.in_factor, 1), *((f, 1) for f in layer.kernel_factors)]
        for factor, dim in factors:
            layer.weights.mul_(_unit_columns_(factor, dim))


@torch.no_grad()
def normalize_factors(model: nn.Module) -> None:
    """Exact rescaling before lasso training: CP norms into ``weights``, Tucker ones into the core.

    A Tucker layer's ``out_factor`` columns and ``in_factor`` rows get unit norm; the core's
    output / input slices take the norms, so a slice's norm is its component's magnitude.
    """
    rank_layers(model, "normalize_factors")
    if cp_layers(model):
        normalize_cp_weights(model)
    for _, layer in tucker_layers(model):
        out_norms = _unit_columns_(layer.out_factor, 0)  # (R_out,)
        in_norms = _unit_columns_(layer.in_factor, 1)  # (R_in,)
        core_shape = [-1] + [1] * (layer.core.dim() - 1)
        layer.core.mul_(out_norms.reshape(core_shape))
        layer.core.mul_(in_norms.reshape([1, -1] + [1] * (layer.core.dim() - 2)))


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _param(value: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(value.detach().clone(), requires_grad=like.requires_grad)


def _shrink_psi(psi: nn.ModuleList, keep: torch.Tensor) -> None:
    """Keep only the ``keep`` channels of every rank-space BatchNorm / PReLU."""
    for module in (m for seq in psi for m in seq.modules()):
        if isinstance(module, BatchNorm):
            module.num_features = len(keep)
            for name in ("weight", "bias"):
                if getattr(module, name) is not None:
                    setattr(
                        module, name, _param(getattr(module, name)[keep], getattr(module, name))
                    )
            for name in ("running_mean", "running_var"):
                if getattr(module, name) is not None:
                    setattr(module, name, getattr(module, name)[keep].clone())
        elif isinstance(module, nn.PReLU) and module.num_parameters > 1:
            module.num_parameters = len(keep)
            module.weight = _param(module.weight[keep], module.weight)


def prune_layer(layer: CPConv, keep: torch.Tensor) -> None:
    """Keep only the rank components ``keep`` (sorted indices) of a CP layer, in place."""
    keep = keep.to(layer.weights.device)
    layer.weights = _param(layer.weights[keep], layer.weights)
    layer.in_factor = _param(layer.in_factor[keep], layer.in_factor)
    layer.out_factor = _param(layer.out_factor[:, keep], layer.out_factor)
    layer.kernel_factors = nn.ParameterList(_param(f[keep], f) for f in layer.kernel_factors)
    if layer.psi is not None:
        _shrink_psi(layer.psi, keep)


def prune_tucker_layer(layer: TuckerConv, keep_out: torch.Tensor, keep_in: torch.Tensor) -> None:
    """Keep only the output ranks ``keep_out`` and input ranks ``keep_in`` (sorted), in place.

    The core keeps ``core[keep_out][:, keep_in]``, ``out_factor`` its ``keep_out`` columns,
    ``in_factor`` its ``keep_in`` rows (a transduced layer's temporal factors likewise).
    """
    keep_out, keep_in = keep_out.to(layer.core.device), keep_in.to(layer.core.device)
    layer.core = _param(layer.core[keep_out][:, keep_in], layer.core)
    layer.out_factor = _param(layer.out_factor[:, keep_out], layer.out_factor)
    layer.in_factor = _param(layer.in_factor[keep_in], layer.in_factor)
    if hasattr(layer, "temporal_factors"):  # TransducedTuckerConv: (R_out, R_in, K_j) each
        layer.temporal_factors = nn.ParameterList(
            _param(f[keep_out][:, keep_in], f) for f in layer.temporal_factors
        )


def shrink_to_rank(layer: nn.Module, rank: int | Sequence[int]) -> None:
    """Cut a freshly built layer to a pruned checkpoint's rank (its leading components).

    Raises:
        ValueError: ``layer`` is not a CP (int rank) / Tucker (``[R_out, R_in]``) layer the
            rank fits in.
    """
    if isinstance(layer, CPConv) and isinstance(rank, int) and 1 <= rank <= layer.rank:
        if rank < layer.rank:
            prune_layer(layer, torch.arange(rank))
    elif (
        isinstance(layer, TuckerConv)
        and isinstance(rank, (list, tuple))
        and len(rank) == 2
        and all(isinstance(r, int) and 1 <= r <= full for r, full in zip(rank, layer.rank))
    ):
        if tuple(rank) != layer.rank:
            prune_tucker_layer(layer, torch.arange(rank[0]), torch.arange(rank[1]))
    else:
        raise ValueError(
            f"rank {rank!r} does not fit a {type(layer).__name__} of rank {getattr(layer, 'rank', '-')}"
        )


def _keep(magnitude: torch.Tensor, threshold: float, name: str) -> torch.Tensor:
    """Indices with ``magnitude > threshold``; the largest one when none is (with a warning)."""
    keep = torch.nonzero(magnitude > threshold).flatten()
    if len(keep) == 0:
        warnings.warn(
            f"prune: every rank component of layer {name!r} has |weight| <= {threshold}; "
            "keeping the largest one so the layer still exists",
            stacklevel=3,
        )
        keep = magnitude.argmax().reshape(1)
    return keep


def _prune_one(name: str, layer: CPConv | TuckerConv, threshold: float) -> tuple[LayerRanks, float]:
    """Prune one layer in place; its report row and the smallest magnitude it had."""
    before = _num_params(layer)
    if isinstance(layer, CPConv):
        magnitude = layer.weights.detach().abs()
        total, keep = layer.rank, _keep(magnitude, threshold, name)
        if len(keep) < total:
            prune_layer(layer, keep)
        smallest, kept, after = float(magnitude.min()), len(keep), str(layer.rank)
    else:
        out_norms, in_norms = tucker_group_norms(layer.core.detach())
        total = sum(layer.rank)
        keep_out = _keep(out_norms, threshold, f"{name} (output ranks)")
        keep_in = _keep(in_norms, threshold, f"{name} (input ranks)")
        if len(keep_out) + len(keep_in) < total:
            prune_tucker_layer(layer, keep_out, keep_in)
        smallest = float(torch.cat([out_norms, in_norms]).min())
        kept, after = len(keep_out) + len(keep_in), str(layer.rank)
    row = LayerRanks(name, kept, total, before - _num_params(layer), after)
    return row, smallest


def prune(model: nn.Module, threshold: float = 0.0) -> PruneReport:
    """Remove, in place, every rank component whose magnitude is ``<= threshold``.

    A CP component's magnitude is ``|weights[r]|``: factors, and the Psi BatchNorm / PReLU
    channels, shrink; each removed component takes ``C + T + sum K_i + 1`` parameters (plus
    its Psi channels) with it. A Tucker output (input) rank's magnitude is the norm of its
    core slice: the slice and its ``out_factor`` column (``in_factor`` row) go. Outputs are
    unchanged when the removed components are exactly zero, and otherwise change by exactly
    their contribution. A layer (or Tucker mode) whose components would all go keeps its
    largest one (with a warning).

    Returns:
        A :class:`PruneReport` (per-layer kept / total, parameters before / after).
    """
    threshold = _check_threshold(threshold, "threshold")
    layers = rank_layers(model, "prune")
    report = PruneReport(threshold=threshold, params_before=_num_params(model))
    for name, layer in layers:
        row, smallest = _prune_one(name, layer, threshold)
        report.layers.append(row)
        report.smallest_weight = min(report.smallest_weight, smallest)
    report.params_after = _num_params(model)
    return report
