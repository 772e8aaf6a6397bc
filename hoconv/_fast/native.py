"""A small native (C) kernel: the kernel gradient of a stride-1 depthwise conv, channels-last.

Why: on CPU this gradient has no good library kernel. oneDNN's depthwise weight backward is
2x slower than the slab convolution of :mod:`hoconv._fast.depthwise`, and that one needs the
output gradient transposed into a plain-layout kernel first (a copy as long as the conv).
Here every output position's ``R`` channels are contiguous, so one pass with 4 independent
AVX FMA chains per 64 channels does it: rank 64, (4, 16, 32, 32), 3x3x3, 2 threads: 3.2 ms
against 12.5-14 ms (copy + slab conv).

What compiles, when: ~60 lines of C, at the first use in a process, with the system C
compiler (``$CC`` or ``cc``, ``-O3 -march=native``), in ~0.2 s. The library is cached in
``$HOCONV_CACHE`` (default ``~/.cache/hoconv``) under a hash of the source, the flags and
this CPU's feature flags, so another machine sharing the cache builds its own. Set
``HOCONV_NATIVE=0`` to never build or use it. Without a compiler (or if the build fails)
the fast path keeps its eager kernels, and a warning says why, once.

The work is split over ``torch.get_num_threads()`` Python threads (ctypes releases the GIL),
each with its own accumulator, summed at the end (no OpenMP runtime of our own).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = r"""
#include <string.h>
typedef float v16 __attribute__((vector_size(64)));
static inline v16 ld(const float* p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float* p, v16 v) { memcpy(p, &v, sizeof v); }

/* acc (KD, KH, KW, R) += sum over rows t in [t0, t1) of the flattened (n, od) index of
   gy (N, Do, Ho, Wo, R) times h (N, D, H, W, R) shifted by each tap (zero outside h). */
void dw_wgrad_f32(const float* gy, const float* h, float* acc, long t0, long t1,
                  long D, long H, long W, long Do, long Ho, long Wo, long R,
                  long KD, long KH, long KW, long pd, long ph, long pw,
                  long dd, long dh, long dw) {
  long R64 = R - R % 64, R16 = R - R % 16;
  for (long t = t0; t < t1; ++t) {
    long n = t / Do, od = t % Do;
    for (long a = 0; a < KD; ++a) {
      long id = od + a * dd - pd;
      if (id < 0 || id >= D) continue;
      for (long oh = 0; oh < Ho; ++oh) {
        const float* grow = gy + ((n * Do + od) * Ho + oh) * Wo * R;
        for (long b = 0; b < KH; ++b) {
          long ih = oh + b * dh - ph;
          if (ih < 0 || ih >= H) continue;
          const float* hrow = h + ((n * D + id) * H + ih) * W * R;
          for (long c = 0; c < KW; ++c) {
            float* ac = acc + ((a * KH + b) * KW + c) * R;
            long shift = c * dw - pw;
            long ow0 = shift < 0 ? -shift : 0;
            long ow1 = W - shift < Wo ? W - shift : Wo;
            for (long r0 = 0; r0 < R64; r0 += 64) {
              v16 s0 = ld(ac + r0), s1 = ld(ac + r0 + 16);
              v16 s2 = ld(ac + r0 + 32), s3 = ld(ac + r0 + 48);
              for (long ow = ow0; ow < ow1; ++ow) {
                const float* g = grow + ow * R + r0;
                const float* x = hrow + (ow + shift) * R + r0;
                s0 += ld(g) * ld(x);
                s1 += ld(g + 16) * ld(x + 16);
                s2 += ld(g + 32) * ld(x + 32);
                s3 += ld(g + 48) * ld(x + 48);
              }
              st(ac + r0, s0); st(ac + r0 + 16, s1); st(ac + r0 + 32, s2); st(ac + r0 + 48, s3);
            }
            for (long r0 = R64; r0 < R16; r0 += 16) {
              v16 s = ld(ac + r0);
              for (long ow = ow0; ow < ow1; ++ow)
                s += ld(grow + ow * R + r0) * ld(hrow + (ow + shift) * R + r0);
              st(ac + r0, s);
            }
            for (long r = R16; r < R; ++r) {
              float s = ac[r];
              for (long ow = ow0; ow < ow1; ++ow) s += grow[ow * R + r] * hrow[(ow + shift) * R + r];
              ac[r] = s;
            }
          }
        }
      }
    }
  }
}
"""
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib": the loaded function or None once tried, "pool"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    return Path(os.environ.get("HOCONV_CACHE", Path.home() / ".cache" / "hoconv"))


def _build() -> Path:
    """Compile SOURCE into the cache (atomic rename) unless it is there; returns the path."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler {compiler!r} on PATH (set CC)")
    key = hashlib.sha256("\0".join([SOURCE, compiler, *FLAGS, _cpu_flags()]).encode())
    path = _cache_dir() / f"dw_wgrad-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src, out = Path(tmp) / "dw_wgrad.c", Path(tmp) / "dw_wgrad.so"
        src.write_text(SOURCE)
        try:
            proc = subprocess.run(
                [compiler, *FLAGS, "-o", str(out), str(src)],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        except subprocess.SubprocessError as err:  # e.g. a compiler that hangs
            raise OSError(f"{compiler} did not finish: {err}") from err
        if proc.returncode != 0:
            raise OSError(f"{compiler} failed: {proc.stderr.strip()[:500]}")
        os.replace(out, path)
    return path


def _function():
    """The native function, built and loaded on first use; None when unavailable."""
    if "lib" in _STATE:
        return _STATE["lib"]
    with _LOCK:
        if "lib" not in _STATE:
            fn = None
            if os.environ.get("HOCONV_NATIVE", "1") != "0":
                try:
                    fn = ctypes.CDLL(str(_build())).dw_wgrad_f32
                    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 18
                    fn.restype = None
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
    return _function() is not None


def _forget_pool() -> None:
    """Threads do not survive fork: a forked child starts its own pool on first use."""
    _STATE.pop("pool", None)


os.register_at_fork(after_in_child=_forget_pool)


def _pool(workers: int) -> ThreadPoolExecutor:
    pool = _STATE.get("pool")
    if pool is None or pool._max_workers != workers:  # noqa: SLF001 - resize on thread change
        pool = ThreadPoolExecutor(workers, thread_name_prefix="hoconv-native")
        _STATE["pool"] = pool
    return pool


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
    fn = _function()
    if fn is None:
        return None
    n, d, h, w, rank = x.shape
    _, do, ho, wo, _ = grad.shape
    rows = n * do
    workers = max(1, min(torch.get_num_threads(), rows))
    accs = [x.new_zeros(*kernel, rank) for _ in range(workers)]
    bounds = [rows * i // workers for i in range(workers + 1)]

    def run(i: int) -> None:
        fn(grad.data_ptr(), x.data_ptr(), accs[i].data_ptr(), bounds[i], bounds[i + 1],
           d, h, w, do, ho, wo, rank, *kernel, *before, *dilation)  # fmt: skip

    if workers == 1:
        run(0)
    else:
        list(_pool(workers).map(run, range(workers)))
    total = accs[0]
    for acc in accs[1:]:
        total += acc
    return total.permute(3, 0, 1, 2)  # (R, KD, KH, KW)


__all__ = ["available", "depthwise_weight_grad"]
