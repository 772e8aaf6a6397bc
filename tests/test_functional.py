"""Exactness of the functional core against independent oracles, for every dim in 1..4."""

import pytest
import tensorly as tl
import torch
import torch.nn.functional as F
from reference import direct_conv

from hoconv import functional as HF

# (kernel, stride, padding, dilation) per axis; anisotropic, even and odd kernels
GEOMETRY = [(3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 2, 2), (4, 2, 1, 1)]
SIZES = [9, 8, 10, 7]


def _geometry(dim, start=0):
    picked = [GEOMETRY[(start + i) % len(GEOMETRY)] for i in range(dim)]
    return tuple(zip(*picked))


def _cp_factors(dim, c, t, rank, kernel, dtype=torch.float64):
    weights = torch.randn(rank, dtype=dtype)
    in_f = torch.randn(rank, c, dtype=dtype)
    kernel_fs = [torch.randn(rank, k, dtype=dtype) for k in kernel]
    out_f = torch.randn(t, rank, dtype=dtype)
    return weights, in_f, kernel_fs, out_f


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_cp_conv_equals_dense_conv(dim, start):
    kernel, stride, padding, dilation = _geometry(dim, start)
    x = torch.randn(2, 3, *SIZES[:dim], dtype=torch.float64)
    factors = _cp_factors(dim, 3, 4, 5, kernel)
    bias = torch.randn(4, dtype=torch.float64)
    out = HF.cp_conv(x, *factors, bias, stride, padding, dilation)
    ref = direct_conv(x, HF.cp_to_dense(*factors), bias, stride, padding, dilation)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_conv_nd_matches_torch(dim):
    kernel, stride, padding, dilation = _geometry(dim, 1)
    x = torch.randn(2, 4, *SIZES[:dim])
    w = torch.randn(6, 2, *kernel)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dim]
    ref = conv(x, w, None, stride, padding, dilation, groups=2)
    torch.testing.assert_close(HF.conv_nd(x, w, None, stride, padding, dilation, groups=2), ref)


