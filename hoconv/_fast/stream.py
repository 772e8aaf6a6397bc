"""Streaming schedule of the fast CP convolution, for rank-space activations too large for cache.

When one sample's rank-space activation ``A x`` (``prod(spatial) * R`` values) is larger than
the last-level cache, every stage of the batch schedule of :mod:`hoconv._fast.cp` streams
tens of MB through memory, and the depthwise passes slow down (measured 39 ms for one 3x3x3
depthwise pass over (4, 16, 32, 32, 288) floats, against 8 ms in ~1 MB pieces). This
schedule instead walks each sample along its first spatial axis in *slabs* of output frames.
For each slab it:

1. computes ``A x`` for the input frames the slab needs (its *window*; frames shared with the
   previous window are kept, not recomputed; frames in the zero padding are zeros);
2. runs the depthwise blocks over the window (no padding on the first axis: it is in the
   window), giving the slab's rank-space output;
3. multiplies by ``B`` straight into the slab's rows of the output (either layout).

``A x`` goes into one per-sample buffer, computed lazily window by window (a ring buffer of
window frames cost 5 ms of frame copies per fwd+bwd at rank 288). A window is a few MB, so
the three stages mostly hit cache. The backward walks the same windows
(recomputing ``A x`` and the blocks, so no rank-space tensor is ever stored for the whole
batch), and accumulates the rank-space input gradient of frames shared by two windows
before the last two GEMMs (``grad_x`` and ``grad_A``) consume each frame once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from hoconv._fast import native, workspace
from hoconv._fast.depthwise import (
    Block,
    block_forward,
    block_input_grad,
    block_out_spatial,
    block_weight_grad,
)
from hoconv._fast.plan import active, describe, fused_refusal
from hoconv._fast.rows import empty_like_layout, rows


@dataclass(frozen=True)
class Plan:
    """How one sample is cut into slabs along its first spatial axis."""

    blocks: tuple[Block, ...]  # the depthwise blocks, axis 0 unpadded (padding is in the window)
    spatial: tuple[int, ...]  # input spatial shape
    out_spatial: tuple[int, ...]  # output spatial shape
    rows: int  # output frames per slab
    kernel: int  # kernel, stride, dilation and leading pad of axis 0
    stride: int
    dilation: int
    before: int

    @property
    def frame(self) -> int:
        """Positions per input frame."""
        return math.prod(self.spatial[1:])

    @property
    def out_frame(self) -> int:
        """Positions per output frame."""
        return math.prod(self.out_spatial[1:])

    @property
    def capacity(self) -> int:
        """Frames of the per-sample buffer: the input frames plus the zero padding windows read."""
        last = (self.out_spatial[0] - 1) * self.stride + self.dilation * (self.kernel - 1) + 1
        return max(last, self.spatial[0] + self.before)

    def slabs(self) -> Iterator[tuple[int, int, int, int]]:
        """``(o0, o1, lo, hi)``: output frames [o0, o1) need input frames [lo, hi)."""
        span = self.dilation * (self.kernel - 1) + 1
        for o0 in range(0, self.out_spatial[0], self.rows):
            o1 = min(self.out_spatial[0], o0 + self.rows)
            lo = o0 * self.stride - self.before
            yield o0, o1, lo, (o1 - 1) * self.stride + span - self.before


def make_plan(
    blocks: tuple[Block, ...], spatial: tuple[int, ...], rank: int, element_size: int
) -> Plan:
    """The slab plan for inputs of ``spatial`` shape (blocks as made by ``make_blocks``)."""
    first = next(b for b in blocks if b.start == 0)
    kernel, stride, dilation = first.kernel[0], first.stride[0], first.dilation[0]
    out_spatial = spatial
    for block in blocks:
        out_spatial = block_out_spatial(out_spatial, block)
    unpadded = replace(first, pads=((0, 0), *first.pads[1:]))
    blocks = tuple(unpadded if b is first else b for b in blocks)
    frame_bytes = max(1, math.prod(spatial[1:]) * rank * element_size)
    frames = max(1, active().window_bytes // frame_bytes)  # input frames per window
    rows = max(1, (frames - dilation * (kernel - 1) - 1) // stride + 1)
    rows = min(rows, out_spatial[0])
    return Plan(blocks, spatial, out_spatial, rows, kernel, stride, dilation, first.pads[0][0])


def _windows(
    xt: torch.Tensor, in_t: torch.Tensor, plan: Plan, buffer: torch.Tensor
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Yield ``(o0, o1, lo, window)`` for one sample; the window is ``A x`` of frames [lo, hi).

    ``A x`` is computed lazily, frame range by frame range, just before the window that first
    needs it (so it is still in cache for the depthwise pass), into ``buffer`` at frame
    ``before + f``; the zero padding frames of the buffer are never written.

    Args:
        xt: the sample as a ``(positions, C)`` matrix (any strides).
        in_t: ``A^T``, ``(C, R)``.
        plan: the slab plan.
        buffer: ``(capacity, frame, R)`` storage whose padding frames are zero.

    Yields:
        The window as a contiguous channels-last ``(1, hi - lo, *spatial[1:], R)`` view.
    """
    frames, size, before = plan.spatial[0], plan.frame, plan.before
    done = 0  # input frames [0, done) are in the buffer
    for o0, o1, lo, hi in plan.slabs():
        a, b = max(done, lo, 0), min(hi, frames)
        if a < b:
            dst = buffer[a + before : b + before].view(-1, in_t.shape[1])  # ((b - a) * frame, R)
            torch.mm(xt[a * size : b * size], in_t, out=dst)
            done = b
        window = buffer[lo + before : hi + before]  # (hi - lo, frame, R)
        yield o0, o1, lo, window.view(1, hi - lo, *plan.spatial[1:], buffer.shape[-1])


