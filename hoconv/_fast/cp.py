"""Fast CP convolution: channels-last GEMMs around fused depthwise blocks, hand-written backward.

Layout plan (no explicit permute copies of activations):

- ``x`` ``(N, C, *S)`` -> ``h0 = x^T A^T`` : one GEMM whose result is channels-last
  ``(N, *S, R)`` (BLAS reads the transposed operand in place);
- the spatial part: one oneDNN depthwise conv per block of <= 3 axes with the outer product of
  the block's kernel factors (:mod:`hoconv._fast.depthwise`), channels-last in and out;
- ``out = U_out h^T + b``: one GEMM reading channels-last, writing channels-first (the
  weights ``w`` scale the first kernel factor, an ``(R, K_0)`` product).

The backward (:class:`_CPConvFunction`) mirrors it with 4 GEMMs and the depthwise gradients
of :func:`~hoconv._fast.depthwise.block_backward`. Small parameter-only ops (folding the
weights into the first kernel factor, the outer product of the kernel factors) stay in
autograd.
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
from hoconv._fast import workspace
from hoconv._fast.depthwise import (
    Block,
    block_forward,
    block_input_grad,
    block_out_spatial,
    block_weight_grad,
    make_blocks,
)
from hoconv._fast.fused import fused_conv
from hoconv._fast.plan import SCHEDULES, active, describe, fast_schedule, fused_refusal, padded_rank
from hoconv._fast.rows import (
    channels_last,
    empty_like_layout,
    flat,
    mm_rows,
    project,
    project_weight_grad,
    rows,
    tmm_rows,
)
from hoconv._fast.stream import StreamFunction, make_plan
from hoconv.functional import check_cp_factors

CL3D = torch.channels_last_3d
KERNEL_ARG = 8  # index of the first depthwise kernel among _CPConvFunction's inputs


def block_kernel(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Outer product of per-axis factors ``(R, K_i)`` -> depthwise kernel ``(R, *K)``."""
    kernel = factors[0]
    for f in factors[1:]:
        kernel = kernel.unsqueeze(-1) * f.view(f.shape[0], *([1] * (kernel.dim() - 1)), f.shape[1])
    return kernel


def channels_in(
    x: torch.Tensor, matrix: torch.Tensor, buffer: torch.Tensor | None = None
) -> torch.Tensor:
    """1x1 conv from ``x`` (N, C, *S), either layout, to channels-last ``(N, *S, O)``; matrix (O, C).

    ``buffer``: optional contiguous storage of at least N * P * O elements to write into
    (reusing memory that is already mapped is much faster than a fresh large allocation);
    default: one from :mod:`hoconv._fast.workspace` (outside autograd).
    """
    n, p = x.shape[0], math.prod(x.shape[2:])
    x_rows = rows(x)  # (N, P, C)
    if buffer is None and flat(x_rows):  # channels-last: one oneDNN 1x1 conv
        h = project(x_rows, matrix)  # (N, P, O)
    else:
        tracked = torch.is_grad_enabled() and (x.requires_grad or matrix.requires_grad)
        if buffer is None and not tracked:  # autograd does not take out= arguments
            buffer = workspace.empty((n * p * matrix.shape[0],), x.dtype, x.device)
        out = None if buffer is None else buffer[: n * p * matrix.shape[0]].view(n, p, -1)
        h = mm_rows(x_rows, matrix.t(), out)  # (N, P, O)
    return h.view(n, *x.shape[2:], matrix.shape[0])


