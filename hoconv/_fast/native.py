"""Native (C) kernels of the fast CP path, float32 on CPU.

Why: on CPU a CP layer's depthwise convs have no good library kernel, and a whole layer run
as separate library calls streams its rank-space tensors through memory between them.

- ``fused_forward`` / ``fused_backward`` (``fused.c``, ``fused_grad.c``): a whole stride-1
  2-D / 3-D CP conv per sample, frame by frame, every rank-space intermediate in a per-thread
  workspace (see :mod:`hoconv._fast.fused`). The 1x1 convs are register-tiled GEMMs (6 rows x
  64 columns of accumulators), ~112-114 GFLOP/s per Zen 4 core in cache.
- ``depthwise_separable`` (forward, and the input gradient as the flipped-kernel conv): a CP
  kernel's spatial part is separable, so it runs three 1-D passes (9 taps for 3x3x3) instead
  of oneDNN's 27 taps, per 32-channel block, the W and H passes into a compact scratch that
  stays in L2 and the D pass from a ring of frames straight into the output. Rank 288,
  one 18-frame 32x32 window, 2 threads: 3.0 ms against oneDNN's 7.1 ms.
- ``depthwise_weight_grad``: oneDNN's depthwise weight backward is 2x slower than the slab
  convolution of :mod:`hoconv._fast.depthwise`, which needs the output gradient transposed
  into a plain-layout kernel first (a copy as long as the conv). Here each row of inputs is
  carried in registers across the three taps along W.

What compiles, when: ``native.c``, ``fused.c`` and ``fused_grad.c`` (~880 lines, one unit),
at the first use in a process, with the system C compiler (``$CC`` or ``cc``, ``-O3
-march=native -fopenmp``), in ~1 s. The library is cached in ``$HOCONV_CACHE`` (default
``~/.cache/hoconv``) under a hash of the source, the flags and this CPU's feature flags, so
another machine sharing the cache builds its own. Set ``HOCONV_NATIVE=0`` to never build or
use it. Without a compiler (or if the build fails) the fast path keeps its eager (oneDNN /
aten) kernels, and a warning says why, once.

Threads: the channels (fused: the samples, or a sample's frames) are split over
``torch.get_num_threads()`` OpenMP threads of the runtime PyTorch has already loaded
(``libgomp.so.1`` resolves to torch's copy), so the kernels share the GEMMs' thread pool. A pool of Python threads measured 1.8x slower in the
layer: the GEMMs' OpenMP threads still spin after each GEMM and the cores were oversubscribed.
Like every torch op on that runtime, a forked child must ``torch.set_num_threads(1)`` (as
DataLoader workers do) before calling them. A compiler that rejects ``-fopenmp`` (e.g. Apple
clang) builds them without it: they then run on one thread, and a warning says so.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

# compiled as one unit, in this order (fused.c uses native.c's static helpers)
SOURCE_PATHS = tuple(Path(__file__).with_name(f) for f in ("native.c", "fused.c", "fused_grad.c"))
# Build variants: the instruction set the library is compiled for. The variant is chosen at
# run time from this CPU's flags (the best one it can run), or forced with HOCONV_NATIVE_ISA.
VARIANT_FLAGS = {
    "avx512": ("-march=x86-64-v4",),
    "avx2": ("-march=x86-64-v3",),
    "generic": (),
}
BASE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC")
FLAGS = BASE_FLAGS  # the variant's -march is added by _variant_flags
SERIAL_FLAGS = tuple(f for f in FLAGS if f != "-fopenmp")  # a compiler without OpenMP
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": the loaded library, or None once tried
# C functions: name, pointer arguments, long arguments, result (None: void)
_SIGNATURES = (
    ("dw_sep_f32", 6, 19, None),
    ("dw_wgrad_f32", 3, 18, None),
    ("cp_fwd_f32", 9, 28, None),
    ("cp_bwd_f32", 12, 30, None),
    ("cp_fwd_ws_floats", 0, 8, ctypes.c_long),  # workspace sizes: the C layout's own count
    ("cp_bwd_ws_floats", 0, 9, ctypes.c_long),
)
MAX_TAPS = 16  # taps per axis of dw_sep_f32 (MAXK in native.c)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def cpu_variants() -> tuple[str, ...]:
    """The build variants this CPU can run, best first (from /proc/cpuinfo's flags)."""
    flags = set(_cpu_flags().split())
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ("generic",)
    out = []
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        out.append("avx512")
    if {"avx2", "fma", "bmi2"} <= flags:
        out.append("avx2")
    return (*out, "generic")


def variant() -> str:
    """The variant this process builds and loads: HOCONV_NATIVE_ISA if set, else the best."""
    runnable = cpu_variants()
    forced = os.environ.get("HOCONV_NATIVE_ISA", "").strip().lower()
    if not forced or forced == "auto":
        return runnable[0]
    if forced not in VARIANT_FLAGS:
        raise ValueError(
            f"HOCONV_NATIVE_ISA must be one of {(*VARIANT_FLAGS, 'auto')}, got {forced!r}"
        )
    if forced not in runnable:
        raise ValueError(f"HOCONV_NATIVE_ISA={forced}: this CPU runs only {runnable}")
    return forced


def _compiler_version(compiler: str) -> str:
    try:
        proc = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "unknown"


def _cache_dir() -> Path:
    return Path(os.environ.get("HOCONV_CACHE", Path.home() / ".cache" / "hoconv"))


def _build(flags: tuple[str, ...] = FLAGS) -> Path:
    """Compile the C sources into the cache (atomic rename) unless it is there; returns the path."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler {compiler!r} on PATH (set CC)")
    isa = variant()
    flags = (*flags, *VARIANT_FLAGS[isa])
    source = "\n".join(p.read_text() for p in SOURCE_PATHS)
    parts = [source, compiler, _compiler_version(compiler), isa, *flags, _cpu_flags()]
    key = hashlib.sha256("\0".join(parts).encode())
    path = _cache_dir() / f"hoconv-native-{isa}-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, out = Path(tmp) / "native.c", Path(tmp) / "native.so"
        src.write_text(source)
        try:
            proc = subprocess.run(
                [compiler, *flags, "-o", str(out), str(src)],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        except subprocess.SubprocessError as err:  # e.g. a compiler that hangs
            raise OSError(f"{compiler} did not finish: {err}") from err
        if proc.returncode != 0:
            raise OSError(f"{compiler} failed: {proc.stderr.strip()[:500]}")
        os.replace(out, path)
    return path


def _build_with_fallback() -> Path:
    """:func:`_build` with OpenMP, else without it (the kernels then run on one thread)."""
    try:
        return _build(FLAGS)
    except OSError as err:
        try:
            path = _build(SERIAL_FLAGS)
        except OSError:
            raise err from None
        warnings.warn(
            f"hoconv: native kernels built without OpenMP ({err}); they run on one thread",
            RuntimeWarning,
            stacklevel=4,
        )
        return path


def _library():
    """The native functions, built and loaded on first use; None when unavailable."""
    if "lib" in _STATE:
        return _STATE["lib"]
    with _LOCK:
        if "lib" not in _STATE:
            fn = None
            if os.environ.get("HOCONV_NATIVE", "1") != "0":
                try:
                    fn = ctypes.CDLL(str(_build_with_fallback()))
                    for name, pointers, longs, result in _SIGNATURES:
                        getattr(fn, name).argtypes = [ctypes.c_void_p] * pointers + [
                            ctypes.c_long
                        ] * longs
                        getattr(fn, name).restype = result
                except OSError as err:
                    warnings.warn(
                        f"hoconv: native depthwise kernel unavailable ({err}); using the "
                        "eager kernels (set HOCONV_NATIVE=0 to silence)",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            _STATE["lib"] = fn
    return _STATE["lib"]


def available() -> bool:
    """Whether the native kernel is (or can be) built and loaded in this process."""
    return _library() is not None


def _threads(rank: int) -> int:
    """OpenMP threads for a call: torch's intra-op count, at most one per 16 channels."""
    return max(1, min(torch.get_num_threads(), rank // 16))


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
    lib = _library()
    n, d, h, w, rank = x.shape
    do, ho, wo = out_spatial
    kernel = tuple(f.shape[1] for f in factors)
    taps = [f.t().contiguous().to(torch.float32) for f in factors]  # (K, R) each
    out = x.new_empty(n, do, ho, wo, rank)
    span = (kernel[0] - 1) * dilation[0] + 1
    scratch_len = (h * wo + span * ho * wo) * 32  # floats per thread (native.c)
    threads = _threads(rank)
    scratch = x.new_empty(threads, scratch_len)
    lib.dw_sep_f32(x.data_ptr(), out.data_ptr(), *(t.data_ptr() for t in taps),
                   scratch.data_ptr(), scratch_len, threads, n, d, h, w, do, ho, wo, rank,
                   *kernel, *before, *dilation)  # fmt: skip
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
    lib = _library()
    if lib is None:
        return None
    n, d, h, w, rank = x.shape
    _, do, ho, wo, _ = grad.shape
    acc = x.new_zeros(*kernel, rank)
    lib.dw_wgrad_f32(grad.data_ptr(), x.data_ptr(), acc.data_ptr(), _threads(rank), n, d, h, w,
                     do, ho, wo, rank, *kernel, *before, *dilation)  # fmt: skip
    return acc.permute(3, 0, 1, 2)  # (R, KD, KH, KW)


def _layout_strides(t: torch.Tensor) -> tuple[int, int, int]:
    """Strides of sample, channel and flattened position of an (N, C, *S) tensor.

    The tensor is contiguous channels-first or channels-last (checked by the caller).
    """
    c, positions = t.shape[1], math.prod(t.shape[2:])
    if t.is_contiguous():
        return c * positions, positions, 1
    return c * positions, 1, c  # channels-last


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
    """The whole stride-1 CP conv of a 2-D or 3-D ``x`` in one native pass (``fused.c``), no grad.

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
    """
    lib = _library()
    factors, before, dilation = _as3d(x, factors, before, dilation)
    (n, c, d, h, w), (_, t, do, ho, wo) = _shape3d(x.shape), _shape3d(out.shape)
    rank, t_pad = in_t.shape[1], -(-t // 16) * 16
    taps = [f.t().contiguous() for f in factors]  # (K, R) each
    ut = out_matrix.new_zeros(rank, t_pad)
    ut[:, :t] = out_matrix.t()  # (R, Tp): padded to whole vectors
    span = (factors[0].shape[1] - 1) * dilation[0] + 1
    ws_len = lib.cp_fwd_ws_floats(c, h, w, ho, wo, rank, t_pad, span)  # per thread
    threads = max(1, min(torch.get_num_threads(), n * do))  # no more threads than frames
    ws = x.new_empty(threads, ws_len)
    if bias is not None:  # (Tp,): whole vectors, as U^T's columns
        bias = torch.cat([bias.contiguous(), bias.new_zeros(t_pad - t)])
    in_t = in_t.contiguous()
    bias_ptr = None if bias is None else bias.data_ptr()
    lib.cp_fwd_f32(x.data_ptr(), in_t.data_ptr(), *(p.data_ptr() for p in taps), ut.data_ptr(),
                   bias_ptr, out.data_ptr(), ws.data_ptr(), ws_len, threads,
                   n, c, d, h, w, do, ho, wo, rank, t, t_pad,
                   *(f.shape[1] for f in factors), *before, *dilation,
                   *_layout_strides(x), *_layout_strides(out))  # fmt: skip
    return out


def fused_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    in_factor: torch.Tensor,
    factors: tuple[torch.Tensor, ...],
    out_matrix: torch.Tensor,
    before: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
    """Gradients of :func:`fused_forward` in one native pass (``fused_grad.c``).

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
        layout; grad_bias ``(T,)``, the sum of ``grad_out`` over all but its channel axis
        (summed in the same pass, while each frame of ``grad_out`` is in cache).
    """
    lib = _library()
    factors, before, dilation = _as3d(x, factors, before, dilation)
    (n, c, d, h, w), (_, t, do, ho, wo) = _shape3d(x.shape), _shape3d(grad_out.shape)
    rank, c_pad = in_factor.shape[0], -(-c // 16) * 16
    kernel = tuple(f.shape[1] for f in factors)
    taps = [f.t().contiguous() for f in factors]  # (K, R) each
    in_t, out_matrix = in_factor.t().contiguous(), out_matrix.contiguous()  # (C, R), (T, R)
    in_pad = in_factor.new_zeros(rank, c_pad)
    in_pad[:, :c] = in_factor  # (R, Cp): padded to whole vectors
    span = (kernel[0] - 1) * dilation[0] + 1
    ws_len = lib.cp_bwd_ws_floats(c, c_pad, h, w, ho, wo, rank, t, span)  # per thread
    grads_len = (t + c + sum(kernel)) * rank + t  # ..., then the bias gradient (T,)
    threads = max(1, torch.get_num_threads())
    # fewer samples than threads: ranges of >= span output frames per unit (their shared
    # input frames cost span - 1 recomputed frames per cut)
    chunks = max(1, min(threads // math.gcd(n, threads), do // span))
    threads = max(1, min(threads, n * chunks))
    ws = x.new_empty(threads, ws_len)
    grads = x.new_zeros(threads, grads_len)
    side = x.new_empty(n * chunks * max(1, (span - 1) * h * w * c_pad))
    grad_x = torch.empty_like(x)  # x's layout
    lib.cp_bwd_f32(x.data_ptr(), in_t.data_ptr(), *(p.data_ptr() for p in taps),
                   grad_out.data_ptr(), out_matrix.data_ptr(), in_pad.data_ptr(),
                   grad_x.data_ptr(), ws.data_ptr(), grads.data_ptr(), side.data_ptr(),
                   ws_len, grads_len, threads, chunks, n, c, c_pad, d, h, w, do, ho, wo, rank,
                   t, *kernel, *before, *dilation, *_layout_strides(x),
                   *_layout_strides(grad_out))  # fmt: skip
    total = grads.sum(0)  # ((T + C + sum K) R + T,)
    parts = total[:-t].view(-1, rank).split([t, c, *kernel])  # (T + C + sum K, R)
    grad_factors = tuple(p.t() for p in parts[2:])  # (R, K_i) each
    if x.dim() == 4:  # drop the inserted 1-tap axis
        grad_factors = (grad_factors[0], grad_factors[2])
    return grad_x, parts[1].t(), parts[0], grad_factors, total[-t:]


def _as3d(x: torch.Tensor, factors, before, dilation):
    """A 2-D conv as the 3-D one the kernels run: rows are the frames, a 1-tap middle axis.

    (Whole images as frames measured slower: a (64, 64) frame's rank-space rings do not fit
    in L2; rows do.) 3-D convs pass through unchanged.
    """
    if x.dim() == 5:
        return factors, before, dilation
    one = torch.ones_like(factors[0][:, :1])  # (R, 1)
    return (factors[0], one, factors[1]), (before[0], 0, before[1]), (dilation[0], 1, dilation[1])


def _shape3d(shape: torch.Size) -> tuple[int, ...]:
    """``(N, C, D, H, W)`` of a 5-D shape, or ``(N, C, H, 1, W)`` of a 4-D one (see _as3d)."""
    return tuple(shape) if len(shape) == 5 else (*shape[:3], 1, shape[3])


__all__ = [
    "available",
    "depthwise_separable",
    "depthwise_weight_grad",
    "fused_backward",
    "fused_forward",
]
