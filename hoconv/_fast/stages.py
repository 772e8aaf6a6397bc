"""Fast CP convolution with rank-space stages (Psi of Algorithm 1: BatchNorm / activation).

With a non-linear Psi after each 1-D convolution the spatial chain cannot be fused into one
depthwise pass, but the layout still can stay channels-last from the first GEMM to the last:
each 1-D depthwise convolution runs as a :class:`DepthwiseFunction` (hand-written backward),
Psi runs on the ``(positions, R)`` matrix view (BatchNorm / ReLU / PReLU act per channel,
and PyTorch's 2-D BatchNorm is much faster than its channels-last 5-D one), and the GEMMs read and write the layouts of :mod:`hoconv._fast.cp`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from hoconv._checks import (
    PaddingArg,
    conv_geometry,
)
from hoconv._fast.cp import channels_in
from hoconv._fast.depthwise import (
    Block,
    block_forward,
    block_input_grad,
    block_out_spatial,
    block_weight_grad,
)
from hoconv._fast.rows import channels_last
from hoconv.functional import check_cp_factors


class DepthwiseFunction(torch.autograd.Function):
    """Depthwise conv of channels-last ``h`` (N, *S, R) over one block of axes."""

    @staticmethod
    def forward(ctx, h, kernel, block):
        spatial = tuple(h.shape[1:-1])
        ctx.block, ctx.spatial = block, spatial
        ctx.save_for_backward(h, kernel)
        return block_forward(h.contiguous(), kernel, spatial, block, _factors(kernel, block))

    @staticmethod
    def backward(ctx, grad):
        h, kernel = ctx.saved_tensors
        need_h, need_k = ctx.needs_input_grad[:2]
        grad_k = (
            block_weight_grad(grad, h.contiguous(), kernel, ctx.spatial, ctx.block)
            if need_k
            else None
        )
        grad_h = None
        if need_h:
            factors = _factors(kernel, ctx.block)
            grad_h = block_input_grad(grad, kernel, ctx.spatial, ctx.block, factors)
        return grad_h, grad_k, None


def _factors(kernel: torch.Tensor, block: Block) -> tuple[torch.Tensor, ...] | None:
    """A one-axis block's kernel ``(R, K)`` is its own (only) factor: the native kernel runs it."""
    return (kernel.detach(),) if block.stop - block.start == 1 else None


def _project_out(
    h: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """Differentiable 1x1 conv of channels-last ``h`` (N, *S, R) into ``like``'s layout."""
    if channels_last(like):
        return F.linear(h, matrix, bias).movedim(-1, 1)  # (N, *S, T) -> (N, T, *S) view
    n, rank = h.shape[0], h.shape[-1]
    hv = h.reshape(n, -1, rank).transpose(1, 2)  # (N, R, P)
    weight = matrix.expand(n, *matrix.shape)  # (N, T, R)
    out = torch.bmm(weight, hv) if bias is None else torch.baddbmm(bias.view(1, -1, 1), weight, hv)
    return out.view(n, matrix.shape[0], *h.shape[1:-1])  # (N, T, *S)


def cp_conv_stages(
    x: torch.Tensor,
    weights: torch.Tensor,
    in_factor: torch.Tensor,
    kernel_factors: Sequence[torch.Tensor],
    out_factor: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | Sequence[int],
    padding: PaddingArg,
    dilation: int | Sequence[int],
    stages: Sequence[Callable[[torch.Tensor], torch.Tensor]],
) -> torch.Tensor:
    """CP convolution with ``stages[i]`` applied to the rank-space activation after axis i.

    ``stages[i]`` receives the activation as an ``(N * prod(spatial), R)`` matrix (one row
    per position, channels as columns) and must return the same shape: per-channel modules
    such as BatchNorm, ReLU and PReLU give exactly what they give on ``(N, R, *spatial)``
    (same statistics, same running averages), without any layout change. Same result as the
    layer's plain path (1x1, then per axis: 1-D depthwise conv and Psi, then 1x1 with the
    weights folded into ``out_factor`` and the bias).

    Returns:
        ``(N, T, *spatial_out)``.
    """
    check_cp_factors(weights, in_factor, kernel_factors, out_factor)
    dim = len(kernel_factors)
    if len(stages) != dim:
        raise ValueError(
            f"stages must hold one callable per spatial axis ({dim}), got {len(stages)}"
        )
    kernel = tuple(f.shape[1] for f in kernel_factors)
    stride, pads, dilation = conv_geometry(x, in_factor.shape[1], kernel, stride, padding, dilation)
    h = channels_in(x, in_factor)  # (N, *S, R)
    for axis, (factor, stage) in enumerate(zip(kernel_factors, stages)):
        block = Block(
            axis, axis + 1, kernel[axis : axis + 1], stride[axis : axis + 1],
            pads[axis : axis + 1], dilation[axis : axis + 1],
        )  # fmt: skip
        h = DepthwiseFunction.apply(h, factor, block)  # (N, *S', R)
        rows = h.reshape(-1, h.shape[-1])  # (N * prod(S'), R): channels as columns
        h = stage(rows).view(h.shape)  # per-channel Psi on a plain 2-D input, no layout change
    return _project_out(h.contiguous(), out_factor * weights, bias, x)


__all__ = ["DepthwiseFunction", "block_out_spatial", "cp_conv_stages"]