def new_buffer(x: torch.Tensor, plan: Plan, rank: int) -> torch.Tensor:
    """The per-sample rank-space buffer of :func:`_windows`, padding frames zeroed."""
    buffer = workspace.empty((plan.capacity, plan.frame, rank), x.dtype, x.device)
    buffer[: plan.before].zero_()
    buffer[plan.before + plan.spatial[0] :].zero_()
    return buffer


def _chain(window: torch.Tensor, kernels, seps, plan: Plan) -> list[torch.Tensor]:
    """``[window, block_0(window), ...]``: the window's rank-space activations."""
    hidden = [window]
    spatial = tuple(window.shape[1:-1])
    for block, kernel, factors in zip(plan.blocks, kernels, seps):
        hidden.append(block_forward(hidden[-1], kernel, spatial, block, factors))
        spatial = block_out_spatial(spatial, block)
    return hidden


def stream_forward(
    x: torch.Tensor,
    in_factor: torch.Tensor,
    out_matrix: torch.Tensor,
    bias: torch.Tensor | None,
    kernels,
    seps,
    plan: Plan,
) -> torch.Tensor:
    """``B · blocks(A · x) + bias`` as ``(N, T, *out_spatial)`` in x's layout, slab by slab.

    One block over all axes, on float32 CPU data, runs as one native pass
    (:func:`hoconv._fast.native.fused_forward`: the same walk, fused) when it is available.
    """
    n, rank = x.shape[0], in_factor.shape[0]
    out = empty_like_layout(x, n, out_matrix.shape[0], *plan.out_spatial)  # (N, T, *S_out)
    block = plan.blocks[0]
    whole = len(plan.blocks) == 1 and block.stop - block.start == len(plan.spatial)
    params = (in_factor, out_matrix, bias, *seps[0])  # float32 like x, or not fused
    if whole and fused_refusal(describe(x, params), rank, block.kernel, block.stride) is None:
        before = (plan.before, *(pad[0] for pad in block.pads[1:]))
        return native.fused_forward(x, in_factor.t(), seps[0], out_matrix, bias, out, before,
                                    block.dilation)  # fmt: skip
    out_rows, out_t = rows(out), out_matrix.t()  # (N, P_out, T), (R, T)
    xt, in_t = rows(x), in_factor.t()  # (N, P, C), (C, R)
    buffer = new_buffer(x, plan, rank)
    step = plan.out_frame
    for i in range(n):
        for o0, o1, _, window in _windows(xt[i], in_t, plan, buffer):
            y = _chain(window, kernels, seps, plan)[-1].view(-1, rank)  # (rows * P_out, R)
            dst = out_rows[i, o0 * step : o1 * step]  # (rows * P_out, T): the slab's rows
            if bias is None:
                torch.mm(y, out_t, out=dst)
            else:
                torch.addmm(bias, y, out_t, out=dst)
    return out


