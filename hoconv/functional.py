"""Pure N-dimensional operations on tensors: CP / Tucker convolutions and their dense kernels.

Shapes (``dim`` spatial axes, batch ``N``, ``C`` input and ``T`` output channels):

- input ``x``: ``(N, C, D_0, ..., D_{dim-1})``
- CP: ``weights`` ``(R,)``, ``in_factor`` ``(R, C)``, ``kernel_factors[i]`` ``(R, K_i)``,
  ``out_factor`` ``(T, R)``; dense kernel
  ``W[t, c, k_0, ...] = sum_r weights[r] out[t, r] in[r, c] prod_i kernel_i[r, k_i]``.
- Tucker (channel modes, the bottleneck): ``core`` ``(R_out, R_in, K_0, ...)``,
  ``in_factor`` ``(R_in, C)``, ``out_factor`` ``(T, R_out)``.

Every function here works for any ``dim >= 1``; where PyTorch has no ``convNd``
(``dim > 3``) :func:`conv_nd` decomposes the convolution along its first axis.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hoconv._checks import (
    PaddingArg,
    check_input,
    conv_geometry,
)

_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_AXIS_LETTERS = "".join(
    c for c in string.ascii_letters if c not in "tcrpqz"
)  # einsum letters of axes


def pad_input(x: torch.Tensor, pads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Zero-pad the spatial axes of ``x`` (``pads`` lists (before, after) per spatial axis)."""
    if not any(p for pair in pads for p in pair):
        return x
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad wants the last axis first
    return F.pad(x, flat)


