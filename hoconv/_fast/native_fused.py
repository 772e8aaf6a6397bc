"""Calls of the fused native CP conv (``csrc/fused_fwd.c``, ``csrc/fused_bwd.c``).

A 2-D conv runs as the 3-D one the kernels take (its rows are the frames, a 1-tap middle
axis: whole images as frames measured slower, a (64, 64) frame's rank-space rings do not fit
in L2; rows do). Every tensor is checked before its address goes into the struct.
"""

from __future__ import annotations

import math

import torch

from hoconv._fast import native_abi
from hoconv._fast.native_abi import check_layout, check_tensor
from hoconv._fast.native_build import library


def _layout_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """Strides of sample, channel and flattened position of an (N, C, *S) tensor.

    The tensor is contiguous channels-first or channels-last (checked by the caller).
    """
    c, positions = t.shape[1], math.prod(t.shape[2:])
    if t.is_contiguous():
        return c * positions, positions, 1
    return c * positions, 1, c  # channels-last


def _as3d(x: torch.Tensor, factors, before, dilation):
    """A 2-D conv as the 3-D one the kernels run (module doc); 3-D convs pass unchanged."""
    if x.dim() == 5:
        return tuple(factors), tuple(before), tuple(dilation)
    one = torch.ones_like(factors[0][:, :1])  # (R, 1)
    return (factors[0], one, factors[1]), (before[0], 0, before[1]), (dilation[0], 1, dilation[1])


def _shape3d(shape: torch.Size) -> tuple[int, ...]:
    """``(N, C, D, H, W)`` of a 5-D shape, or ``(N, C, H, 1, W)`` of a 4-D one (see _as3d)."""
    return tuple(shape) if len(shape) == 5 else (*shape[:3], 1, shape[3])


def _problem(x, taps, kernel, before, dilation, out_shape, t_pad, out_like) -> native_abi.Fwd:
    """The :class:`~hoconv._fast.native_abi.Fwd` of a conv (pointers of x and the taps set)."""
    (n, c, d, h, w), (_, t, do, ho, wo) = _shape3d(x.shape), _shape3d(out_shape)
    rank = taps[0].shape[1]
    p = native_abi.Fwd(
        x=x.data_ptr(), fd=taps[0].data_ptr(), fh=taps[1].data_ptr(), fw=taps[2].data_ptr(),
        N=n, C=c, D=d, H=h, W=w, Do=do, Ho=ho, Wo=wo, R=rank, T=t, Tp=t_pad,
        **native_abi.geometry(kernel, before, dilation),
    )  # fmt: skip
    p.xn, p.xc, p.xp = _layout_strides(x)
    p.on, p.oc, p.op = _layout_strides(out_like)
    return p


def _taps(factors, rank: int) -> list[torch.Tensor]:
    """The kernel factors transposed, ``(K_i, R)`` each, checked."""
    taps = [f.t().contiguous() for f in factors]
    for name, tap in zip(("fd", "fh", "fw"), taps):
        check_tensor(f"kernel factor {name}", tap, (tap.shape[0], rank))
    return taps


