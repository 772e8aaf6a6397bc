"""The measured tuning constants of the dispatch plan and the machine facts they gate.

:class:`Tuning` holds every constant of :mod:`hoconv._fast.plan` (measured values; history in
docs/performance.md); :data:`TUNING` the defaults, :func:`tuned` changes fields for a block
and :func:`active` gives the ones in force. :func:`native_refusal` says whether the native
kernels run on a :class:`~hoconv._fast.inputs.Machine` under them. :mod:`hoconv._fast.plan`
re-exports all of these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from hoconv._fast import native
from hoconv._fast.inputs import Machine


@dataclass(frozen=True)
class Tuning:
    """Every tuning constant of the dispatch (measured values; see docs/performance.md).

    Attributes:
        min_activations: fewer rank-space activations (N * prod(spatial) * R) than this and
            fixed per-call costs dominate: the plain path.
        dense_ratio: the dense route (reconstructed kernel, oneDNN's dense conv, ~3-5x more
            FLOP/s) wins when it costs at most this many times the CP MACs. fwd+bwd, 2
            threads: cp_resnet18_3d stem (ratio 2.3) 27 ms dense vs 52-65 ms fast; 3x3x3
            layers at 14x14 (ratio 3.0) 19 ms dense vs 12 ms fast.
        chunk_bytes: rank-space bytes per batch chunk (a stage's input + output stay in L3);
            a larger sample is streamed.
        fused_bytes: per-thread ring workspace up to which the fused schedule is taken.
        fused_min_positions: fewer positions per frame (3-D: H * W; 2-D: W) leave the fused
            GEMMs too short. fwd+bwd fused / batch, 2 threads: (2, 512, 1, 2, 2) R 2288
            13.7 / 9.9 ms, (2, 64, 8, 14, 14) R 273 6.3 / 8.8 ms, (8, 512, 7, 7) R 768
            23.2 / 14.9 ms, (8, 128, 28, 28) R 192 14.5 / 16.4 ms.
        rank_align: ranks are padded to a multiple of this when it costs <= 1/8 more work
            (a (16384, 64) x (64, 273) GEMM ran 2.2x slower than with 288).
        slab_bytes: input bytes per slab of the eager depthwise kernel gradient (in L2).
        window_bytes: rank-space bytes of one streamed slab's window (3-24 MB alike).
        native_faster_on: instruction sets on which the native kernels beat the eager ones
            (benchmarks/native_route.py, (4, 64, 16, 32, 32), ranks 64 and 273, 1 and 2
            threads, fwd and fwd+bwd): AVX2 (its 6x16 register tile) 0.26-0.86 of the eager
            time in all 8 cases; the generic build 0.33-1.39 (slower at 1 thread), so off.
    """

    min_activations: int = 1 << 14
    dense_ratio: float = 2.5
    chunk_bytes: int = 8 << 20
    fused_bytes: int = 48 << 20
    fused_min_positions: int = 32
    rank_align: int = 16
    slab_bytes: int = 1 << 23
    window_bytes: int = 6 << 20
    native_faster_on: tuple[str, ...] = ("avx512", "avx2")


TUNING = Tuning()  # the measured defaults
_ACTIVE = [TUNING]


def active() -> Tuning:
    """The :class:`Tuning` in force (:data:`TUNING` unless inside :func:`tuned`)."""
    return _ACTIVE[0]


@contextmanager
def tuned(**changes) -> Iterator[Tuning]:
    """Context manager: the dispatch runs with these :class:`Tuning` fields changed.

    E.g. ``with tuned(chunk_bytes=1 << 20): ...`` for a CPU with a smaller L3.
    """
    previous = _ACTIVE[0]
    _ACTIVE[0] = replace(previous, **changes)  # raises TypeError on an unknown field
    try:
        yield _ACTIVE[0]
    finally:
        _ACTIVE[0] = previous


def native_refusal(m: Machine, tuning: Tuning | None = None) -> str | None:
    """Why the native kernels do not run on this machine; None when they do."""
    tuning = tuning or active()
    if m.native == "0":
        return "the native kernels are off (HOCONV_NATIVE=0)"
    if m.native != "1" and m.isa not in tuning.native_faster_on:
        return (
            f"the native kernels are built for {m.isa}, measured slower than eager there "
            f"(faster only on {tuning.native_faster_on}; HOCONV_NATIVE=1 forces them)"
        )
    available = native.available() if m.available is None else m.available
    return None if available else "the native kernels are unavailable (no C compiler)"


__all__ = ["TUNING", "Tuning", "active", "native_refusal", "tuned"]
