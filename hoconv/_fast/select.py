"""Choice of the execution path of a factorized convolution ("plain" or "fast").

The fast path (:mod:`hoconv._fast.cp`) is measured faster than the plain one on CPU for
float32 / bfloat16 (oneDNN kernels); float64 has no oneDNN kernel (its fast path is exact
but slow) and accelerators are not measured yet, so both keep the plain path unless the
fast one is asked for explicitly. Exporters and compilers (ONNX, TorchScript tracing,
``torch.compile`` / ``torch.export``) always get the plain path from ``"auto"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IMPLEMENTATIONS = ("auto", "plain", "fast")
FAST_DTYPES = (torch.float32, torch.bfloat16)
# Below this many rank-space activations (N * prod(spatial) * R) fixed per-call costs dominate.
MIN_ACTIVATIONS = 1 << 14


def check_implementation(implementation: str) -> str:
    """Check an ``implementation`` option ("auto", "plain" or "fast")."""
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

    Returns:
        ``"fast"`` or ``"plain"``.
    """
    del requires_grad  # both directions are faster on the same shapes (docs/performance.md)
    if stages or _tracing() or torch.device(device).type != "cpu" or dtype not in FAST_DTYPES:
        return "plain"
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