@pytest.mark.parametrize("dim", [4, 5])
def test_conv_nd_beyond_3d_matches_direct_reference(dim):
    kernel, stride, padding, dilation = _geometry(dim, 2)
    x = torch.randn(1, 3, *([6] * dim), dtype=torch.float64)
    w = torch.randn(2, 3, *kernel, dtype=torch.float64)
    b = torch.randn(2, dtype=torch.float64)
    out = HF.conv_nd(x, w, b, stride, padding, dilation)
    torch.testing.assert_close(out, direct_conv(x, w, b, stride, padding, dilation))


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_same_padding_even_and_odd_kernels(dim):
    kernel = (2, 3, 4, 3)[:dim]
    x = torch.randn(2, 3, *SIZES[:dim], dtype=torch.float64)
    factors = _cp_factors(dim, 3, 2, 4, kernel)
    out = HF.cp_conv(x, *factors, padding="same", dilation=2)
    assert out.shape[2:] == x.shape[2:]
    pads = tuple(((2 * (k - 1)) // 2, 2 * (k - 1) - (2 * (k - 1)) // 2) for k in kernel)
    torch.testing.assert_close(out, direct_conv(x, HF.cp_to_dense(*factors), None, 1, pads, 2))


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_tucker_conv_equals_dense_conv(dim):
    kernel, stride, padding, dilation = _geometry(dim, 3)
    x = torch.randn(2, 5, *SIZES[:dim], dtype=torch.float64)
    core = torch.randn(3, 2, *kernel, dtype=torch.float64)
    in_f, out_f = torch.randn(2, 5, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    out = HF.tucker_conv(x, core, in_f, out_f, None, stride, padding, dilation)
    ref = direct_conv(x, HF.tucker_to_dense(core, in_f, out_f), None, stride, padding, dilation)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_reconstruction_matches_tensorly(dim):
    kernel = (3, 2, 4, 3)[:dim]
    weights, in_f, kernel_fs, out_f = _cp_factors(dim, 3, 4, 5, kernel)
    core = torch.randn(3, 2, *kernel, dtype=torch.float64)
    with tl.backend_context("pytorch", local_threadsafe=True):
        ref = tl.cp_to_tensor((weights, [out_f, in_f.t(), *[f.t() for f in kernel_fs]]))
    torch.testing.assert_close(HF.cp_to_dense(weights, in_f, kernel_fs, out_f), ref)
    with tl.backend_context("pytorch", local_threadsafe=True):
        full_factors = [
            out_f[:, :3],
            in_f[:2].t(),
            *[torch.eye(k, dtype=torch.float64) for k in kernel],
        ]
        tucker_ref = tl.tucker_to_tensor((core, full_factors))
    torch.testing.assert_close(HF.tucker_to_dense(core, in_f[:2], out_f[:, :3]), tucker_ref)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_cp_conv_gradients_match_dense_path(dim):
    kernel, stride, padding, dilation = _geometry(dim, dim)
    x = torch.randn(2, 3, *SIZES[:dim], dtype=torch.float64, requires_grad=True)
    factors = [f.requires_grad_() if isinstance(f, torch.Tensor) else [g.requires_grad_() for g in f]
               for f in _cp_factors(dim, 3, 4, 3, kernel)]  # fmt: skip
    leaves = [x, factors[0], factors[1], *factors[2], factors[3]]
    grad_out = None
    grads = []
    for fn in ("cp", "dense"):
        if fn == "cp":
            out = HF.cp_conv(x, *factors, None, stride, padding, dilation)
        else:
            out = direct_conv(x, HF.cp_to_dense(*factors), None, stride, padding, dilation)
        grad_out = torch.randn_like(out) if grad_out is None else grad_out
        grads.append(torch.autograd.grad(out, leaves, grad_out))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_gradcheck(dim):
    kernel, stride, padding, dilation = _geometry(dim, 1)
    # 4-D: the smallest sizes every axis's geometry takes (gradcheck runs the layer twice
    # per input element: 108 elements, not 1050)
    sizes = [5, 6, 7][:dim] if dim < 4 else [3, 3, 4, 3]
    x = torch.randn(1, 2, *sizes, dtype=torch.float64, requires_grad=True)
    w, i, ks, o = _cp_factors(dim, 2, 2, 2, kernel)
    params = [w, i, *ks, o]
    for p in params:
        p.requires_grad_()

    def fn(x, w, i, *rest):
        return HF.cp_conv(x, w, i, list(rest[:-1]), rest[-1], None, stride, padding, dilation)

    fast = dim == 4  # 4-D: one random projection of the Jacobian (gradcheck's fast mode)
    assert torch.autograd.gradcheck(fn, (x, *params), fast_mode=fast)
    core = torch.randn(2, 2, *kernel, dtype=torch.float64, requires_grad=True)

    def tucker(x, core, i, o):
        return HF.tucker_conv(x, core, i, o, None, stride, padding, dilation)

    assert torch.autograd.gradcheck(tucker, (x, core, i, o), fast_mode=fast)


def test_bad_input_messages():
    x = torch.randn(2, 3, 8, 8)
    factors = _cp_factors(2, 3, 4, 5, (3, 3), dtype=torch.float32)
    with pytest.raises(ValueError, match="channels"):
        HF.cp_conv(torch.randn(2, 4, 8, 8), *factors)
    with pytest.raises(ValueError, match="4 dims"):
        HF.cp_conv(torch.randn(2, 3, 8), *factors)
    with pytest.raises(ValueError, match="larger than spatial axis"):
        HF.cp_conv(torch.randn(1, 3, 2, 8), *factors)
    with pytest.raises(ValueError, match="padding must be"):
        HF.cp_conv(x, *factors, padding="full")
    with pytest.raises(ValueError, match="stride 1"):
        HF.cp_conv(x, *factors, stride=2, padding="same")
    with pytest.raises(TypeError, match="stride"):
        HF.cp_conv(x, *factors, stride=1.5)
    with pytest.raises(ValueError, match="stride must have 2 entries"):
        HF.cp_conv(x, *factors, stride=(1, 1, 1))
    w, i, ks, o = factors
    with pytest.raises(ValueError, match="in_factor"):
        HF.cp_conv(x, w, i[:4], ks, o)
    with pytest.raises(ValueError, match="kernel_factors\\[1\\]"):
        HF.cp_conv(x, w, i, [ks[0], ks[1][:2]], o)
    with pytest.raises(ValueError, match="out_factor"):
        HF.cp_conv(x, w, i, ks, o[:, :2])
    with pytest.raises(ValueError, match="core"):
        HF.tucker_conv(x, torch.randn(3, 3), torch.randn(3, 3), torch.randn(4, 3))