def _project_nd(h: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1x1 conv of channels-last ``h`` (N, *S, K) to a new channels-last ``(N, L, *S)`` tensor.

    oneDNN's 1x1 conv, for 2 or 3 spatial axes (``torch.channels_last`` / ``_3d``).
    """
    dim = h.dim() - 2
    conv, layout = (F.conv2d, torch.channels_last) if dim == 2 else (F.conv3d, CL3D)
    out = conv(h.movedim(-1, 1), matrix.view(*matrix.shape, *([1] * dim)), bias)
    return out.contiguous(memory_format=layout)  # a no-op on oneDNN's output (float64: a copy)


class _CPConvFunction(torch.autograd.Function):
    """``out = B · dw_blocks(A · x) + bias`` with a hand-written backward.

    The batch is processed in chunks of ``chunk`` samples (each chunk's rank-space data then
    stays in cache from one stage to the next). With ``keep`` the chunks' rank-space
    activations are kept for the backward, otherwise each chunk's are recomputed there, so
    the peak memory stays near that of one chunk. ``out`` and ``grad_x`` follow ``x``'s
    layout (channels-first or channels-last, :mod:`hoconv._fast.rows`).
    """

    @staticmethod
    def forward(ctx, x, in_factor, out_matrix, bias, blocks, chunk, keep, seps, *kernels):
        n = x.shape[0]
        shapes = [tuple(x.shape[2:])]
        for block in blocks:
            shapes.append(block_out_spatial(shapes[-1], block))
        ctx.blocks, ctx.shapes, ctx.chunk, ctx.seps = blocks, shapes, chunk, seps
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, in_factor, out_matrix, *kernels)
        ctx.single = chunk >= n and channels_last(x) and x.dim() in (4, 5)
        if ctx.single:  # one pass of oneDNN 1x1 convs writing the output, no copy
            hidden = _hidden(x, in_factor, blocks, shapes, kernels, seps)
            ctx.hidden = [hidden] if keep else None
            return _project_nd(hidden[-1], out_matrix, bias)  # (N, T, *S_out)
        out = empty_like_layout(x, n, out_matrix.shape[0], *shapes[-1])  # (N, T, *S_out)
        out_rows, out_t = rows(out), out_matrix.t()  # (N, P_out, T), (R, T)
        buffer = None if keep or chunk >= n else _buffer(x, chunk, in_factor.shape[0])
        ctx.hidden = [] if keep else None
        for start in range(0, n, chunk):
            xc = x[start : start + chunk]
            hidden = _hidden(xc, in_factor, blocks, shapes, kernels, seps, buffer)
            last = hidden[-1].view(hidden[-1].shape[0], -1, in_factor.shape[0])  # (n, P_out, R)
            mm_rows(last, out_t, out_rows[start : start + chunk], bias)
            if keep:
                ctx.hidden.append(hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, in_factor, out_matrix, *kernels = ctx.saved_tensors
        needs = ctx.needs_input_grad
        n, chunk = x.shape[0], ctx.chunk
        g = rows(grad_out)  # (N, P_out, T)
        grads = [None] * (KERNEL_ARG + len(kernels))
        if ctx.has_bias and needs[3]:
            grads[3] = g.sum((0, 1))
        kept, ctx.hidden = ctx.hidden, None  # drop ctx's references: freed as used
        buffer = None if kept is not None else _buffer(x, chunk, in_factor.shape[0])
        single = ctx.single  # grad_x is then a new tensor from oneDNN's 1x1 conv
        if needs[0] and not single:
            grads[0] = empty_like_layout(x, *x.shape)
        for i, start in enumerate(range(0, n, chunk)):
            xc, gc = x[start : start + chunk], g[start : start + chunk]
            if kept is not None:
                hidden, kept[i] = kept[i], None
            else:
                hidden = _hidden(xc, in_factor, ctx.blocks, ctx.shapes, kernels, ctx.seps, buffer)
            gx = grads[0][start : start + chunk] if grads[0] is not None else None
            part = _backward_chunk(ctx, gc, xc, in_factor, out_matrix, kernels, hidden, gx)
            del hidden
            if single and needs[0]:
                grads[0] = part[0]
            for j in (1, 2, *range(KERNEL_ARG, KERNEL_ARG + len(kernels))):
                if needs[j]:
                    grads[j] = part[j] if grads[j] is None else grads[j] + part[j]
        return tuple(grads)


def _buffer(x: torch.Tensor, chunk: int, rank: int) -> torch.Tensor:
    """Flat storage for one chunk's first rank-space activation, reused by every chunk."""
    return workspace.empty((chunk * rank * math.prod(x.shape[2:]),), x.dtype, x.device)


def _hidden(x, in_factor, blocks, shapes, kernels, seps, buffer=None) -> list[torch.Tensor]:
    """Rank-space activations ``[A x, dw_0(A x), ...]``, channels-last ``(N, *S_i, R)``."""
    hidden = [channels_in(x, in_factor, buffer)]
    for block, kernel, spatial, factors in zip(blocks, kernels, shapes, seps):
        hidden.append(block_forward(hidden[-1], kernel, spatial, block, factors))
    return hidden


def _backward_chunk(ctx, g, x, in_factor, out_matrix, kernels, hidden, grad_x) -> list:
    """Gradients from one batch chunk; ``hidden`` is consumed (entries freed once used).

    ``g`` is the chunk's output gradient as an (n, P_out, T) :func:`rows` view. Writes this
    chunk's input gradient into ``grad_x`` (when not None) and returns a list indexed like
    the Function's inputs: 1 = grad of in_factor, 2 = of out_matrix, KERNEL_ARG + i = of
    kernels[i] (None where not needed).
    """
    needs, blocks, shapes = ctx.needs_input_grad, ctx.blocks, ctx.shapes
    n, rank = x.shape[0], in_factor.shape[0]
    out = [None] * (KERNEL_ARG + len(kernels))
    last = hidden.pop()
    last_rows = last.view(n, -1, rank)  # (n, P_out, R)
    if needs[2]:
        cl = flat(g) and flat(last_rows)  # channels-last: oneDNN's 1x1 weight gradient
        out[2] = project_weight_grad(g, last_rows) if cl else tmm_rows(g, last_rows)  # (T, R)
    del last, last_rows
    if not (any(needs[:2]) or any(needs[KERNEL_ARG:])):
        return out
    if flat(g):  # channels-last: one oneDNN 1x1 conv
        gh = project(g, out_matrix.t())  # (n, P_out, R)
    else:
        gh = mm_rows(g, out_matrix, workspace.empty((n, g.shape[1], rank), g.dtype, g.device))
    gh = gh.view(n, *shapes[-1], rank)  # (n, *S_out, R)
    for i in reversed(range(len(blocks))):
        h = hidden.pop()  # the block's input: needed for its kernel gradient only
        if needs[KERNEL_ARG + i]:
            out[KERNEL_ARG + i] = block_weight_grad(gh, h, kernels[i], shapes[i], blocks[i])
        del h
        need_in = i > 0 or any(needs[:2])
        if need_in:
            gh = block_input_grad(gh, kernels[i], shapes[i], blocks[i], ctx.seps[i])
        else:
            gh = None
    if gh is None:
        return out
    gh_rows, x_rows = gh.view(n, -1, rank), rows(x)  # (n, P, R), (n, P, C)
    if needs[1] and flat(x_rows):
        out[1] = project_weight_grad(gh_rows, x_rows)  # (R, C)
    elif needs[1]:
        # (C, R) then transposed: the operands' natural layouts for a channels-first x
        # (3x faster than the transposed product when C is small, e.g. the RGB stem)
        out[1] = tmm_rows(x_rows, gh_rows).t()  # (R, C)
    if grad_x is not None:
        mm_rows(gh_rows, in_factor, rows(grad_x))  # (n, P, C)
    elif needs[0]:  # channels-last x, one chunk: a new tensor from oneDNN's 1x1 conv
        out[0] = _project_nd(gh, in_factor.t(), None)  # (n, C, *S)
    return out


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
    schedule: str = "auto",
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
            in ``active().chunk_bytes`` (so it stays in cache between the stages).
        keep: keep the rank-space activations for the backward (faster) or recompute them
            there chunk by chunk (less memory); default: keep them when they are no larger
            than ``x``.
        schedule: ``"fused"`` (one native pass each way, :mod:`hoconv._fast.fused`; stride-1
            2-D / 3-D float32 CPU layers), ``"batch"`` (whole samples per stage, in batch
            chunks), ``"stream"`` (slabs of frames along the first spatial axis,
            :mod:`hoconv._fast.stream`) or ``"auto"``: the schedule
            :func:`hoconv._fast.plan.fast_schedule` chooses.

    Returns:
        ``(N, T, *spatial_out)``.
    """
    rank = check_cp_factors(weights, in_factor, kernel_factors, out_factor)
    kernel = tuple(f.shape[1] for f in kernel_factors)
    stride, pads, dilation = conv_geometry(x, in_factor.shape[1], kernel, stride, padding, dilation)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be an int >= 1 (samples per batch chunk), got {chunk!r}")
    in_factor, kernel_factors, out_matrix = _aligned(weights, in_factor, kernel_factors, out_factor)
    rank = in_factor.shape[0]
    inp = describe(x, (in_factor, out_matrix, bias, *kernel_factors))
    if schedule == "fused":
        refusal = fused_refusal(inp, rank, kernel, stride)
        if refusal is not None:
            raise ValueError(f"schedule='fused' cannot run this layer: {refusal}")
    elif schedule == "auto":
        schedule, _ = fast_schedule(inp, rank, kernel, stride, dilation, chunk, keep)
    if schedule == "fused":
        return fused_conv(x, in_factor, kernel_factors, out_matrix, bias, pads, dilation)
    return _eager(x, in_factor, kernel_factors, out_matrix, bias, (stride, pads, dilation),
                  schedule, chunk, keep)  # fmt: skip


def _aligned(weights, in_factor, kernel_factors, out_factor):
    """``(A, kernel factors, B)`` with the weights folded in and the rank padded if cheap.

    The weights fold into the first kernel factor ((R, K_0): a few R multiplies) rather than
    into out_factor ((T, R)): layers with few positions are bound by passes over their factor
    matrices, and that fold and its backward were three more. Measured fwd+bwd, 2 threads:
    (2, 512, 1, 2, 2) R 2288 9.3-9.5 -> 7.2-7.4 ms, (2, 256, 2, 4, 4) R 1136 5.3-5.4 ->
    3.9-4.6 ms, (2, 64, 8, 14, 14) R 273 6.0-6.2 -> 5.8-5.9 ms. The padding adds zero rank-1
    terms: exact, and GEMM / oneDNN rows become aligned.
    """
    kernel_factors = [kernel_factors[0] * weights[:, None], *kernel_factors[1:]]
    rank = in_factor.shape[0]
    extra = padded_rank(rank) - rank
    if not extra:
        return in_factor, kernel_factors, out_factor
    in_factor = F.pad(in_factor, (0, 0, 0, extra))  # (R', C)
    kernel_factors = [F.pad(f, (0, 0, 0, extra)) for f in kernel_factors]  # (R', K_i)
    return in_factor, kernel_factors, F.pad(out_factor, (0, extra))  # (T, R')


def _eager(x, in_factor, kernel_factors, out_matrix, bias, geometry, schedule, chunk, keep):
    """The batch or stream schedule (library kernels, native depthwise blocks where planned)."""
    stride, pads, dilation = geometry
    kernel, rank = tuple(f.shape[1] for f in kernel_factors), in_factor.shape[0]
    # strided layers: smaller blocks (aten's strided depthwise backward scales with the taps of
    # a block; measured 1.6-1.8x faster as (axis 0) + (axes 1, 2) than one 3-D block)
    strided = any(s != 1 for s in stride)
    blocks = make_blocks(kernel, stride, pads, dilation, max_axes=2 if strided else 3)
    # the per-axis convolutions commute: run the most downsampling blocks first, so the others
    # work on the smaller output (stem 3x7x7, stride (1, 2, 2): the temporal conv on 28x28)
    blocks = tuple(sorted(blocks, key=lambda b: -math.prod(b.stride)))
    kernels = [block_kernel(kernel_factors[b.start : b.stop]) for b in blocks]
    # the same kernels as per-axis factors, for the native separable conv (their gradient
    # flows through `kernels`)
    seps = tuple(tuple(f.detach() for f in kernel_factors[b.start : b.stop]) for b in blocks)
    if schedule == "stream":
        plan = make_plan(blocks, tuple(x.shape[2:]), rank, x.element_size())
        return StreamFunction.apply(x, in_factor, out_matrix, bias, plan, seps, *kernels)
    sample_bytes = rank * math.prod(x.shape[2:]) * x.element_size()  # one sample's A x
    if keep is None:
        keep = sample_bytes * x.shape[0] <= x.numel() * x.element_size()
    if chunk is None and keep and channels_last(x):  # oneDNN 1x1 convs over the whole batch
        chunk = x.shape[0]
    elif chunk is None:
        chunk = max(1, active().chunk_bytes // sample_bytes)
    return _CPConvFunction.apply(
        x, in_factor, out_matrix, bias, blocks, chunk, bool(keep), seps, *kernels
    )


__all__ = ["Block", "block_kernel", "channels_in", "cp_conv", "padded_rank"]