def stream_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    in_factor: torch.Tensor,
    out_matrix: torch.Tensor,
    kernels,
    seps,
    plan: Plan,
    needs: tuple[bool, bool, bool, tuple[bool, ...]],
) -> tuple[torch.Tensor | None, ...]:
    """Gradients w.r.t. ``(x, in_factor, out_matrix, *kernels)`` (None where not needed).

    Args:
        grad_out: ``(N, T, *out_spatial)``.
        x: the forward input.
        in_factor: ``A``, ``(R, C)``.
        out_matrix: ``B``, ``(T, R)``.
        kernels: the blocks' depthwise kernels.
        seps: the same kernels as per-axis factors (:func:`block_forward`).
        plan: the forward's slab plan.
        needs: whether x, in_factor, out_matrix and each kernel need a gradient.
    """
    need_x, need_a, need_b, need_k = needs
    rank = in_factor.shape[0]
    g_rows = rows(grad_out)  # (N, P_out, T)
    xt = rows(x)  # (N, P, C)
    grad_x = empty_like_layout(x, *x.shape) if need_x else None
    walk = _BackwardWalk(
        xt,
        in_factor,
        out_matrix,
        kernels,
        seps,
        plan,
        grad_x_rows=None if grad_x is None else rows(grad_x),  # (N, P, C)
        grad_a=in_factor.new_zeros(rank, x.shape[1]) if need_a else None,
        grad_b=out_matrix.new_zeros(out_matrix.shape) if need_b else None,
        grad_k=[k.new_zeros(k.shape) if need else None for k, need in zip(kernels, need_k)],
    )
    buffer = new_buffer(x, plan, rank)
    for i in range(x.shape[0]):
        walk.sample(i, g_rows[i], buffer)
    return (grad_x, walk.grad_a, walk.grad_b, *walk.grad_k)


