"""Fused schedule of the fast CP convolution: the whole layer in one native pass each way.

For stride-1 2-D / 3-D float32 layers on CPU, :func:`hoconv._fast.native.fused_forward` and
:func:`~hoconv._fast.native.fused_backward` walk each sample frame by frame along its first
spatial axis: the 1x1 convs are register-tiled GEMMs on one frame, the separable depthwise
passes run on blocks of 64 ranks, and every rank-space intermediate stays in a per-thread
workspace of a few frames (in L2 / L3). Only the layer's own tensors go through memory: ``x``
(read by the forward, and by the backward for the recompute and for ``grad_A``), ``out``,
``grad_out`` and ``grad_x``. The backward recomputes the rank-space activations instead of
storing them (one extra ``A x`` GEMM), so a layer's training memory is its inputs, outputs
and a few MB of workspace per thread (two rings of ``span`` rank-space frames).

Threads take whole samples, or ranges of a sample's output frames when there are fewer
samples than threads (the backward then computes the input frames two ranges share in two
parts and sums them); each sums its own parameter gradients.
"""

from __future__ import annotations

import torch

from hoconv._fast import native
from hoconv._fast.depthwise import out_len
from hoconv._fast.rows import empty_like_layout


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` (N, C, *S) contiguous in its own layout (channels-last stays channels-last)."""
    if t.is_contiguous() or t.movedim(1, -1).is_contiguous():
        return t
    return t.contiguous()


class FusedFunction(torch.autograd.Function):
    """``out = B · sep_conv(A · x) + bias`` with the factors as separate inputs.

    Inputs: ``x`` (N, C, *S), ``in_factor`` ``A`` (R, C), ``out_matrix`` ``B`` (T, R), bias
    (T,) or None, ``geometry`` = (leading pads, dilation, output spatial shape), then one
    kernel factor (R, K_i) per spatial axis. Gradients flow to all of them.
    """

    @staticmethod
    def forward(ctx, x, in_factor, out_matrix, bias, geometry, *factors):
        before, dilation, out_spatial = geometry
        ctx.geometry, ctx.has_bias = geometry, bias is not None
        ctx.save_for_backward(x, in_factor, out_matrix, *factors)
        out = empty_like_layout(x, x.shape[0], out_matrix.shape[0], *out_spatial)
        return native.fused_forward(
            x, in_factor.t(), factors, out_matrix, bias, out, before, dilation
        )

    @staticmethod
    def backward(ctx, grad_out):
        x, in_factor, out_matrix, *factors = ctx.saved_tensors
        before, dilation, _ = ctx.geometry
        grad_out = _contiguous(grad_out)
        grad_x, grad_in, grad_matrix, grad_factors, grad_bias = native.fused_backward(
            grad_out, x, in_factor, tuple(factors), out_matrix, before, dilation
        )
        if not (ctx.has_bias and ctx.needs_input_grad[3]):
            grad_bias = None
        return grad_x, grad_in, grad_matrix, grad_bias, None, *grad_factors


def fused_conv(x, in_factor, kernel_factors, out_matrix, bias, pads, dilation) -> torch.Tensor:
    """The stride-1 CP conv through :class:`FusedFunction` (rank already a multiple of 16)."""
    out_spatial = tuple(
        out_len(size, f.shape[1], 1, pad, d)
        for size, f, pad, d in zip(x.shape[2:], kernel_factors, pads, dilation)
    )
    geometry = (tuple(a for a, _ in pads), tuple(dilation), out_spatial)
    return FusedFunction.apply(_contiguous(x), in_factor, out_matrix, bias, geometry,
                               *kernel_factors)  # fmt: skip


__all__ = ["FusedFunction", "fused_conv"]
