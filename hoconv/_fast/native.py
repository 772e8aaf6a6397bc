"""Native (C) kernels of the fast CP path, float32 on CPU: the calls and when they run.

Why: on CPU a CP layer's depthwise convs have no good library kernel, and a whole layer run
as separate library calls streams its rank-space tensors through memory between them.

- ``fused_forward`` / ``fused_backward`` (``csrc/fused_fwd.c``, ``csrc/fused_bwd.c``): a
  whole stride-1 2-D / 3-D CP conv per sample, frame by frame, every rank-space intermediate
  in a per-thread workspace (see :mod:`hoconv._fast.fused`). The 1x1 convs are
  register-tiled GEMMs (``csrc/gemm.c``).
- ``depthwise_separable`` (forward, and the input gradient as the flipped-kernel conv): a CP
  kernel's spatial part is separable, so it runs three 1-D passes (9 taps for 3x3x3) instead
  of oneDNN's 27 taps, per 32-channel block (``csrc/depthwise.c``).
- ``depthwise_weight_grad``: the depthwise kernel gradient, each row of inputs carried in
  registers across the three taps along W.

Building, loading, variants and the cache: :mod:`hoconv._fast.native_build`. Each call fills
one struct (:mod:`hoconv._fast.native_abi`); tensors are checked here (a ValueError names the
one that is wrong) and the geometry again in C (its message names the field).

Threads: the channels (fused: the samples, or a sample's frames) are split over
``torch.get_num_threads()`` OpenMP threads of torch's runtime. Like every torch op on that
runtime, a forked child must ``torch.set_num_threads(1)`` (as DataLoader workers do) first.
"""

from __future__ import annotations

import torch

from hoconv._fast import native_abi
from hoconv._fast.native_abi import check_tensor, geometry, threads_for
from hoconv._fast.native_build import VARIANT_FLAGS, cpu_variants, library, variant
from hoconv._fast.native_fused import fused_backward, fused_forward

MAX_TAPS = 16  # taps per axis (MAXK in hoconv_native.h)


def available() -> bool:
    """Whether the native kernels are (or can be) built and loaded in this process."""
    return library() is not None


def depthwise_separable(
    x: torch.Tensor,
    factors: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    out_spatial: tuple[int, int, int],
    before: tuple[int, int, int],
    dilation: tuple[int, int, int],
) -> torch.Tensor:
    """Stride-1 depthwise conv with the separable kernel ``fd[r, a] fh[r, b] fw[r, c]``.

    ``out[n, o, r] = sum_k fd[r, a] fh[r, b] fw[r, c] x[n, o + (a, b, c) * dilation - before, r]``
    (zero outside ``x``); ``before`` may be negative (cropping).

    Args:
        x: contiguous float32 ``(N, D, H, W, R)``, ``R`` a multiple of 16
            (:func:`hoconv._fast.plan.native_depthwise`).
        factors: ``(R, KD)``, ``(R, KH)``, ``(R, KW)``.
        out_spatial: ``(Do, Ho, Wo)``.
        before: the leading offset (padding) of each axis.
        dilation: per axis.

    Returns:
        Contiguous ``(N, Do, Ho, Wo, R)``.
    """
    check_tensor("x", x)
    n, d, h, w, rank = x.shape
    do, ho, wo = out_spatial
    kernel = tuple(f.shape[1] for f in factors)
    taps = [f.t().contiguous().to(torch.float32) for f in factors]  # (K, R) each
    for name, t, k in zip(("fd", "fh", "fw"), taps, kernel):
        check_tensor(name, t, (k, rank))
    out = x.new_empty(n, do, ho, wo, rank)
    span = (kernel[0] - 1) * dilation[0] + 1
    scratch_len = (h * wo + span * ho * wo) * 32  # floats per thread (depthwise.c)
    threads = threads_for(rank)
    scratch = x.new_empty(threads, scratch_len)
    args = native_abi.DwSep(
        x.data_ptr(), *(t.data_ptr() for t in taps), out.data_ptr(), scratch.data_ptr(),
        scratch_len, threads, n, d, h, w, do, ho, wo, rank, **geometry(kernel, before, dilation),
    )  # fmt: skip
    native_abi.call(library(), "hc_dw_sep", args)
    return out


def depthwise_weight_grad(
    grad: torch.Tensor,
    x: torch.Tensor,
    kernel: tuple[int, int, int],
    before: tuple[int, int, int],
    dilation: tuple[int, int, int],
) -> torch.Tensor | None:
    """``dW[r, a, b, c] = sum g[n, o, r] x[n, o + (a, b, c) * dilation - before, r]``, stride 1.

    Args:
        grad: output gradient, contiguous float32 ``(N, Do, Ho, Wo, R)``.
        x: the conv's (unpadded) input, contiguous float32 ``(N, D, H, W, R)``.
        kernel: ``(KD, KH, KW)``.
        before: the leading zero padding of each axis.
        dilation: per axis.

    Returns:
        ``(R, KD, KH, KW)`` float32, or None when the native kernel is unavailable.
    """
    lib = library()
    if lib is None:
        return None
    check_tensor("x", x)
    n, d, h, w, rank = x.shape
    check_tensor("grad", grad, (n, *grad.shape[1:4], rank))
    _, do, ho, wo, _ = grad.shape
    acc = x.new_zeros(*kernel, rank)
    args = native_abi.DwWgrad(
        grad.data_ptr(), x.data_ptr(), acc.data_ptr(), threads_for(rank), n, d, h, w, do, ho, wo,
        rank, **geometry(kernel, before, dilation),
    )  # fmt: skip
    native_abi.call(lib, "hc_dw_wgrad", args)
    return acc.permute(3, 0, 1, 2)  # (R, KD, KH, KW)


__all__ = [
    "MAX_TAPS",
    "VARIANT_FLAGS",
    "available",
    "cpu_variants",
    "depthwise_separable",
    "depthwise_weight_grad",
    "fused_backward",
    "fused_forward",
    "variant",
]
