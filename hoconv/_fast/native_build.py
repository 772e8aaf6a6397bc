"""Build and load the native kernels (``csrc/``): variants, compiler, cache, ABI check.

What compiles, when: the C units of ``csrc/`` (:data:`UNITS`, the one list: ``depthwise.c``,
``gemm.c``, ``fused_fwd.c``, ``fused_bwd.c``, ``fused_wgrad.c``, ``abi.c``; shared
declarations in ``hoconv_native.h``), each its own translation unit, linked into one shared
library at the first use in a process, with the system C compiler (``$CC`` or ``cc``,
``-O3 -fopenmp`` and the variant's ``-march``), in a few seconds. Variants: ``avx512`` (``-march=x86-64-v4``), ``avx2`` (``-march=x86-64-v3``:
AVX2 + FMA) and ``generic`` (the compiler's baseline), chosen from this CPU's flags (the best
it runs) or forced with ``HOCONV_NATIVE_ISA``. The library is cached in ``$HOCONV_CACHE``
(default ``~/.cache/hoconv``) under a hash of the sources, the compiler and its version, the
variant, the flags and this CPU's feature flags, so another machine sharing the cache builds
its own. ``HOCONV_NATIVE=0``: never build or use it. Without a compiler (or if the build
fails) the fast path keeps its eager kernels, and a warning says why, once.

Threads: the kernels run on the OpenMP runtime PyTorch has already loaded (``libgomp.so.1``
resolves to torch's copy), so they share the GEMMs' thread pool. A compiler that rejects
``-fopenmp`` (e.g. Apple clang) builds them without it: they then run on one thread, and a
warning says so.
"""

from __future__ import annotations

import ctypes
import functools
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

from hoconv._fast import native_abi

SOURCE_DIR = Path(__file__).with_name("csrc")
UNITS = ("depthwise.c", "gemm.c", "fused_fwd.c", "fused_bwd.c", "fused_wgrad.c", "abi.c")
HEADERS = ("hoconv_native.h",)
VARIANT_FLAGS = {
    "avx512": ("-march=x86-64-v4",),
    "avx2": ("-march=x86-64-v3",),
    "generic": (),
}
BASE_FLAGS = ("-O3", "-fopenmp", "-shared", "-fPIC", "-Wno-psabi")
FLAGS = BASE_FLAGS  # the variant's -march is added by build()
SERIAL_FLAGS = tuple(f for f in FLAGS if f != "-fopenmp")  # a compiler without OpenMP
_LOCK = threading.Lock()
_STATE: dict[str, ctypes.CDLL | None] = {}  # variant -> loaded library, or None once tried


@functools.cache  # read once per process: every layer call asks which variant runs
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


@functools.cache
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


def cache_key(compiler: str, isa: str, flags: tuple[str, ...]) -> str:
    """The text hashed into the library's name: sources, compiler + version, variant, flags, CPU."""
    sources = [f"{name}\n{(SOURCE_DIR / name).read_text()}" for name in (*HEADERS, *UNITS)]
    parts = [*sources, compiler, _compiler_version(compiler), isa, *flags, _cpu_flags()]
    return "\0".join(parts)


def build(flags: tuple[str, ...] = FLAGS, isa: str | None = None) -> Path:
    """Compile the units into the cache (atomic rename) unless there; returns the path.

    Raises:
        OSError: no compiler, or the compiler failed (its message, shortened).
    """
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler {compiler!r} on PATH (set CC)")
    isa = isa or variant()
    flags = (*flags, *VARIANT_FLAGS[isa])
    digest = hashlib.sha256(cache_key(compiler, isa, flags).encode()).hexdigest()[:16]
    path = _cache_dir() / f"hoconv-native-{isa}-{digest}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / "native.so"
        objects = _compile_units(compiler, flags, Path(tmp))
        _run(compiler, [compiler, *flags, "-o", str(out), *objects])
        os.replace(out, path)
    return path


def _run(compiler: str, cmd: list[str]) -> None:
    """Run one compiler command; OSError with its message if it fails or hangs."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.SubprocessError as err:  # e.g. a compiler that hangs
        raise OSError(f"{compiler} did not finish: {err}") from err
    if proc.returncode != 0:
        raise OSError(f"{compiler} failed: {proc.stderr.strip()[:500]}")


def _compile_units(compiler: str, flags: tuple[str, ...], tmp: Path) -> list[str]:
    """Compile each unit to an object file in ``tmp``, all at once; returns their paths."""
    compile_flags = [f for f in flags if f != "-shared"]
    objects = [str(tmp / f"{Path(name).stem}.o") for name in UNITS]
    with ThreadPoolExecutor(max_workers=len(UNITS)) as pool:
        jobs = [
            pool.submit(
                _run,
                compiler,
                [
                    compiler,
                    *compile_flags,
                    "-I",
                    str(SOURCE_DIR),
                    "-c",
                    str(SOURCE_DIR / name),
                    "-o",
                    obj,
                ],
            )  # fmt: skip
            for name, obj in zip(UNITS, objects)
        ]
        for job in jobs:
            job.result()
    return objects


def _build_with_fallback(isa: str) -> Path:
    """:func:`build` with OpenMP, else without it (the kernels then run on one thread)."""
    try:
        return build(FLAGS, isa)
    except OSError as err:
        try:
            path = build(SERIAL_FLAGS, isa)
        except OSError:
            raise err from None
        warnings.warn(
            f"hoconv: native kernels built without OpenMP ({err}); they run on one thread",
            RuntimeWarning,
            stacklevel=5,
        )
        return path


def library() -> ctypes.CDLL | None:
    """The library of :func:`variant`, built, loaded and checked on first use; None if not."""
    if os.environ.get("HOCONV_NATIVE", "1") == "0":  # off now; not remembered
        return None
    isa = variant()
    if isa in _STATE:
        return _STATE[isa]
    with _LOCK:
        if isa not in _STATE:
            lib = None
            try:
                lib = native_abi.bind(ctypes.CDLL(str(_build_with_fallback(isa))))
            except OSError as err:
                warnings.warn(
                    f"hoconv: native kernels unavailable ({err}); using the eager kernels "
                    "(set HOCONV_NATIVE=0 to silence)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            _STATE[isa] = lib
    return _STATE[isa]


__all__ = ["build", "cache_key", "cpu_variants", "library", "variant"]
