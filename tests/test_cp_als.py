"""The Khatri-Rao-free CP-ALS (hoconv._cp_als) against TensorLy, for kernels of every order."""

import pytest
import tensorly as tl
import torch
from tensorly.tenalg import khatri_rao

from hoconv import _cp_als, decompose
from hoconv import functional as HF

SHAPES = [(6, 5, 3), (6, 5, 3, 3), (6, 5, 3, 2, 3), (4, 3, 3, 2, 2, 3)]


def _planted(rank, shape):
    t, c, *k = shape
    factors = [torch.randn(rank, n, dtype=torch.float64) for n in (c, *k)]
    return HF.cp_to_dense(torch.rand(rank, dtype=torch.float64) + 0.5, factors[0], factors[1:],
                          torch.randn(t, rank, dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_mttkrp_equals_unfolding_times_explicit_khatri_rao(shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    factors = [torch.randn(n, 4, dtype=torch.float64) for n in shape]
    for mode in range(x.ndim):
        with tl.backend_context("pytorch", local_threadsafe=True):
            expected = tl.unfold(x, mode) @ khatri_rao(factors, skip_matrix=mode)
        torch.testing.assert_close(_cp_als.mttkrp(x, factors, mode), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_mttkrp_als_recovers_planted_rank(shape):
    torch.manual_seed(0)
    kernel = _planted(3, shape)
    *_, error = decompose.cp_decompose_kernel(
        kernel, 3, n_iter_max=500, tol=1e-12, restarts=4, als="mttkrp"
    )
    assert error < 1e-4


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("init", ["svd", "random"])
def test_mttkrp_als_matches_tensorly_parafac(shape, init):
    """Same init and sweeps: the error TensorLy reaches, and the error reported is the real one."""
    torch.manual_seed(1)
    kernel = torch.randn(shape, dtype=torch.float64)
    rank = 2 if init == "svd" else 5  # svd init needs rank <= every dimension
    runs = {
        als: decompose.cp_decompose_kernel(kernel, rank, n_iter_max=60, tol=0.0, als=als)
        for als in ("tensorly", "mttkrp")
    }
    errors = {als: run[-1] for als, run in runs.items()}
    if init == "svd":  # identical start: identical iterates
        assert errors["mttkrp"] == pytest.approx(errors["tensorly"], rel=1e-6, abs=1e-9)
    else:  # seeded uniform starts differ between the two generators
        assert errors["mttkrp"] <= errors["tensorly"] + 0.05
    weights, in_f, kernel_fs, out_f, error = runs["mttkrp"]
    rebuilt = HF.cp_to_dense(weights, in_f, kernel_fs, out_f)
    real = float((kernel - rebuilt).norm() / kernel.norm())
    assert error == pytest.approx(real, rel=1e-9)
    for f in (in_f, *kernel_fs):  # unit-norm rank components, scale in the weights
        torch.testing.assert_close(f.norm(dim=1), torch.ones(rank, dtype=torch.float64))


def test_auto_switches_on_the_khatri_rao_size(monkeypatch):
    kernel = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    assert decompose._khatri_rao_size(kernel.shape, 5) == 8 * 6 * 3 * 5
    calls = []
    monkeypatch.setattr(
        decompose, "cp_als", lambda *a, **k: calls.append(1) or _cp_als.cp_als(*a, **k)
    )
    decompose.cp_decompose_kernel(kernel, 5, n_iter_max=5)
    assert not calls  # 720 numbers: TensorLy
    monkeypatch.setattr(decompose, "KHATRI_RAO_LIMIT", 100)
    *_, error = decompose.cp_decompose_kernel(kernel, 5, n_iter_max=5)
    assert calls and 0 < error < 1


def test_bad_als_and_init_raise():
    with pytest.raises(ValueError, match="als must be one of"):
        decompose.cp_decompose_kernel(torch.randn(4, 3, 3), 2, als="fast")
    with pytest.raises(ValueError, match="init must be"):
        _cp_als.cp_als(torch.randn(4, 3, 3, dtype=torch.float64), 2, init="nvecs")
