"""Ranks of factorized convolutions, and their parameter and operation counts.

A rank is given as an int (the rank itself), a float in (0, ...) (a fraction of the dense
layer's parameter count) or ``"same"`` (the dense layer's parameter count, as the paper's
ResNet-18). Counts are exact: a CP layer has ``R * (C + T + sum K_i) + R`` factor and
weight parameters (plus ``T`` for a bias); MACs are multiply-accumulates of the forward pass
in the order it runs, FLOPs are ``2 * MACs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hoconv._checks import prod
from hoconv._conv_base import FactorizedConv

RankArg = int | float | str


def _fraction(rank: RankArg) -> float | None:
    """The fraction of dense parameters a rank asks for, or None for an explicit int rank."""
    if isinstance(rank, bool):
        raise TypeError(f"rank must be an int, a float or 'same', got {rank!r}")
    if isinstance(rank, int):
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        return None
    if isinstance(rank, float):
        if not (rank > 0 and math.isfinite(rank)):
            raise ValueError(
                f"a float rank is a fraction of the dense parameters and must be > 0, got {rank}"
            )
        return rank
    if rank == "same":
        return 1.0
    raise ValueError(
        f"rank must be an int, a float (fraction of dense parameters) or 'same', got {rank!r}"
    )


def dense_parameter_count(in_channels: int, out_channels: int, kernel_size: Sequence[int]) -> int:
    """Parameters of a dense convolution kernel (no bias)."""
    return in_channels * out_channels * prod(kernel_size)


def cp_parameter_count(
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    rank: int,
    *,
    bias: bool = False,
) -> int:
    """Parameters of a CP convolution: ``R * (C + T + sum K_i) + R`` (+ ``T`` with a bias)."""
    return (
        rank * (in_channels + out_channels + sum(kernel_size))
        + rank
        + (out_channels if bias else 0)
    )


def tucker_parameter_count(
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    ranks: tuple[int, int],
    *,
    bias: bool = False,
) -> int:
    """Parameters of a channel-mode Tucker convolution (+ ``T`` with a bias)."""
    r_out, r_in = ranks
    return (
        out_channels * r_out
        + in_channels * r_in
        + r_out * r_in * prod(kernel_size)
        + (out_channels if bias else 0)
    )


def cp_rank(rank: RankArg, in_channels: int, out_channels: int, kernel_size: Sequence[int]) -> int:
    """Resolve a CP rank argument to an int (at least 1)."""
    fraction = _fraction(rank)
    if fraction is None:
        return int(rank)
    target = fraction * dense_parameter_count(in_channels, out_channels, kernel_size)
    per_rank = in_channels + out_channels + sum(kernel_size) + 1
    return max(1, round(target / per_rank))


def tucker_ranks(
    rank: RankArg | Sequence[int], in_channels: int, out_channels: int, kernel_size: Sequence[int]
) -> tuple[int, int]:
    """Resolve a Tucker rank argument to ``(R_out, R_in)``, clipped to the mode sizes.

    An int ``R`` means ``(R, R)``; a fraction or ``"same"`` keeps ``R_out / R_in = T / C`` and
    solves for the parameter count.
    """
    if isinstance(rank, (tuple, list)):
        if len(rank) != 2:
            raise ValueError(f"a Tucker rank tuple must be (R_out, R_in), got {rank!r}")
        r_out, r_in = (_check_int_rank(r) for r in rank)
    else:
        fraction = _fraction(rank)
        if fraction is None:
            r_out = r_in = int(rank)
        else:
            kernel = prod(kernel_size)
            t, c = out_channels, in_channels
            target = fraction * dense_parameter_count(c, t, kernel_size)
            # alpha^2 * T*C*K + alpha * (T^2 + C^2) - target = 0 with R_out = alpha T, R_in = alpha C
            a, b = t * c * kernel, t * t + c * c
            alpha = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a)
            r_out, r_in = _closest_tucker_ranks(alpha, t, c, kernel, target)
    return max(1, min(r_out, out_channels)), max(1, min(r_in, in_channels))


def _closest_tucker_ranks(
    alpha: float, t: int, c: int, kernel: int, target: float
) -> tuple[int, int]:
    """Integer ``(R_out, R_in)`` near ``(alpha T, alpha C)`` whose parameter count is closest to target."""
    best = (max(1, round(alpha * t)), max(1, round(alpha * c)))
    best_gap = abs(t * best[0] + c * best[1] + best[0] * best[1] * kernel - target)
    for r_in in range(max(1, math.floor(0.9 * alpha * c)), min(c, math.ceil(1.1 * alpha * c)) + 1):
        r_out = min(t, max(1, round((target - c * r_in) / (t + r_in * kernel))))
        gap = abs(t * r_out + c * r_in + r_out * r_in * kernel - target)
        if gap < best_gap:
            best, best_gap = (r_out, r_in), gap
    return best


def _check_int_rank(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Tucker ranks must be ints >= 1, got {value!r}")
    return value


def parameter_count(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of a module (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one convolution-like leaf module, from its input and output shapes."""
    if isinstance(module, FactorizedConv):  # CP, Tucker and their transduced kinds
        return module.macs(tuple(inputs.shape))
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def macs(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of ``module`` on an input of ``input_shape``.

    Counts convolutions (dense, CP, Tucker) and linear layers, by running the module on a
    meta-device input (no memory, no compute) with hooks on its leaves.
    """
    total = 0

    def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _conv_macs(mod, args[0], output)

    counted = (FactorizedConv, nn.modules.conv._ConvNd, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, counted)]
    try:
        param = next(module.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        with torch.no_grad():
            _run_on_meta(module, input_shape, dtype)
    finally:
        for h in handles:
            h.remove()
    return total


def _run_on_meta(module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype) -> None:
    """Run a copy of ``module`` on a meta tensor (the original keeps its device and values)."""
    import copy

    with torch.device("meta"):
        x = torch.empty(*input_shape, dtype=dtype)
    clone = copy.deepcopy(module).to("meta")
    # hooks are copied with the module, so they fire on the clone
    clone.eval()(x)


def flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass: ``2 * macs``."""
    return 2 * macs(module, input_shape)
