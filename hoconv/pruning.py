"""Automatic rank selection (paper section 4): lasso on the CP weights, soft-thresholding, pruning.

The CP layers' ``weights`` vector (the paper's lambda) scales each rank component. Training
with ``loss + gamma * lasso_penalty(model)`` and, after each ``optimizer.step()``,
``proximal_step(model, lr * gamma)`` (the proximal operator of the L1 norm, a soft-threshold)
drives the weights of unneeded components to exactly zero; :func:`prune` then removes those
components physically, so parameters and FLOPs really drop.

Only CP layers carry a lambda: Tucker layers are neither penalised nor pruned. The penalty is
scale-ambiguous (``weights[r] / a`` with ``out_factor[:, r] * a`` is the same layer), so
penalising ``|weights|`` alone lets gradient descent move magnitude into the factors; the
proximal step still zeroes components, and :func:`normalize_cp_weights` (exact) moves the
factor norms into ``weights`` so that ``|weights[r]|`` is the component's magnitude; call it
before lasso training (``from_dense`` layers are already normalised).

Optimizer state refers to the old parameter tensors: create a new optimizer after ``prune``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hoconv.layers import BatchNorm, CPConv


def cp_layers(model: nn.Module) -> list[tuple[str, CPConv]]:
    """The CP convolutions of a model, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, CPConv)]


def _require_cp(model: nn.Module, what: str) -> list[tuple[str, CPConv]]:
    layers = cp_layers(model)
    if not layers:
        raise ValueError(
            f"{what} needs CP layers (CPConv): the model has none (Tucker layers are not "
            "penalised or pruned; use hoconv.factorize(model, kind='cp'))"
        )
    return layers


def lasso_penalty(model: nn.Module) -> torch.Tensor:
    """The paper's rank-selection term: ``sum_l sum_r |weights_l[r]|`` over every CP layer.

    Add ``gamma * lasso_penalty(model)`` to the loss; it is differentiable (sub-gradient at 0).
    """
    layers = _require_cp(model, "lasso_penalty")
    return torch.stack([layer.weights.abs().sum() for _, layer in layers]).sum()


def _check_threshold(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return float(value)


def _soft_threshold_(w: torch.Tensor, threshold: float | torch.Tensor) -> int:
    """``w <- sign(w) * max(|w| - threshold, 0)`` in place; returns the count of exact zeros."""
    w.copy_(torch.sign(w) * (w.abs() - threshold).clamp_min(0))
    return int((w == 0).sum())


@torch.no_grad()
def proximal_step(model: nn.Module, threshold: float) -> int:
    """Soft-threshold every CP ``weights``: ``sign(w) * max(|w| - threshold, 0)``.

    Call after ``optimizer.step()`` with ``threshold = lr * gamma`` (proximal gradient for the
    lasso): weights reach exactly zero instead of oscillating around it.

    Returns:
        The number of weights that are exactly zero afterwards, over all CP layers.
    """
    threshold = _check_threshold(threshold, "threshold")
    zeros = 0
    for _, layer in _require_cp(model, "proximal_step"):
        zeros += _soft_threshold_(layer.weights, threshold)
    return zeros


def _weight_threshold(weights: nn.Parameter, optimizer: torch.optim.Optimizer, gamma: float):
    """``lr * gamma`` divided by Adam's per-weight step scale ``sqrt(v_hat) + eps`` when known.

    Adam's step on a weight is ``lr * m_hat / (sqrt(v_hat) + eps)``: the proximal operator of
    ``gamma * |w|`` in that preconditioned metric is a soft-threshold at
    ``lr * gamma / (sqrt(v_hat) + eps)``. With a plain ``lr * gamma`` Adam's bounded (~lr)
    steps would undo the shrinkage whatever gamma is, or any gamma > 1 would zero every weight.
    """
    for group in optimizer.param_groups:
        if any(p is weights for p in group["params"]):
            state = optimizer.state.get(weights, {})
            if "exp_avg_sq" not in state:  # SGD (or no step yet): the plain proximal step
                return group["lr"] * gamma
            step = float(state["step"])
            v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** step)  # (R,)
            return group["lr"] * gamma / (v_hat.sqrt() + group["eps"])
    return 0.0  # not trained (e.g. --phase temporal): leave it


@torch.no_grad()
def optimizer_proximal_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, gamma: float
) -> int:
    """The lasso's proximal step matched to the optimizer that just stepped (Adam or SGD).

    Call after ``optimizer.step()``; weights of unneeded components reach exactly zero.

    Returns:
        The number of weights that are exactly zero afterwards, over all CP layers.
    """
    gamma = _check_threshold(gamma, "gamma")
    zeros = 0
    for _, layer in _require_cp(model, "optimizer_proximal_step"):
        w = layer.weights
        zeros += _soft_threshold_(w, _weight_threshold(w, optimizer, gamma))
    return zeros


