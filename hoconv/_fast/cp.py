"""Fast CP convolution: channels-last GEMMs around fused depthwise blocks, hand-written backward.

Layout plan (no explicit permute copies of activations):

- ``x`` ``(N, C, *S)`` -> ``h0 = x^T A^T`` : one GEMM whose result is channels-last
  ``(N, *S, R)`` (BLAS reads the transposed operand in place);
- the spatial part: one oneDNN depthwise conv per block of <= 3 axes with the outer product of
  the block's kernel factors (:mod:`hoconv._fast.depthwise`), channels-last in and out;
- ``out = (U_out diag(w)) h^T + b``: one GEMM reading channels-last, writing channels-first.

The backward (:class:`_CPConvFunction`) mirrors it with 4 GEMMs and the depthwise gradients
of :func:`~hoconv._fast.depthwise.block_backward`. Small parameter-only ops (folding the
weights into ``out_factor``, the outer product of the kernel factors) stay in autograd.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hoconv._checks import PaddingArg, as_tuple, check_input, output_size, resolve_padding
from hoconv._fast.depthwise import (
    Block,
    block_backward,
    block_forward,
    block_out_spatial,
    make_blocks,
)
from hoconv.functional import check_cp_factors


def block_kernel(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Outer product of per-axis factors ``(R, K_i)`` -> depthwise kernel ``(R, *K)``."""
    kernel = factors[0]
    for f in factors[1:]:
        kernel = kernel.unsqueeze(-1) * f.view(f.shape[0], *([1] * (kernel.dim() - 1)), f.shape[1])
    return kernel


