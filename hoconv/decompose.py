"""Decomposition of trained dense kernels (TensorLy): CP (parafac) and partial Tucker.

Whole models are factorized by :func:`hoconv.factorization.factorize`, which builds layers
from these decompositions (this module knows kernels only, no layer classes).

TensorLy's PyTorch backend is used inside ``tl.backend_context`` only (thread-local), so
importing hoconv never changes TensorLy's global backend.
"""

from __future__ import annotations

import math

import tensorly as tl
import torch
from tensorly.decomposition import parafac, partial_tucker

from hoconv._cp_als import cp_als
from hoconv.functional import cp_to_dense, tucker_to_dense

# Above this many numbers in TensorLy's explicit Khatri-Rao product (its largest, over the
# modes) the Khatri-Rao-free ALS of :mod:`hoconv._cp_als` runs instead (2^22 float64 = 32 MB;
# a 256x256x3x3 kernel at rank 284 would form 56 M).
KHATRI_RAO_LIMIT = 1 << 22
ALS_CHOICES = ("auto", "tensorly", "mttkrp")


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
    als: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, float]:
    """CP decomposition (ALS, ``tensorly.decomposition.parafac``) of a kernel ``(T, C, *K)``.

    ALS can stall in a swamp, so up to ``restarts`` runs are made (SVD initialisation first
    when the rank allows it, then seeded random ones) and the best is kept; it stops early
    once the relative error is below ``sqrt(tol)``. Factors are normalised and their norms
    gathered in ``weights`` (the paper's lambda). ``als="auto"`` runs TensorLy's ``parafac``
    unless its explicit Khatri-Rao product would exceed :data:`KHATRI_RAO_LIMIT` numbers, and
    then the same ALS without that product (:func:`hoconv._cp_als.cp_als`); ``"tensorly"`` /
    ``"mttkrp"`` force one.

    Returns:
        ``(weights (R,), in_factor (R, C), kernel_factors [(R, K_i)], out_factor (T, R), relative error)``.
    """
    if als not in ALS_CHOICES:
        raise ValueError(f"als must be one of {ALS_CHOICES}, got {als!r}")
    work = kernel.detach().to(torch.float64)
    if not bool(work.any()):  # ALS divides by zero: the exact answer is lambda = 0
        return _zero_cp(kernel, rank, seed)
    inits = (["svd"] if rank <= min(work.shape) else []) + ["random"] * max(1, restarts)
    best = None
    if als == "auto":
        als = "mttkrp" if _khatri_rao_size(work.shape, rank) > KHATRI_RAO_LIMIT else "tensorly"
    for attempt, init in enumerate(inits[: max(1, restarts)]):
        weights, factors = _als(als, work, rank, n_iter_max, init, tol, seed + attempt)
        out_f, in_f, *kernel_fs = factors  # (T, R), (C, R), (K_i, R)
        args = (weights, in_f.t(), [f.t() for f in kernel_fs], out_f)
        error = _relative_error(work, cp_to_dense(*args))
        if best is None or error < best[1]:
            best = (args, error)
        if error < tol**0.5:
            break
    (weights, in_f, kernel_fs, out_f), error = best
    cast = [a.to(kernel.dtype).contiguous() for a in (weights, in_f, out_f)]
    return cast[0], cast[1], [f.to(kernel.dtype).contiguous() for f in kernel_fs], cast[2], error


def _khatri_rao_size(shape: torch.Size, rank: int) -> int:
    """Numbers in the largest Khatri-Rao product TensorLy's ALS forms (all modes but one)."""
    return math.prod(shape) // min(shape) * rank


def _als(als: str, work: torch.Tensor, rank: int, n_iter_max: int, init: str, tol: float,
         seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """One ALS run: ``(weights (R,), [factor (shape[i], R)])``."""
    if als == "mttkrp":
        return cp_als(work, rank, n_iter_max=n_iter_max, init=init, tol=tol, seed=seed)
    with tl.backend_context("pytorch", local_threadsafe=True):
        cp = parafac(work, rank, n_iter_max=n_iter_max, init=init, tol=tol,
                     normalize_factors=True, random_state=seed)  # fmt: skip
    return cp.weights, list(cp.factors)


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