@torch.no_grad()
def normalize_cp_weights(model: nn.Module) -> None:
    """Move factor norms into ``weights`` without changing any output (exact rescaling).

    ``out_factor`` columns always get unit norm; ``in_factor`` and ``kernel_factors`` rows
    too when the layer has no Psi (a rank-space BatchNorm makes their scale matter in eval).
    """
    for _, layer in _require_cp(model, "normalize_cp_weights"):
        factors = [(layer.out_factor, 0)]
        if layer.psi is None:
            factors += [(layer.in_factor, 1), *((f, 1) for f in layer.kernel_factors)]
        for factor, dim in factors:
            norms = torch.linalg.vector_norm(factor, dim=dim)  # (R,)
            norms = torch.where(norms > 0, norms, torch.ones_like(norms))
            factor.div_(norms.unsqueeze(dim))
            layer.weights.mul_(norms)


@dataclass
class LayerRanks:
    """Kept / total rank components of one CP layer after pruning."""

    name: str
    kept: int
    total: int
    params_removed: int


@dataclass
class PruneReport:
    """Result of :func:`prune`: per-layer ranks and whole-model parameter counts."""

    threshold: float
    layers: list[LayerRanks] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    smallest_weight: float = float("inf")

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)


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


def prune(model: nn.Module, threshold: float = 0.0) -> PruneReport:
    """Remove, in place, every CP rank component whose ``|weights[r]| <= threshold``.

    Factors, and the Psi BatchNorm / PReLU channels, shrink; each removed component takes
    ``C + T + sum K_i + 1`` parameters (plus its Psi channels) with it. Outputs are unchanged
    when the removed weights are exactly zero, and otherwise change by exactly the removed
    components' contribution. A layer whose components would all go keeps its largest one
    (with a warning).

    Returns:
        A :class:`PruneReport` (per-layer kept / total, parameters before / after).
    """
    threshold = _check_threshold(threshold, "threshold")
    layers = _require_cp(model, "prune")
    report = PruneReport(threshold=threshold, params_before=_num_params(model))
    for name, layer in layers:
        total = layer.rank
        magnitude = layer.weights.detach().abs()
        report.smallest_weight = min(report.smallest_weight, float(magnitude.min()))
        keep = torch.nonzero(magnitude > threshold).flatten()
        if len(keep) == 0:
            warnings.warn(
                f"prune: every rank component of layer {name!r} has |weight| <= {threshold}; "
                "keeping the largest one so the layer still exists",
                stacklevel=2,
            )
            keep = magnitude.argmax().reshape(1)
        before = _num_params(layer)
        if len(keep) < total:
            prune_layer(layer, keep)
        report.layers.append(LayerRanks(name, len(keep), total, before - _num_params(layer)))
    report.params_after = _num_params(model)
    return report


def prune_hint(report: PruneReport) -> str | None:
    """What to change when :func:`prune` removed nothing, or None when it removed something.

    Names the smallest ``|weight|`` seen, so the user can pick ``--threshold`` or train longer
    / with a larger lasso.
    """
    if report.kept < report.total:
        return None
    return (
        f"nothing pruned: the smallest |weight| is {report.smallest_weight:.4g} > threshold "
        f"{report.threshold:g}. Raise --threshold (to at least {report.smallest_weight:.4g}, "
        "which changes outputs), or train with a larger --lasso, more epochs, or --proximal "
        "(the proximal step shrinks each weight by lr * gamma per step)"
    )


def rank_report_table(report: PruneReport) -> str:
    """A markdown table of a :class:`PruneReport` (one row per CP layer, then the total)."""
    lines = [
        f"Pruned at |weight| <= {report.threshold:g}: {report.params_before} -> "
        f"{report.params_after} parameters; smallest |weight| {report.smallest_weight:.4g}",
        "",
        "| layer | kept | total | kept % | parameters removed |",
        "|---|---:|---:|---:|---:|",
    ]
    for layer in report.layers:
        share = 100.0 * layer.kept / layer.total
        lines.append(
            f"| {layer.name} | {layer.kept} | {layer.total} | {share:.1f} | {layer.params_removed} |"
        )
    removed = sum(layer.params_removed for layer in report.layers)
    share = 100.0 * report.kept / max(report.total, 1)
    lines.append(f"| **total** | {report.kept} | {report.total} | {share:.1f} | {removed} |")
    return "\n".join(lines) + "\n"


def plot_rank_report(report: PruneReport, path: str | Path) -> Path:
    """Bar plot of kept / total ranks per layer (like the paper's figure 9), written as an image.

    Uses matplotlib's Agg canvas directly (no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not report.layers:
        raise ValueError("the report has no layers to plot")
    path = Path(path)
    names = [layer.name for layer in report.layers]
    xs = range(len(names))
    fig = Figure(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(xs, [layer.total for layer in report.layers], color="#cccccc", label="total rank")
    ax.bar(xs, [layer.kept for layer in report.layers], color="#1f77b4", label="kept rank")
    ax.set_xticks(list(xs), names, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("rank components")
    ax.set_title(
        f"Automatic rank selection: {report.kept}/{report.total} components kept, "
        f"{report.params_before - report.params_after} parameters removed"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