@dataclass
class _BackwardWalk:
    """The slab walk of :func:`stream_backward`: the forward's operands and the gradients.

    The gradients are accumulated in place, sample by sample and slab by slab.

    Attributes:
        xt: the input as ``(N, P, C)`` rows.
        in_factor: ``A``, ``(R, C)``.
        out_matrix: ``B``, ``(T, R)``.
        kernels: the blocks' depthwise kernels.
        seps: the same kernels as per-axis factors.
        plan: the forward's slab plan.
        grad_x_rows: the input gradient as ``(N, P, C)`` rows (None: not needed).
        grad_a: ``(R, C)`` (None: not needed).
        grad_b: ``(T, R)`` (None: not needed).
        grad_k: one per kernel (None where not needed).
    """

    xt: torch.Tensor
    in_factor: torch.Tensor
    out_matrix: torch.Tensor
    kernels: Sequence[torch.Tensor]
    seps: Sequence
    plan: Plan
    grad_x_rows: torch.Tensor | None
    grad_a: torch.Tensor | None
    grad_b: torch.Tensor | None
    grad_k: list[torch.Tensor | None]

    @property
    def needs_input(self) -> bool:
        """Whether the rank-space input gradient is needed (for ``x`` or ``A``)."""
        return self.grad_x_rows is not None or self.grad_a is not None

    @property
    def needs_blocks(self) -> bool:
        """Whether any gradient flows back through the depthwise blocks."""
        return self.needs_input or any(g is not None for g in self.grad_k)

    def sample(self, i: int, g_rows: torch.Tensor, buffer: torch.Tensor) -> None:
        """Accumulate the gradients of sample ``i`` (``g_rows``: its ``(P_out, T)`` grad_out).

        Window by window; the rank-space input gradient of frames shared by two windows is
        summed before :meth:`flush_input_grad` consumes it.
        """
        step = self.plan.out_frame
        pending, pending_lo = None, 0  # input-grad frames [pending_lo, +len) not yet complete
        for o0, o1, lo, window in _windows(self.xt[i], self.in_factor.t(), self.plan, buffer):
            g = g_rows[o0 * step : o1 * step]  # (rows * P_out, T)
            gh = self.slab(g, window, o1 - o0)
            if gh is None:
                continue
            if pending is not None:
                done = min(pending.shape[0], max(0, lo - pending_lo))
                self.flush_input_grad(pending[:done], pending_lo, i)
                shared = pending[done:]  # frames [max(lo, pending_lo), ...) also in this window
                gh[: shared.shape[0]] += shared
            pending, pending_lo = gh, lo
        if pending is not None:
            self.flush_input_grad(pending, pending_lo, i)

    def slab(self, g: torch.Tensor, window: torch.Tensor, frames: int) -> torch.Tensor | None:
        """One slab of ``frames`` output frames: ``grad_b`` and the kernel gradients accumulated.

        Args:
            g: the slab's ``(frames * P_out, T)`` rows of grad_out.
            window: the slab's window of ``A x``, ``(1, window frames, *spatial[1:], R)``.
            frames: output frames of the slab.

        Returns:
            The rank-space gradient of the window, ``(window frames, P, R)``; None when
            neither ``x`` nor ``A`` needs it.
        """
        rank = window.shape[-1]
        hidden = _chain(window, self.kernels, self.seps, self.plan)
        y = hidden.pop().view(-1, rank)  # (rows * P_out, R)
        if self.grad_b is not None:
            self.grad_b.addmm_(g.t(), y)
        del y
        if not self.needs_blocks:
            return None
        gh = torch.mm(g, self.out_matrix)  # (rows * P_out, R)
        gh = gh.view(1, frames, *self.plan.out_spatial[1:], rank)  # (1, rows, *S_out[1:], R)
        gh = self.through_blocks(gh, hidden)
        if gh is None:
            return None
        return gh.view(gh.shape[1], self.plan.frame, rank)  # (window frames, P, R)

    def through_blocks(self, gh: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor | None:
        """Back through the depthwise blocks, last first, accumulating the kernel gradients.

        Args:
            gh: the gradient of the last block's output, channels-last ``(1, *S, R)``.
            hidden: each block's input (from :func:`_chain`), popped here.

        Returns:
            The gradient of the first block's input; None when neither ``x`` nor ``A`` needs it.
        """
        for j in reversed(range(len(self.plan.blocks))):
            h = hidden.pop()
            spatial = tuple(h.shape[1:-1])
            block, kernel = self.plan.blocks[j], self.kernels[j]
            if self.grad_k[j] is not None:
                self.grad_k[j] += block_weight_grad(gh, h, kernel, spatial, block)
            del h
            if j == 0 and not self.needs_input:
                return None
            gh = block_input_grad(gh, kernel, spatial, block, self.seps[j])
        return gh

    def flush_input_grad(self, grad_frames: torch.Tensor, first: int, i: int) -> None:
        """Consume the rank-space input gradient of sample ``i``'s frames [first, first + len).

        Frames in the zero padding are dropped; the rest go into ``grad_x`` and ``grad_a``.
        """
        rank = self.in_factor.shape[0]
        a, b = max(0, -first), min(grad_frames.shape[0], self.plan.spatial[0] - first)
        if a >= b:
            return  # all zero padding
        g = grad_frames[a:b].reshape(-1, rank)  # (frames * P, R)
        cols = slice((first + a) * self.plan.frame, (first + b) * self.plan.frame)
        if self.grad_x_rows is not None:
            torch.mm(g, self.in_factor, out=self.grad_x_rows[i, cols])  # (frames * P, C)
        if self.grad_a is not None:
            self.grad_a.addmm_(g.t(), self.xt[i, cols])  # (R, frames*P) x (frames*P, C)


class StreamFunction(torch.autograd.Function):
    """Autograd wrapper of :func:`stream_forward` / :func:`stream_backward`."""

    @staticmethod
    def forward(ctx, x, in_factor, out_matrix, bias, plan, seps, *kernels):
        ctx.plan, ctx.seps, ctx.has_bias = plan, seps, bias is not None
        ctx.save_for_backward(x, in_factor, out_matrix, *kernels)
        return stream_forward(x, in_factor, out_matrix, bias, kernels, seps, plan)

    @staticmethod
    def backward(ctx, grad_out):
        x, in_factor, out_matrix, *kernels = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_bias = None
        if ctx.has_bias and needs[3]:
            grad_bias = grad_out.sum([0, *range(2, grad_out.dim())])
        grads = stream_backward(
            grad_out, x, in_factor, out_matrix, kernels, ctx.seps, ctx.plan,
            (needs[0], needs[1], needs[2], tuple(needs[6:])),
        )  # fmt: skip
        return (*grads[:3], grad_bias, None, None, *grads[3:])
