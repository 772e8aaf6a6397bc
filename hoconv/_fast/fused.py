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


# The fused pass as two torch.library ops (registered once, at import), so that torch.compile
# and torch.export keep it in their graphs: each has a fake kernel (output shapes and layouts
# only) and the forward's autograd is the backward op.
@torch.library.custom_op("hoconv::cp_fused", mutates_args=(), device_types="cpu")
def cp_fused(
    x: torch.Tensor,
    in_factor: torch.Tensor,
    out_matrix: torch.Tensor,
    bias: torch.Tensor | None,
    factors: list[torch.Tensor],
    before: list[int],
    dilation: list[int],
    out_spatial: list[int],
) -> torch.Tensor:
    """``out = B · sep_conv(A · x) + bias``: x (N, C, *S) contiguous in either layout, A (R, C),
    B (T, R), bias (T,) or None, one kernel factor (R, K_i) per spatial axis."""
    out = empty_like_layout(x, x.shape[0], out_matrix.shape[0], *out_spatial)
    return native.fused_forward(x, in_factor.t(), tuple(factors), out_matrix, bias, out,
                                tuple(before), tuple(dilation))  # fmt: skip


@cp_fused.register_fake
def _cp_fused_fake(x, in_factor, out_matrix, bias, factors, before, dilation, out_spatial):
    return empty_like_layout(x, x.shape[0], out_matrix.shape[0], *out_spatial)


@torch.library.custom_op("hoconv::cp_fused_backward", mutates_args=(), device_types="cpu")
def cp_fused_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    in_factor: torch.Tensor,
    out_matrix: torch.Tensor,
    factors: list[torch.Tensor],
    before: list[int],
    dilation: list[int],
) -> list[torch.Tensor]:
    """Gradients of :func:`cp_fused`: ``[grad_x, grad_A, grad_B, *grad_factors, grad_bias]``."""
    grad_x, grad_in, grad_matrix, grad_factors, grad_bias = native.fused_backward(
        grad_out, x, in_factor, tuple(factors), out_matrix, tuple(before), tuple(dilation)
    )
    # the parameter gradients are views of one sum: op outputs must not alias each other
    params = (grad_in, grad_matrix, *grad_factors, grad_bias)
    return [grad_x, *(g.clone(memory_format=torch.contiguous_format) for g in params)]


@cp_fused_backward.register_fake
def _cp_fused_backward_fake(grad_out, x, in_factor, out_matrix, factors, before, dilation):
    params = (in_factor, out_matrix, *factors)
    return [torch.empty_like(x), *(p.new_empty(p.shape) for p in params),
            out_matrix.new_empty(out_matrix.shape[0])]  # fmt: skip


def _setup_context(ctx, inputs, output) -> None:
    x, in_factor, out_matrix, bias, factors, before, dilation, _ = inputs
    ctx.save_for_backward(x, in_factor, out_matrix, *factors)
    ctx.before, ctx.dilation, ctx.has_bias = before, dilation, bias is not None


def _backward(ctx, grad_out):
    x, in_factor, out_matrix, *factors = ctx.saved_tensors
    grads = torch.ops.hoconv.cp_fused_backward(
        _contiguous(grad_out), x, in_factor, out_matrix, factors, ctx.before, ctx.dilation
    )
    grad_x, grad_in, grad_matrix, *grad_factors, grad_bias = grads
    grad_bias = grad_bias if ctx.has_bias else None
    return grad_x, grad_in, grad_matrix, grad_bias, grad_factors, None, None, None


cp_fused.register_autograd(_backward, setup_context=_setup_context)


def fused_conv(x, in_factor, kernel_factors, out_matrix, bias, pads, dilation) -> torch.Tensor:
    """The stride-1 CP conv through the ``hoconv::cp_fused`` op (rank a multiple of 16)."""
    out_spatial = tuple(
        out_len(size, f.shape[1], 1, pad, d)
        for size, f, pad, d in zip(x.shape[2:], kernel_factors, pads, dilation)
    )
    before = [a for a, _ in pads]
    return torch.ops.hoconv.cp_fused(_contiguous(x), in_factor, out_matrix, bias,
                                     list(kernel_factors), before, list(dilation),
                                     list(out_spatial))  # fmt: skip


__all__ = ["cp_fused", "cp_fused_backward", "fused_conv"]