def conv_nd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Dense convolution (cross-correlation) for any number of spatial axes.

    Args:
        x: input ``(N, C, *spatial)``.
        weight: kernel ``(T, C // groups, *K)``.
        bias: ``(T,)`` or None.
        stride: int or per-axis ints.
        padding: int, per-axis ints, ``"same"`` or ``"valid"``.
        dilation: int or per-axis ints.
        groups: number of channel groups.

    Returns:
        ``(N, T, *spatial_out)``.
    """
    dim = weight.dim() - 2
    if dim < 1:
        raise ValueError(
            f"weight must have shape (T, C/groups, *kernel), got {tuple(weight.shape)}"
        )
    stride, pads, dilation = conv_geometry(
        x, weight.shape[1] * groups, tuple(weight.shape[2:]), stride, padding, dilation
    )
    out = _conv_valid(pad_input(x, pads), weight, stride, dilation, groups)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * dim))
    return out


def _conv_valid(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    """Unpadded convolution; beyond 3-D, a sum over the first kernel axis of (dim-1)-D convs."""
    dim = weight.dim() - 2
    if dim in _TORCH_CONV:
        return _TORCH_CONV[dim](x, weight, None, stride, 0, dilation, groups)
    n, c, length = x.shape[:3]
    k, s, d = weight.shape[2], stride[0], dilation[0]
    out_len = (length - d * (k - 1) - 1) // s + 1
    out = None
    for tap in range(k):
        xs = x.narrow(2, tap * d, (out_len - 1) * s + 1)[:, :, ::s]  # (N, C, L_out, *rest)
        xs = xs.movedim(2, 1).reshape(n * out_len, c, *x.shape[3:])  # (N*L_out, C, *rest)
        part = _conv_valid(xs, weight[:, :, tap], stride[1:], dilation[1:], groups)
        out = part if out is None else out + part
    out = out.reshape(n, out_len, *out.shape[1:])  # (N, L_out, T, *rest_out)
    return out.movedim(1, 2)


def contract_channels(
    x: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """1x1 convolution: the mode-0 (channel) product ``x ×_0 matrix`` of the paper's section 3.1.

    Args:
        x: ``(N, C, *spatial)``.
        matrix: ``(O, C)``.
        bias: ``(O,)`` or None.

    Returns:
        ``(N, O, *spatial)``.
    """
    dim = x.dim() - 2
    if dim in _TORCH_CONV:
        return _TORCH_CONV[dim](x, matrix.view(*matrix.shape, *([1] * dim)), bias)
    out = torch.matmul(x.movedim(1, -1), matrix.t())  # (N, *spatial, O)
    if bias is not None:
        out = out + bias
    return out.movedim(-1, 1)


def depthwise_axis_conv(
    x: torch.Tensor,
    factor: torch.Tensor,
    axis: int,
    stride: int = 1,
    pad: tuple[int, int] = (0, 0),
    dilation: int = 1,
) -> torch.Tensor:
    """Depthwise 1-D convolution of every channel along one spatial axis.

    Args:
        x: ``(N, R, *spatial)``.
        factor: ``(R, K)``, one 1-D filter per channel.
        axis: spatial axis index (0 = first spatial axis).
        stride: stride along ``axis``.
        pad: zero padding (before, after) along ``axis``.
        dilation: dilation along ``axis``.

    Returns:
        ``(N, R, *spatial)`` with ``axis`` resized.
    """
    dim = x.dim() - 2
    rank, k = factor.shape
    if pad != (0, 0):
        x = pad_input(x, [pad if a == axis else (0, 0) for a in range(dim)])
    if dim in _TORCH_CONV:
        shape = [rank, 1] + [k if a == axis else 1 for a in range(dim)]
        strides = tuple(stride if a == axis else 1 for a in range(dim))
        dilations = tuple(dilation if a == axis else 1 for a in range(dim))
        return _TORCH_CONV[dim](x, factor.reshape(shape), None, strides, 0, dilations, rank)
    moved = x.movedim(2 + axis, -1).movedim(1, -2)  # (N, *others, R, L)
    lead = moved.shape[:-2]
    out = F.conv1d(
        moved.reshape(-1, rank, moved.shape[-1]),
        factor.unsqueeze(1),
        None,
        stride,
        0,
        dilation,
        rank,
    )
    out = out.reshape(*lead, rank, out.shape[-1])  # (N, *others, R, L_out)
    return out.movedim(-2, 1).movedim(-1, 2 + axis)


def check_cp_factors(
    weights: torch.Tensor,
    in_factor: torch.Tensor,
    kernel_factors: Sequence[torch.Tensor],
    out_factor: torch.Tensor,
) -> int:
    """Check the shapes of a CP kernel's factors against each other; return the rank."""
    if torch.jit.is_tracing():
        return weights.shape[0]
    if weights.dim() != 1:
        raise ValueError(f"weights must have shape (R,), got {tuple(weights.shape)}")
    rank = weights.shape[0]
    if in_factor.dim() != 2 or in_factor.shape[0] != rank:
        raise ValueError(f"in_factor must have shape (R={rank}, C), got {tuple(in_factor.shape)}")
    if out_factor.dim() != 2 or out_factor.shape[1] != rank:
        raise ValueError(f"out_factor must have shape (T, R={rank}), got {tuple(out_factor.shape)}")
    if len(kernel_factors) < 1:
        raise ValueError("kernel_factors must hold one (R, K_i) factor per spatial axis, got none")
    for i, f in enumerate(kernel_factors):
        if f.dim() != 2 or f.shape[0] != rank:
            raise ValueError(
                f"kernel_factors[{i}] must have shape (R={rank}, K), got {tuple(f.shape)}"
            )
    return rank


def cp_conv(
    x: torch.Tensor,
    weights: torch.Tensor,
    in_factor: torch.Tensor,
    kernel_factors: Sequence[torch.Tensor],
    out_factor: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """CP (Kruskal) convolution, the paper's eq. 6: 1x1 to rank R, a 1-D conv per axis, 1x1 back.

    Equals ``conv_nd(x, cp_to_dense(weights, in_factor, kernel_factors, out_factor), bias,
    stride, padding, dilation)`` for any number of spatial axes.

    Returns:
        ``(N, T, *spatial_out)``.
    """
    check_cp_factors(weights, in_factor, kernel_factors, out_factor)
    kernel_size = tuple(f.shape[1] for f in kernel_factors)
    stride, pads, dilation = conv_geometry(
        x, in_factor.shape[1], kernel_size, stride, padding, dilation
    )
    h = contract_channels(x, in_factor)  # (N, R, *spatial)
    for axis, factor in enumerate(kernel_factors):
        h = depthwise_axis_conv(h, factor, axis, stride[axis], pads[axis], dilation[axis])
    return contract_channels(h, out_factor * weights, bias)  # (N, T, *spatial_out)


def cp_to_dense(
    weights: torch.Tensor,
    in_factor: torch.Tensor,
    kernel_factors: Sequence[torch.Tensor],
    out_factor: torch.Tensor,
) -> torch.Tensor:
    """Reconstruct the dense kernel ``(T, C, *K)`` of a CP convolution.

    One GEMM: ``(U_out diag(w)) @ KR`` with ``KR`` the row-wise Khatri-Rao product of the
    input and kernel factors, ``(R, C * prod(K))``. (A one-shot ``einsum`` keeps the rank axis
    to the end and materialises a ``(T, R, C, *K)`` intermediate: 327 MB and seconds at
    R = 370, C = 64, T = 128, 3x3x3.)
    """
    check_cp_factors(weights, in_factor, kernel_factors, out_factor)
    rank = in_factor.shape[0]
    rows = in_factor  # (R, C)
    for factor in kernel_factors:
        rows = (rows.unsqueeze(-1) * factor.unsqueeze(1)).reshape(rank, -1)  # (R, C * K_0 ...)
    dense = (out_factor * weights) @ rows  # (T, C * prod(K))
    return dense.view(
        out_factor.shape[0], in_factor.shape[1], *(f.shape[1] for f in kernel_factors)
    )


def check_tucker_factors(
    core: torch.Tensor, in_factor: torch.Tensor, out_factor: torch.Tensor
) -> None:
    """Check the shapes of a (channel-mode) Tucker kernel's core and factors."""
    if torch.jit.is_tracing():
        return
    if core.dim() < 3:
        raise ValueError(f"core must have shape (R_out, R_in, *kernel), got {tuple(core.shape)}")
    if in_factor.dim() != 2 or in_factor.shape[0] != core.shape[1]:
        raise ValueError(
            f"in_factor must have shape (R_in={core.shape[1]}, C), got {tuple(in_factor.shape)}"
        )
    if out_factor.dim() != 2 or out_factor.shape[1] != core.shape[0]:
        raise ValueError(
            f"out_factor must have shape (T, R_out={core.shape[0]}), got {tuple(out_factor.shape)}"
        )


def tucker_conv(
    x: torch.Tensor,
    core: torch.Tensor,
    in_factor: torch.Tensor,
    out_factor: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingArg = 0,
    dilation: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Tucker convolution, the paper's eq. 4: 1x1 to R_in, a small dense conv with the core, 1x1 to T.

    Returns:
        ``(N, T, *spatial_out)``.
    """
    check_tucker_factors(core, in_factor, out_factor)
    check_input(x, in_factor.shape[1], core.dim() - 2)
    h = contract_channels(x, in_factor)  # (N, R_in, *spatial)
    h = conv_nd(h, core, None, stride, padding, dilation)  # (N, R_out, *spatial_out)
    return contract_channels(h, out_factor, bias)


def tucker_to_dense(
    core: torch.Tensor, in_factor: torch.Tensor, out_factor: torch.Tensor
) -> torch.Tensor:
    """Reconstruct the dense kernel ``(T, C, *K)`` of a Tucker convolution."""
    check_tucker_factors(core, in_factor, out_factor)
    letters = _AXIS_LETTERS[: core.dim() - 2]
    return torch.einsum(f"tp,pq{letters},qc->tc{letters}", out_factor, core, in_factor)
