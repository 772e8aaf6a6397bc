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

import os

import torch

from hoconv._fast import native_abi
from hoconv._fast.native_abi import check_tensor, geometry, threads_for
from hoconv._fast.native_build import VARIANT_FLAGS, cpu_variants, library, variant
from hoconv._fast.native_fused import fused_backward, fused_forward

# The instruction sets on which the native kernels are measured faster than the eager ones
# (benchmarks/native_route.py, (4, 64, 16, 32, 32), ranks 64 and 273, 1 and 2 threads, fwd
# and fwd+bwd: AVX2 0.26-0.86 of eager in all 8 cases, generic 0.33-1.39; docs/performance.md).
NATIVE_FASTER_ON = ("avx512", "avx2")
MAX_TAPS = 16  # taps per axis (MAXK in hoconv_native.h)


def native_faster() -> bool:
    """Whether the native route is taken: on the variants measured faster than eager.

    ``HOCONV_NATIVE=1`` forces it on every variant (tests of the kernels, measurements);
    unset, the rule :data:`NATIVE_FASTER_ON` decides; ``0`` turns the kernels off.
    """
    return os.environ.get("HOCONV_NATIVE", "") == "1" or variant() in NATIVE_FASTER_ON


def available() -> bool:
    """Whether the native kernels are (or can be) built and loaded in this process."""
    return library() is not None


def supports(x: torch.Tensor, kernel: tuple[int, ...]) -> bool:
    """Whether :func:`depthwise_separable` takes ``x`` (N, D, H, W, R) with this kernel."""
    return (
        x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.shape[-1] % 16 == 0
        and max(kernel) <= MAX_TAPS
        and native_faster()
        and available()
    )


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
        x: contiguous float32 ``(N, D, H, W, R)``, ``R`` a multiple of 16 (see :func:`supports`).
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


def fused_refusal(
    x: torch.Tensor,
    rank: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    params: tuple[torch.Tensor | None, ...] = (),
) -> str | None:
    """Why :func:`fused_forward` cannot take ``x`` (N, C, *S) for this CP conv; None if it can.

    ``params``: the factors and bias, which must be float32 CPU tensors like ``x``.
    """
    if x.dim() not in (4, 5):
        return f"x has {x.dim() - 2} spatial axes, the fused pass runs 2-D and 3-D convs"
    if x.dtype != torch.float32:
        return f"x is {x.dtype}, the fused pass is float32"
    if x.device.type != "cpu":
        return f"x is on {x.device}, the fused pass runs on CPU"
    for t in params:
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            return f"a factor or the bias is {t.dtype} on {t.device}, x is float32 on cpu"
    if any(s != 1 for s in stride):
        return f"stride is {tuple(stride)}, the fused pass needs stride 1"
    if rank % 16:
        return f"rank {rank} is not a multiple of 16 (padding it would cost > 1/8 more work)"
    if max(kernel) > MAX_TAPS:
        return f"kernel {tuple(kernel)} has more than {MAX_TAPS} taps on an axis"
    if not (x.is_contiguous() or x.movedim(1, -1).is_contiguous()):
        return "x is not contiguous channels-first or channels-last"
    return _route_refusal()


@torch.compiler.assume_constant_result
def _route_refusal() -> str | None:
    """Why the native route is off in this process (None: on); a constant to compilers."""
    if not native_faster():
        return (
            f"the native kernels are built for {variant()}, measured slower than eager there "
            f"(faster only on {NATIVE_FASTER_ON})"
        )
    if not available():
        return "the native kernels are unavailable (no C compiler, or HOCONV_NATIVE=0)"
    return None


def fused_supports(
    x: torch.Tensor,
    rank: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    params: tuple[torch.Tensor | None, ...] = (),
) -> bool:
    """Whether :func:`fused_forward` takes ``x`` (N, C, *S) for a CP conv of this geometry
    with these factors and bias (:func:`fused_refusal` says why not)."""
    return fused_refusal(x, rank, kernel, stride, params) is None


__all__ = [
    "NATIVE_FASTER_ON",
    "VARIANT_FLAGS",
    "available",
    "cpu_variants",
    "depthwise_separable",
    "depthwise_weight_grad",
    "fused_backward",
    "fused_forward",
    "fused_refusal",
    "fused_supports",
    "native_faster",
    "supports",
    "variant",
]
