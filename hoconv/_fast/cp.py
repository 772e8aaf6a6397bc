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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hoconv._checks import (
    PaddingArg,
    conv_geometry,
)
from hoconv._fast.depthwise import (
    Block,
    block_forward,
    block_input_grad,
    block_out_spatial,
    block_weight_grad,
    make_blocks,
)
from hoconv.functional import check_cp_factors

CHUNK_BYTES = 8 << 20  # rank-space bytes per batch chunk: input + output of a stage fit in L3
RANK_ALIGN = 16  # ranks are padded to a multiple of this when it costs <= 1/8 more work


def padded_rank(rank: int) -> int:
    """The rank the fast path computes with: ``rank`` rounded up to ``RANK_ALIGN`` if cheap.

    A row length that is not a multiple of the SIMD width makes GEMMs and oneDNN depthwise
    kernels much slower (measured 2.2x on the (16384, 64) x (64, 273) GEMM vs 288).
    """
    aligned = -(-rank // RANK_ALIGN) * RANK_ALIGN
    return aligned if 8 * (aligned - rank) <= rank else rank


def block_kernel(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Outer product of per-axis factors ``(R, K_i)`` -> depthwise kernel ``(R, *K)``."""
    kernel = factors[0]
    for f in factors[1:]:
        kernel = kernel.unsqueeze(-1) * f.view(f.shape[0], *([1] * (kernel.dim() - 1)), f.shape[1])
    return kernel


def channels_in(
    x: torch.Tensor, matrix: torch.Tensor, buffer: torch.Tensor | None = None
) -> torch.Tensor:
    """1x1 conv from channels-first ``x`` (N, C, *S) to channels-last ``(N, *S, O)``; matrix (O, C).

    ``buffer``: optional contiguous storage of at least N * P * O elements to write into
    (reusing memory that is already mapped is much faster than a fresh large allocation).
    """
    n, c = x.shape[:2]
    xt = _transposed(x)  # (N, P, C)
    if buffer is None and 1 < n and xt.shape[1] < matrix.shape[0]:  # small extents: one GEMM
        out = torch.mm(xt.reshape(n * xt.shape[1], c), matrix.t())  # (N*P, O)
        return out.view(n, *x.shape[2:], matrix.shape[0])
    operand = matrix.t().expand(n, c, -1)  # (N, C, O); bmm never copies its operands
    if buffer is None:
        out = torch.bmm(xt, operand)  # (N, P, O)
    else:
        out = torch.bmm(xt, operand, out=buffer[: xt.shape[0] * xt.shape[1] * matrix.shape[0]].view(
            n, xt.shape[1], matrix.shape[0]))  # fmt: skip
    return out.view(n, *x.shape[2:], matrix.shape[0])


def channels_out(h: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1x1 conv from channels-last ``h`` (N, *S, R) to channels-first ``(N, O, *S)``; matrix (O, R)."""
    n, rank = h.shape[0], h.shape[-1]
    if 1 < n and h[0].numel() < rank * rank:  # small extents (P < R): one GEMM, then transpose
        out = torch.mm(h.reshape(-1, rank), matrix.t())  # (N*P, O)
        if bias is not None:
            out += bias
        out = out.view(n, -1, matrix.shape[0]).transpose(1, 2).contiguous()  # (N, O, P)
        return out.view(n, matrix.shape[0], *h.shape[1:-1])
    hv = h.reshape(n, -1, rank).transpose(1, 2)  # (N, R, P)
    if bias is None:
        out = torch.bmm(matrix.expand(n, *matrix.shape), hv)  # (N, O, P)
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
    """``out = B · dw_blocks(A · x) + bias`` with a hand-written backward.

    The batch is processed in chunks of ``chunk`` samples (each chunk's rank-space data then
    stays in cache from one stage to the next). With ``keep`` the chunks' rank-space
    activations are kept for the backward, otherwise each chunk's are recomputed there, so
    the peak memory stays near that of one chunk.
    """

    @staticmethod
    def forward(ctx, x, in_factor, out_matrix, bias, blocks, chunk, keep, *kernels):
        n = x.shape[0]
        shapes = [tuple(x.shape[2:])]
        for block in blocks:
            shapes.append(block_out_spatial(shapes[-1], block))
        ctx.blocks, ctx.shapes, ctx.chunk = blocks, shapes, chunk
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, in_factor, out_matrix, *kernels)
        if chunk >= n:
            hidden = _hidden(x, in_factor, blocks, shapes, kernels)
            ctx.hidden = [hidden] if keep else None
            return channels_out(hidden[-1], out_matrix, bias)  # (N, T, *S_out)
        out = x.new_empty(n, out_matrix.shape[0], *shapes[-1])  # (N, T, *S_out)
        buffer = None if keep else _buffer(x, chunk, in_factor.shape[0])
        ctx.hidden = [] if keep else None
        for start in range(0, n, chunk):
            hidden = _hidden(x[start : start + chunk], in_factor, blocks, shapes, kernels, buffer)
            out[start : start + chunk] = channels_out(hidden[-1], out_matrix, bias)
            if keep:
                ctx.hidden.append(hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, in_factor, out_matrix, *kernels = ctx.saved_tensors
        needs = ctx.needs_input_grad
        n, chunk = x.shape[0], ctx.chunk
        g = grad_out.reshape(n, out_matrix.shape[0], -1)  # (N, T, P_out)
        grads = [None] * (7 + len(kernels))
        if ctx.has_bias and needs[3]:
            grads[3] = g.sum((0, 2))
        kept, ctx.hidden = ctx.hidden, None  # drop ctx's references: freed as used
        buffer = None if kept is not None else _buffer(x, chunk, in_factor.shape[0])
        if needs[0]:
            grads[0] = torch.empty_like(x, memory_format=torch.contiguous_format)
        for i, start in enumerate(range(0, n, chunk)):
            xc, gc = x[start : start + chunk], g[start : start + chunk]
            if kept is not None:
                hidden, kept[i] = kept[i], None
            else:
                hidden = _hidden(xc, in_factor, ctx.blocks, ctx.shapes, kernels, buffer)
            gx = grads[0][start : start + chunk] if needs[0] else None
            part = _backward_chunk(ctx, gc, xc, in_factor, out_matrix, kernels, hidden, gx)
            del hidden
            for j in (1, 2, *range(7, 7 + len(kernels))):
                if needs[j]:
                    grads[j] = part[j] if grads[j] is None else grads[j] + part[j]
        return tuple(grads)


def _buffer(x: torch.Tensor, chunk: int, rank: int) -> torch.Tensor:
    """Flat storage for one chunk's first rank-space activation, reused by every chunk."""
    return x.new_empty(chunk * rank * math.prod(x.shape[2:]))


def _hidden(x, in_factor, blocks, shapes, kernels, buffer=None) -> list[torch.Tensor]:
    """Rank-space activations ``[A x, dw_0(A x), ...]``, channels-last ``(N, *S_i, R)``."""
    hidden = [channels_in(x, in_factor, buffer)]
    for block, kernel, spatial in zip(blocks, kernels, shapes):
        hidden.append(block_forward(hidden[-1], kernel, spatial, block))
    return hidden


def _backward_chunk(ctx, g, x, in_factor, out_matrix, kernels, hidden, grad_x) -> list:
    """Gradients from one batch chunk; ``hidden`` is consumed (entries freed once used).

    Writes this chunk's input gradient into ``grad_x`` (when not None) and returns a list
    indexed like the Function's inputs: 1 = grad of in_factor, 2 = of out_matrix, 7 + i =
    of kernels[i] (None where not needed).
    """
    needs, blocks, shapes = ctx.needs_input_grad, ctx.blocks, ctx.shapes
    n, rank = x.shape[0], in_factor.shape[0]
    out = [None] * (7 + len(kernels))
    last = hidden.pop()
    if needs[2]:
        out[2] = _batch_sum_mm(g, last.reshape(n, -1, rank))  # (T, R)
    del last
    if not (any(needs[:2]) or any(needs[7:])):
        return out
    if 1 < n and g.shape[2] < rank:  # small extents: one GEMM over N*P rows
        gh = torch.mm(g.transpose(1, 2).reshape(-1, g.shape[1]), out_matrix)  # (N*P, R)
    else:
        gh = torch.bmm(g.transpose(1, 2), out_matrix.expand(n, *out_matrix.shape))  # (N, P, R)
    gh = gh.view(n, *shapes[-1], rank)
    for i in reversed(range(len(blocks))):
        h = hidden.pop()  # the block's input: needed for its kernel gradient only
        if needs[7 + i]:
            out[7 + i] = block_weight_grad(gh, h, kernels[i], shapes[i], blocks[i])
        del h
        need_in = i > 0 or any(needs[:2])
        gh = block_input_grad(gh, kernels[i], shapes[i], blocks[i]) if need_in else None
    if gh is None:
        return out
    ghm = gh.reshape(n, -1, rank).transpose(1, 2)  # (N, R, P)
    if needs[1]:
        # (C, P) x (P, R) per sample: the operands' natural layouts (3x faster than the
        # transposed product when C is small, e.g. the RGB stem)
        xm = _transposed(x).transpose(1, 2)  # (N, C, P) view
        out[1] = _batch_sum_mm(xm, gh.reshape(n, -1, rank)).t()  # (R, C)
    if grad_x is not None and 1 < n and ghm.shape[2] < rank:  # small extents: one GEMM
        gx = torch.mm(gh.reshape(-1, rank), in_factor)  # (N*P, C)
        grad_x.view(n, x.shape[1], -1).copy_(gx.view(n, -1, x.shape[1]).transpose(1, 2))
    elif grad_x is not None:
        a_t = in_factor.t().expand(n, *in_factor.t().shape)  # (N, C, R)
        torch.bmm(a_t, ghm, out=grad_x.view(n, x.shape[1], -1))  # (N, C, P)
    return out


def _batch_sum_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_n a[n] @ b[n]`` for a (N, M, P) and b (N, P, K).

    One GEMM over the concatenated ``N * P`` axis when that is cheaper than N GEMMs plus
    the sum of their (N, M, K) results, i.e. when ``P < max(M, K)`` (small spatial extents,
    large ranks: measured 1.2 vs 5.8 ms for (2, 512, 4) x (2, 4, 2304)); the operands are
    then copied into (M, N*P) / (N*P, K) (both smaller than the (N, M, K) intermediate).
    """
    n, m, p = a.shape
    if n == 1 or p >= max(m, b.shape[2]):
        return torch.bmm(a, b).sum(0)
    left = a.transpose(0, 1).reshape(m, n * p)  # (M, N*P)
    return torch.mm(left, b.reshape(n * p, b.shape[2]))  # (N*P, K) -> (M, K)


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
    chunk: int | None = None,
    keep: bool | None = None,
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
        chunk: samples per batch chunk; default: the most whose rank-space activation fits
            in ``CHUNK_BYTES`` (so it stays in cache between the stages).
        keep: keep the rank-space activations for the backward (faster) or recompute them
            there chunk by chunk (less memory); default: keep them when they are no larger
            than ``x``.

    Returns:
        ``(N, T, *spatial_out)``.
    """
    rank = check_cp_factors(weights, in_factor, kernel_factors, out_factor)
    kernel = tuple(f.shape[1] for f in kernel_factors)
    stride, pads, dilation = conv_geometry(x, in_factor.shape[1], kernel, stride, padding, dilation)
    # strided layers: smaller blocks (aten's strided depthwise backward scales with the taps of
    # a block; measured 1.6-1.8x faster as (axis 0) + (axes 1, 2) than one 3-D block)
    strided = any(s != 1 for s in stride)
    blocks = make_blocks(kernel, stride, pads, dilation, max_axes=2 if strided else 3)
    # the per-axis convolutions commute: run the most downsampling blocks first, so the others
    # work on the smaller output (stem 3x7x7, stride (1, 2, 2): the temporal conv on 28x28)
    blocks = tuple(sorted(blocks, key=lambda b: -math.prod(b.stride)))
    out_matrix = out_factor * weights  # (T, R)
    extra = padded_rank(rank) - rank
    if extra:  # zero rank-1 terms: exact, and GEMM / oneDNN rows become aligned
        in_factor = F.pad(in_factor, (0, 0, 0, extra))
        kernel_factors = [F.pad(f, (0, 0, 0, extra)) for f in kernel_factors]
        out_matrix = F.pad(out_matrix, (0, extra))
        rank += extra
    kernels = [block_kernel(kernel_factors[b.start : b.stop]) for b in blocks]
    sample_bytes = rank * math.prod(x.shape[2:]) * x.element_size()  # one sample's A x
    if chunk is None:
        chunk = max(1, CHUNK_BYTES // sample_bytes)
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1 (samples per batch chunk), got {chunk!r}")
    if keep is None:
        keep = sample_bytes * x.shape[0] <= x.numel() * x.element_size()
    return _CPConvFunction.apply(
        x, in_factor, out_matrix, bias, blocks, chunk, bool(keep), *kernels
    )


__all__ = ["Block", "block_kernel", "channels_in", "channels_out", "cp_conv"]