def channels_in(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """1x1 conv from channels-first ``x`` (N, C, *S) to channels-last ``(N, *S, O)``; matrix (O, C)."""
    n, c = x.shape[:2]
    xt = _transposed(x)  # (N, P, C)
    out = torch.matmul(xt, matrix.t())  # (N, P, O)
    return out.view(n, *x.shape[2:], matrix.shape[0])


def channels_out(h: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1x1 conv from channels-last ``h`` (N, *S, R) to channels-first ``(N, O, *S)``; matrix (O, R)."""
    n, rank = h.shape[0], h.shape[-1]
    hv = h.reshape(n, -1, rank).transpose(1, 2)  # (N, R, P)
    if bias is None:
        out = torch.matmul(matrix, hv)  # (N, O, P)
    else:
        out = torch.baddbmm(bias.view(1, -1, 1), matrix.expand(n, *matrix.shape), hv)
    return out.view(n, matrix.shape[0], *h.shape[1:-1])


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, *S) as an (N, P, C) matrix batch, without a copy when x is contiguous."""
    n, c = x.shape[:2]
    moved = x.movedim(1, -1)  # (N, *S, C)
    if moved.is_contiguous():  # channels-last input
        return moved.view(n, -1, c)
    return x.reshape(n, c, -1).transpose(1, 2)  # (N, P, C)


class _CPConvFunction(torch.autograd.Function):
    """``out = B · dw_blocks(A · x) + bias`` with a hand-written backward."""

    @staticmethod
    def forward(ctx, x, in_factor, out_matrix, bias, blocks, save_hidden, *kernels):
        spatial = tuple(x.shape[2:])
        hidden = [channels_in(x, in_factor)]  # (N, *S, R)
        shapes = [spatial]
        for block, kernel in zip(blocks, kernels):
            hidden.append(block_forward(hidden[-1], kernel, shapes[-1], block))
            shapes.append(block_out_spatial(shapes[-1], block))
        out = channels_out(hidden[-1], out_matrix, bias)  # (N, T, *S_out)
        ctx.blocks, ctx.shapes, ctx.save_hidden = blocks, shapes, save_hidden
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, in_factor, out_matrix, *kernels, *(hidden if save_hidden else ()))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        blocks, shapes = ctx.blocks, ctx.shapes
        x, in_factor, out_matrix, *rest = ctx.saved_tensors
        kernels = rest[: len(blocks)]
        hidden = (
            rest[len(blocks) :]
            if ctx.save_hidden
            else _recompute(x, in_factor, blocks, shapes, kernels)
        )
        needs = ctx.needs_input_grad
        n, rank = x.shape[0], in_factor.shape[0]
        g = grad_out.reshape(n, out_matrix.shape[0], -1)  # (N, T, P_out)
        grad_bias = g.sum((0, 2)) if ctx.has_bias and needs[3] else None
        grad_out_matrix = None
        if needs[2]:
            grad_out_matrix = torch.bmm(g, hidden[-1].reshape(n, -1, rank)).sum(0)  # (T, R)
        grad_kernels = [None] * len(blocks)
        grad_x = grad_in_factor = None
        if any(needs[:2]) or any(needs[6:]):
            gh = torch.matmul(g.transpose(1, 2), out_matrix)  # (N, P_out, R)
            gh = gh.view(n, *shapes[-1], rank)
            for i in reversed(range(len(blocks))):
                need_in = i > 0 or any(needs[:2])
                gh_in, grad_kernels[i] = block_backward(
                    gh, hidden[i], kernels[i], shapes[i], blocks[i], need_in, needs[6 + i]
                )
                gh = gh_in
            if needs[1]:
                grad_in_factor = torch.bmm(
                    gh.reshape(n, -1, rank).transpose(1, 2), _transposed(x)
                ).sum(0)  # (R, C)
            if needs[0]:
                gx = torch.matmul(in_factor.t(), gh.reshape(n, -1, rank).transpose(1, 2))
                grad_x = gx.view(x.shape)  # (N, C, *S)
        return (grad_x, grad_in_factor, grad_out_matrix, grad_bias, None, None, *grad_kernels)


def _recompute(x, in_factor, blocks, shapes, kernels):
    hidden = [channels_in(x, in_factor)]
    for block, kernel, spatial in zip(blocks, kernels, shapes):
        hidden.append(block_forward(hidden[-1], kernel, spatial, block))
    return hidden


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
    save_hidden: bool | None = None,
) -> torch.Tensor:
    """Fast CP convolution, same contract and result as :func:`hoconv.functional.cp_conv`.

    Args:
        x: ``(N, C, *spatial)``.
        weights: ``(R,)``.
        in_factor: ``(R, C)``.
        kernel_factors: one ``(R, K_i)`` per spatial axis.
        out_factor: ``(T, R)``.
        bias: ``(T,)`` or None.
        stride: int or per axis.
        padding: int, per axis, ``"same"`` or ``"valid"``.
        dilation: int or per axis.
        save_hidden: keep the rank-space activations for the backward (faster) or recompute
            them there (less memory). Default: keep them unless they are larger than the input.

    Returns:
        ``(N, T, *spatial_out)``.
    """
    rank = check_cp_factors(weights, in_factor, kernel_factors, out_factor)
    dim = len(kernel_factors)
    check_input(x, in_factor.shape[1], dim)
    kernel = tuple(f.shape[1] for f in kernel_factors)
    stride = as_tuple(stride, dim, "stride")
    dilation = as_tuple(dilation, dim, "dilation")
    pads = resolve_padding(padding, kernel, stride, dilation)
    for axis in range(dim):
        output_size(x.shape[2 + axis], kernel[axis], stride[axis], pads[axis], dilation[axis], axis)
    blocks = make_blocks(kernel, stride, pads, dilation)
    kernels = [block_kernel(kernel_factors[b.start : b.stop]) for b in blocks]
    if save_hidden is None:
        save_hidden = rank <= in_factor.shape[1]
    return _CPConvFunction.apply(
        x, in_factor, out_factor * weights, bias, blocks, save_hidden, *kernels
    )


__all__ = ["Block", "block_kernel", "channels_in", "channels_out", "cp_conv"]
