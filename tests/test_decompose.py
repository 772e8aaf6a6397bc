"""Decomposition of dense kernels (TensorLy) and factorization of models; the block equivalences."""

import pytest
import tensorly as tl
import torch
from torch import nn

import hoconv
from hoconv import blocks
from hoconv import functional as HF


def _planted_cp_kernel(rank, shape):
    t, c, *k = shape
    factors = [torch.randn(rank, n, dtype=torch.float64) for n in (c, *k)]
    return HF.cp_to_dense(torch.rand(rank, dtype=torch.float64) + 0.5, factors[0], factors[1:],
                          torch.randn(t, rank, dtype=torch.float64))  # fmt: skip


@pytest.mark.parametrize("shape", [(6, 5, 3), (6, 5, 3, 3), (6, 5, 3, 2, 3), (4, 3, 3, 2, 2, 3)])
def test_cp_from_dense_recovers_planted_rank(shape):
    kernel = _planted_cp_kernel(3, shape)
    layer = hoconv.CPConv.from_dense(kernel, rank=3, n_iter_max=500, tol=1e-12, restarts=4)
    assert layer.decomposition_error < 1e-4
    torch.testing.assert_close(layer.to_dense(), kernel, rtol=1e-3, atol=1e-4)


def test_tucker_from_dense_recovers_planted_ranks():
    core = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    kernel = HF.tucker_to_dense(
        core, torch.randn(2, 7, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    )
    layer = hoconv.TuckerConv.from_dense(kernel, rank=(3, 2))
    assert layer.decomposition_error < 1e-8
    torch.testing.assert_close(layer.to_dense(), kernel)


def test_error_decreases_with_rank():
    kernel = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    cp_errors = [
        hoconv.CPConv.from_dense(kernel, rank=r, n_iter_max=30).decomposition_error
        for r in (2, 8, 24)
    ]
    assert cp_errors[0] > cp_errors[1] > cp_errors[2]
    tucker_errors = [
        hoconv.TuckerConv.from_dense(kernel, rank=(r, r)).decomposition_error for r in (2, 4, 6)
    ]
    assert tucker_errors[0] > tucker_errors[1] > tucker_errors[2]


@pytest.mark.parametrize("cls", [hoconv.CPConv, hoconv.TuckerConv])
def test_from_dense_keeps_geometry_and_bias(cls):
    conv = nn.Conv3d(
        4, 6, (3, 3, 2), stride=(1, 2, 2), padding=(1, 0, 1), dilation=(2, 1, 1)
    ).double()
    layer = cls.from_dense(conv, rank=24 if cls is hoconv.CPConv else (6, 4), n_iter_max=30)
    assert layer.stride == (1, 2, 2) and layer.padding == (1, 0, 1) and layer.dilation == (2, 1, 1)
    x = torch.randn(2, 4, 7, 9, 8, dtype=torch.float64)
    out, ref = layer(x), conv(x)
    assert out.shape == ref.shape
    rel = (out - ref).norm() / ref.norm()
    if cls is hoconv.TuckerConv:  # full channel ranks: exact
        assert rel < 1e-10
    else:
        assert rel < 0.5 and layer.decomposition_error < 0.5
    torch.testing.assert_close(layer.bias, conv.bias)


def test_from_dense_bad_input():
    with pytest.raises(ValueError, match="groups=1"):
        hoconv.CPConv.from_dense(nn.Conv2d(4, 4, 3, groups=2), rank=2)
    with pytest.raises(TypeError, match="nn.Conv1d/2d/3d or a kernel"):
        hoconv.CPConv.from_dense(nn.Linear(3, 4), rank=2)
    with pytest.raises(ValueError, match="kernel must have shape"):
        hoconv.TuckerConv.from_dense(torch.randn(4, 3), rank=2)


def test_factorize_swaps_every_conv_and_leaves_tensorly_backend_alone():
    backend = tl.get_backend()
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 3, stride=2)
    )
    cp_model, errors = hoconv.factorize(model, "cp", rank=0.5)  # ranks 11 and 8
    assert isinstance(cp_model[0], hoconv.CPConv) and isinstance(cp_model[3], hoconv.CPConv)
    assert isinstance(cp_model[2], nn.Conv2d)  # 1x1 kept dense
    assert set(errors) == {"0", "3"} and isinstance(model[0], nn.Conv2d)  # source untouched
    tucker_model, _ = hoconv.factorize(model, "tucker", rank="same")
    x = torch.randn(2, 3, 9, 9)
    assert tucker_model(x).shape == model(x).shape == cp_model(x).shape
    assert tl.get_backend() == backend
    with pytest.raises(ValueError, match="kind"):
        hoconv.factorize(model, "tt")
    with pytest.raises(ValueError, match="no dense"):
        hoconv.factorize(nn.Sequential(nn.Linear(3, 3)), "cp")


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_cp_conv_is_a_mobilenet_v2_block(dim):
    layer = hoconv.CPConv(4, 6, 3, dim=dim, rank=5, stride=2, padding=1).double()
    x = torch.randn(2, 4, *([7] * dim), dtype=torch.float64)
    block = blocks.cp_to_mobilenet_v2(layer)
    assert [m.groups for m in block] == [1, 5, 1]
    torch.testing.assert_close(block(x), layer(x))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_mobilenet_v1_block_is_a_rank_c_cp_conv_with_diagonal_input_factor(dim):
    layer = hoconv.CPConv(4, 6, 3, dim=dim, rank=4, padding="same").double()
    with torch.no_grad():
        layer.in_factor.copy_(torch.diag(torch.randn(4, dtype=torch.float64)))
    x = torch.randn(2, 4, *([6] * dim), dtype=torch.float64)
    block = blocks.cp_to_mobilenet_v1(layer)
    assert len(block) == 2 and block[0].groups == 4
    torch.testing.assert_close(block(x), layer(x))
    with pytest.raises(ValueError, match="diagonal"):
        blocks.cp_to_mobilenet_v1(hoconv.CPConv(4, 6, 3, dim=dim, rank=4))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_tucker_conv_is_a_bottleneck(dim):
    layer = hoconv.TuckerConv(6, 8, 3, dim=dim, rank=(3, 2), stride=2, padding=1).double()
    x = torch.randn(2, 6, *([7] * dim), dtype=torch.float64)
    block = blocks.tucker_to_bottleneck(layer)
    assert [m.out_channels for m in block] == [2, 3, 8]
    torch.testing.assert_close(block(x), layer(x))
