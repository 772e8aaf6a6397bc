"""Decomposition of trained dense kernels (TensorLy): CP (parafac) and partial Tucker.

Whole models are factorized by :func:`hoconv.factorization.factorize`, which builds layers
from these decompositions (this module knows kernels only, no layer classes).

TensorLy's PyTorch backend is used inside ``tl.backend_context`` only (thread-local), so
importing hoconv never changes TensorLy's global backend.
"""

from __future__ import annotations

import tensorly as tl
import torch
from tensorly.decomposition import parafac, partial_tucker

from hoconv.functional import cp_to_dense, tucker_to_dense


def _relative_error(kernel: torch.Tensor, approx: torch.Tensor) -> float:
    return float(
        torch.linalg.vector_norm(kernel - approx)
        / torch.linalg.vector_norm(kernel).clamp_min(1e-30)
    )


def cp_decompose_kernel(
    kernel: torch.Tensor,
    rank: int,
    *,
    seed: int = 0,
    n_iter_max: int = 100,
    tol: float = 1e-8,
    restarts: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, float]:
    """CP decomposition (ALS, ``tensorly.decomposition.parafac``) of a kernel ``(T, C, *K)``.

    ALS can stall in a swamp, so up to ``restarts`` runs are made (SVD initialisation first
    when the rank allows it, then seeded random ones) and the best is kept; it stops early
    once the relative error is below ``sqrt(tol)``. Factors are normalised and their norms
    gathered in ``weights`` (the paper's lambda).

    Returns:
        ``(weights (R,), in_factor (R, C), kernel_factors [(R, K_i)], out_factor (T, R), relative error)``.
    """
    work = kernel.detach().to(torch.float64)
    if not bool(work.any()):  # ALS divides by zero: the exact answer is lambda = 0
        return _zero_cp(kernel, rank, seed)
    inits = (["svd"] if rank <= min(work.shape) else []) + ["random"] * max(1, restarts)
    best = None
    for attempt, init in enumerate(inits[: max(1, restarts)]):
        with tl.backend_context("pytorch", local_threadsafe=True):
            cp = parafac(work, rank, n_iter_max=n_iter_max, init=init, tol=tol,
                         normalize_factors=True, random_state=seed + attempt)  # fmt: skip
        out_f, in_f, *kernel_fs = cp.factors  # (T, R), (C, R), (K_i, R)
        args = (cp.weights, in_f.t(), [f.t() for f in kernel_fs], out_f)
        error = _relative_error(work, cp_to_dense(*args))
        if best is None or error < best[1]:
            best = (args, error)
        if error < tol**0.5:
            break
    (weights, in_f, kernel_fs, out_f), error = best
    cast = [a.to(kernel.dtype).contiguous() for a in (weights, in_f, out_f)]
    return cast[0], cast[1], [f.to(kernel.dtype).contiguous() for f in kernel_fs], cast[2], error


def _zero_cp(kernel: torch.Tensor, rank: int, seed: int) -> tuple:
    """The exact CP form of an all-zero kernel: zero weights, seeded unit-norm factors."""
    g = torch.Generator().manual_seed(seed)

    def unit(rows: int, cols: int) -> torch.Tensor:
        f = torch.randn(rows, cols, generator=g, dtype=torch.float64)
        return (f / f.norm(dim=1, keepdim=True)).to(kernel.dtype)  # (R, size): unit rows

    t, c, *ksize = kernel.shape
    weights = torch.zeros(rank, dtype=kernel.dtype)
    return (
        weights,
        unit(rank, c),
        [unit(rank, k) for k in ksize],
        unit(rank, t).t().contiguous(),
        0.0,
    )


def tucker_decompose_kernel(
    kernel: torch.Tensor,
    ranks: tuple[int, int],
    *,
    seed: int = 0,
    n_iter_max: int = 200,
    tol: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Partial Tucker (HOOI on the two channel modes) of a kernel ``(T, C, *K)``.

    Returns:
        ``(core (R_out, R_in, *K), in_factor (R_in, C), out_factor (T, R_out), relative error)``.
    """
    work = kernel.detach().to(torch.float64)
    with tl.backend_context("pytorch", local_threadsafe=True):
        (core, (out_f, in_f)), _ = partial_tucker(work, rank=list(ranks), modes=[0, 1], n_iter_max=n_iter_max,
                                                  tol=tol, random_state=seed)  # fmt: skip
    error = _relative_error(work, tucker_to_dense(core, in_f.t(), out_f))
    return (
        core.to(kernel.dtype),
        in_f.t().to(kernel.dtype).contiguous(),
        out_f.to(kernel.dtype),
        error,
    )