def fused_forward(
    x: torch.Tensor,
    in_t: torch.Tensor,
    factors: tuple[torch.Tensor, ...],
    out_matrix: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    before: tuple[int, ...],
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """The whole stride-1 CP conv of a 2-D or 3-D ``x`` in one native pass, no grad.

    Args:
        x: float32 ``(N, C, *S)``, contiguous channels-first or channels-last.
        in_t: ``A^T``, ``(C, R)``, R a multiple of 16.
        factors: one ``(R, K_i)`` per spatial axis.
        out_matrix: ``B``, ``(T, R)``.
        bias: ``(T,)`` or None.
        out: the output ``(N, T, *S_out)`` to write, contiguous in x's layout.
        before: the leading padding of each axis.
        dilation: per axis.

    Returns:
        ``out``.

    Raises:
        ValueError: a tensor of the wrong dtype, device, layout or shape (named).
    """
    lib = library()
    check_layout("x", x)
    check_layout("out", out)
    factors, before, dilation = _as3d(x, factors, before, dilation)
    c, rank, t = x.shape[1], in_t.shape[1], out.shape[1]
    t_pad = -(-t // 16) * 16
    in_t = in_t.contiguous()
    check_tensor("in_t (A^T)", in_t, (c, rank))
    check_tensor("out_matrix (B)", out_matrix, (t, rank), contiguous=False)
    taps = _taps(factors, rank)
    ut = out_matrix.new_zeros(rank, t_pad)
    ut[:, :t] = out_matrix.t()  # (R, Tp): padded to whole vectors
    if bias is not None:  # (Tp,): whole vectors, as U^T's columns
        check_tensor("bias", bias.contiguous(), (t,))
        bias = torch.cat([bias.contiguous(), bias.new_zeros(t_pad - t)])
    kernel = tuple(f.shape[1] for f in factors)
    p = _problem(x, taps, kernel, before, dilation, out.shape, t_pad, out)
    p.vt, p.ut, p.out = in_t.data_ptr(), ut.data_ptr(), out.data_ptr()
    p.bias = None if bias is None else bias.data_ptr()
    ws_len = lib.hc_cp_fwd_ws_floats(p)  # per thread
    threads = max(1, min(torch.get_num_threads(), p.N * p.Do))  # no more threads than frames
    ws = x.new_empty(threads, ws_len)
    native_abi.call(lib, "hc_cp_fwd", native_abi.FwdCall(p, ws.data_ptr(), ws_len, threads))
    return out


def _bwd_split(n: int, span: int, do: int) -> tuple[int, int]:
    """(threads, chunks): fewer samples than threads get ranges of >= span output frames per
    unit (their shared input frames cost span - 1 recomputed frames per cut)."""
    threads = max(1, torch.get_num_threads())
    chunks = max(1, min(threads // math.gcd(n, threads), do // span))
    return max(1, min(threads, n * chunks)), chunks


def fused_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    in_factor: torch.Tensor,
    factors: tuple[torch.Tensor, ...],
    out_matrix: torch.Tensor,
    before: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
    """Gradients of :func:`fused_forward` in one native pass.

    Args:
        grad_out: ``(N, T, *S_out)``, contiguous in either layout.
        x: the forward's input (as :func:`fused_forward` takes it).
        in_factor: ``A``, ``(R, C)``, R a multiple of 16.
        factors: one ``(R, K_i)`` per spatial axis.
        out_matrix: ``B``, ``(T, R)``.
        before: the leading padding of each axis.
        dilation: per axis.

    Returns:
        ``(grad_x, grad_in_factor, grad_out_matrix, grad_factors, grad_bias)``; grad_x in x's
        layout; grad_bias ``(T,)``, the sum of ``grad_out`` over all but its channel axis.
    """
    lib = library()
    check_layout("x", x)
    check_layout("grad_out", grad_out)
    factors, before, dilation = _as3d(x, factors, before, dilation)
    rank, c, t = in_factor.shape[0], x.shape[1], grad_out.shape[1]
    c_pad = -(-c // 16) * 16
    kernel = tuple(f.shape[1] for f in factors)
    taps = _taps(factors, rank)
    in_t, out_matrix = in_factor.t().contiguous(), out_matrix.contiguous()  # (C, R), (T, R)
    check_tensor("in_factor (A)", in_t, (c, rank))
    check_tensor("out_matrix (B)", out_matrix, (t, rank))
    in_pad = in_factor.new_zeros(rank, c_pad)
    in_pad[:, :c] = in_factor  # (R, Cp): padded to whole vectors
    p = _problem(x, taps, kernel, before, dilation, grad_out.shape, t, grad_out)
    p.vt = in_t.data_ptr()
    grad_x = torch.empty_like(x)  # x's layout
    b = native_abi.Bwd(p, grad_out.data_ptr(), out_matrix.data_ptr(), in_pad.data_ptr(),
                       grad_x.data_ptr(), c_pad)  # fmt: skip
    span = (kernel[0] - 1) * dilation[0] + 1
    ws_len = lib.hc_cp_bwd_ws_floats(b)  # per thread
    grads_len = (t + c + sum(kernel)) * rank + t  # ..., then the bias gradient (T,)
    threads, chunks = _bwd_split(p.N, span, p.Do)
    ws = x.new_empty(threads, ws_len)
    grads = x.new_zeros(threads, grads_len)
    side = x.new_empty(p.N * chunks * max(1, (span - 1) * p.H * p.W * c_pad))
    native_abi.call(lib, "hc_cp_bwd", native_abi.BwdCall(
        b, ws.data_ptr(), grads.data_ptr(), side.data_ptr(), ws_len, grads_len, threads, chunks
    ))  # fmt: skip
    total = grads.sum(0)  # ((T + C + sum K) R + T,)
    parts = total[:-t].view(-1, rank).split([t, c, *kernel])  # (T + C + sum K, R)
    grad_factors = tuple(q.t() for q in parts[2:])  # (R, K_i) each
    if x.dim() == 4:  # drop the inserted 1-tap axis
        grad_factors = (grad_factors[0], grad_factors[2])
    return grad_x, parts[1].t(), parts[0], grad_factors, total[-t:]


__all__ = ["fused_backward", "fused_forward"]
