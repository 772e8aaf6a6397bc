"""Choice of the execution path of a factorized convolution ("plain" or "fast").

The "dense" path reconstructs the dense kernel (one GEMM) and runs the dense convolution: it
wins when the CP layer saves few multiply-accumulates (e.g. an RGB stem). The fast path
(:mod:`hoconv._fast.cp`) is measured faster than the plain one on CPU for
float32 / bfloat16 (oneDNN kernels); float64 has no oneDNN kernel (its fast path is exact
but slow) and accelerators are not measured yet, so both keep the plain path unless the
fast one is asked for explicitly. Exporters and compilers (ONNX, TorchScript tracing,
``torch.compile`` / ``torch.export``) always get the plain path from ``"auto"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMPLEMENTATIONS = ("auto", "plain", "fast", "dense")
FAST_DTYPES = (torch.float32, torch.bfloat16)
# Below this many rank-space activations (N * prod(spatial) * R) fixed per-call costs dominate.
MIN_ACTIVATIONS = 1 << 14
# Reconstructing the dense kernel and running oneDNN's dense convolution wins when it costs at
# most this many times the CP multiply-accumulates (dense convs run ~3-5x more FLOP/s). Measured
# fwd+bwd, 2 threads: cp_resnet18_3d stem (ratio 2.3) 27 ms dense vs 52-65 ms fast; 3x3x3
# layers at 14x14 (ratio 3.0) 19 ms dense vs 12 ms fast.
DENSE_RATIO = 2.5


def check_implementation(implementation: str) -> str:
    """Check an ``implementation`` option ("auto", "plain", "fast" or "dense")."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    return implementation


def select(
    x_shape: Sequence[int],
    rank: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    stages: bool = False,
    dense_ratio: float | None = None,
) -> str:
    """The path ``implementation="auto"`` takes for an input of shape ``x_shape``.

    Args:
        x_shape: input shape ``(N, C, *spatial)``.
        rank: CP rank R.
        device: the input's device.
        dtype: the input's dtype.
        requires_grad: whether a backward will follow (same choice today, kept for callers).
        stages: the layer has rank-space BatchNorm / activations (Psi): PyTorch's CPU
            BatchNorm / PReLU kernels are slower on the channels-last layout of the fast
            path than on the plain path's channels-first one, so Psi layers stay plain.
        dense_ratio: multiply-accumulates of the dense route (reconstructed kernel, dense
            conv) over those of the CP layer; None when the layer cannot take it.

    Returns:
        ``"fast"``, ``"dense"`` or ``"plain"``.
    """
    del requires_grad  # both directions are faster on the same shapes (docs/performance.md)
    if stages or _tracing() or torch.device(device).type != "cpu" or dtype not in FAST_DTYPES:
        return "plain"
    if dense_ratio is not None and dense_ratio <= DENSE_RATIO and len(x_shape) <= 5:
        return "dense"
    activations = rank
    for size in (x_shape[0], *x_shape[2:]):
        activations *= size
    return "fast" if activations >= MIN_ACTIVATIONS else "plain"


def _tracing() -> bool:
    """True under ONNX export, TorchScript tracing or torch.compile / torch.export.

    Exporters and compilers see the plain path (standard ops only), never the fast path's
    custom autograd Function.
    """
    compiling = getattr(torch.compiler, "is_compiling", lambda: False)()
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or compiling
