"""Activations as matrices of rows, in either memory layout, and the GEMMs of the fast path.

A 1x1 convolution is a GEMM on the ``(positions, channels)`` matrix of each sample. An
``(N, C, *S)`` tensor gives that matrix without a copy in both PyTorch layouts:

- channels-last (``x.movedim(1, -1)`` contiguous, e.g. ``torch.channels_last_3d``): the rows
  are contiguous, and the whole batch is one ``(N * P, C)`` matrix: one GEMM, the fastest
  case (measured ~180 GFLOP/s on 2 cores, the machine's peak);
- channels-first (contiguous): each sample's matrix is the transpose of a contiguous
  ``(C, P)`` one; BLAS reads and writes it in place, one GEMM per sample (``bmm``).

Outputs follow the input's layout, as ``torch.nn.Conv*d``'s do.

On flat (channels-last) rows the products run as oneDNN 1x1 convolutions (:func:`project`,
:func:`project_weight_grad`) rather than BLAS GEMMs: measured on (65536, 64) rows, 2 threads,
2.95-3.2 ms vs 3.9-4.0 ms for the three products and 3.0 vs 5.3 ms for the weight gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hoconv._fast import workspace


def channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` (N, C, *S) is stored channels-last (and is not also channels-first)."""
    return x.dim() > 2 and x.shape[1] > 1 and x.movedim(1, -1).is_contiguous()


def rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, *S) as an (N, P, C) matrix batch view (a copy only for other strides)."""
    n, c = x.shape[:2]
    if channels_last(x):
        return x.movedim(1, -1).view(n, -1, c)  # (N, P, C), contiguous
    return x.reshape(n, c, -1).transpose(1, 2)  # (N, P, C), transposed rows


def empty_like_layout(x: torch.Tensor, *shape: int) -> torch.Tensor:
    """An uninitialised ``(N, C', *S')`` tensor in ``x``'s layout (from the workspace pool)."""
    if channels_last(x):
        moved = workspace.empty((shape[0], *shape[2:], shape[1]), x.dtype, x.device)
        return moved.movedim(-1, 1)  # (N, *S', C') storage
    return workspace.empty(shape, x.dtype, x.device)


def flat(a: torch.Tensor) -> bool:
    """Whether the (N, M, K) batch ``a`` is one (N * M, K) row-major matrix (channels-last)."""
    return a.stride(2) == 1 and a.stride(1) == a.shape[2] and a.stride(0) == a.shape[1] * a.shape[2]


def mm_rows(
    a: torch.Tensor,
    b: torch.Tensor,
    out: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``a[n] @ b (+ bias)`` for every sample: a (N, M, K), b (K, L) -> (N, M, L).

    Args:
        a: a matrix batch (rows contiguous or transposed).
        b: the shared right operand.
        out: where to write (any strides BLAS can write, e.g. a :func:`rows` view).
        bias: ``(L,)`` added to every row.
    """
    n, m, k = a.shape
    small = n > 1 and m < k  # small extents: one GEMM (and a copy) beats N tiny ones
    if small and not flat(a):
        a = a.contiguous()
    if out is not None and not small and flat(out.transpose(1, 2)):
        # channels-first output: compute out^T = b^T a^T into its contiguous (N, L, M) storage
        # (a bmm writing the transposed view directly ran 1.7x slower: 3.9 vs 2.3 ms)
        bt = b.t().expand(n, *b.t().shape)  # (N, L, K) view
        target = out.transpose(1, 2)  # (N, L, M), contiguous
        if bias is None:
            torch.bmm(bt, a.transpose(1, 2), out=target)
        else:
            torch.baddbmm(bias.view(1, -1, 1), bt, a.transpose(1, 2), out=target)
        return out
    if not flat(a) or (out is not None and not flat(out) and not small):
        bb = b.expand(n, *b.shape)  # (N, K, L) view
        if bias is None:
            return torch.bmm(a, bb, out=out)
        return torch.baddbmm(bias.view(1, 1, -1), a, bb, out=out)
    a2 = a.view(n * m, k)
    target = None if out is None or not flat(out) else out.view(n * m, -1)
    result = torch.mm(a2, b, out=target) if bias is None else torch.addmm(bias, a2, b, out=target)
    result = result.view(n, m, -1)
    if out is not None and target is None:
        out.copy_(result)
        return out
    return result


def tmm_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_n a[n]^T @ b[n]``: a (N, M, K), b (N, M, L) -> (K, L).

    One GEMM over the ``N * M`` rows for one sample, when both batches are flat, or when ``M``
    is small (then the operands are copied: cheaper than N GEMMs plus the sum of their
    (N, K, L) results, measured 1.2 vs 5.8 ms for (2, 4, 512) x (2, 4, 2304)); else a bmm and
    a sum. The product is formed in its taller orientation.
    """
    n, m, k = a.shape
    if n == 1 or (flat(a) and flat(b)) or m < max(k, b.shape[2]):  # n == 1: reshapes are views
        a2, b2 = a.reshape(n * m, k), b.reshape(n * m, b.shape[2])
        if k >= b.shape[2]:
            return torch.mm(a2.t(), b2)
        # the taller product, transposed: MKL runs wide outputs of a short contraction slower
        # (measured (8, 512) x (8, 2288): 0.27 ms as (512, 2288), 0.18 ms as (2288, 512))
        return torch.mm(b2.t(), a2).t()
    return torch.bmm(a.transpose(1, 2), b).sum(0)


def _as_conv(a: torch.Tensor) -> torch.Tensor:
    """Flat rows ``a`` (N, M, K) as a channels-last (N, K, M, 1) image (a view)."""
    n, m, k = a.shape
    return a.view(n, m, 1, k).permute(0, 3, 1, 2)


def project(
    a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``a[n] @ weight^T (+ bias)`` for flat rows a (N, M, K), weight (L, K) -> flat (N, M, L).

    One oneDNN 1x1 convolution over the batch (its output is channels-last, i.e. flat rows).
    """
    n, m, _ = a.shape
    out = F.conv2d(_as_conv(a), weight.view(*weight.shape, 1, 1), bias)  # (N, L, M, 1)
    return out.permute(0, 2, 3, 1).reshape(n, m, weight.shape[0])  # (N, M, L), a view


def project_weight_grad(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``sum_n g[n]^T a[n]`` for flat rows g (N, M, L), a (N, M, K) -> (L, K).

    The weight gradient of :func:`project`, by oneDNN's 1x1 convolution backward.
    """
    shape = (g.shape[2], a.shape[2], 1, 1)
    weight = a.new_empty(1).expand(shape)  # only its shape is read
    grad = torch.ops.aten.convolution_backward(
        _as_conv(g), _as_conv(a), weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
        [False, True, False],
    )[1]  # fmt: skip
    return grad.view(shape[:2])
