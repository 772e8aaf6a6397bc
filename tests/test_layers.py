"""CPConv / TuckerConv modules: exactness, counts, ranks, options, serialisation, bad input."""

import copy
import io

import pytest
import torch
from reference import direct_conv
from torch import nn

import hoconv
from hoconv import rank as R

CASES = {  # dim -> (kernel, stride, padding, dilation, input size)
    1: (4, 2, 1, 1, (11,)),
    2: ((3, 2), (1, 2), (2, 0), (2, 1), (9, 8)),
    3: ((3, 1, 2), (2, 1, 1), (1, 0, 1), (1, 1, 2), (7, 5, 8)),
    4: ((3, 2, 1, 3), (1, 2, 1, 2), (1, 0, 0, 1), (1, 1, 1, 2), (5, 6, 3, 7)),
}


def _make(kind, dim, **kw):
    kernel, stride, padding, dilation, _ = CASES[dim]
    cls = hoconv.CPConv if kind == "cp" else hoconv.TuckerConv
    rank = kw.pop("rank", 4 if kind == "cp" else (3, 2))
    return cls(
        3, 5, kernel, dim=dim, rank=rank, stride=stride, padding=padding, dilation=dilation, **kw
    ).double()


@pytest.mark.parametrize("kind", ["cp", "tucker"])
@pytest.mark.parametrize("dim", [1, 2, 3, 4])
def test_forward_and_gradients_equal_dense_conv(kind, dim):
    layer = _make(kind, dim)
    x = torch.randn(2, 3, *CASES[dim][4], dtype=torch.float64, requires_grad=True)
    out = layer(x)
    ref = direct_conv(x, layer.to_dense(), layer.bias, layer.stride, layer.padding, layer.dilation)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    params = list(layer.parameters())
    got = torch.autograd.grad(out, [x, *params], g)
    want = torch.autograd.grad(ref, [x, *params], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["cp", "tucker"])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_float32_matches_torch_conv(kind, dim):
    layer = _make(kind, dim).float()
    x = torch.randn(2, 3, *CASES[dim][4])
    conv = {
        1: torch.nn.functional.conv1d,
        2: torch.nn.functional.conv2d,
        3: torch.nn.functional.conv3d,
    }[dim]
    ref = conv(x, layer.to_dense(), layer.bias, layer.stride, layer.padding, layer.dilation)
    torch.testing.assert_close(layer(x), ref, rtol=1e-4, atol=1e-5)


def test_parameter_count_formula():
    layer = hoconv.CPConv(16, 32, (3, 5, 2), dim=3, rank=7)
    assert R.parameter_count(layer) == 7 * (16 + 32 + 3 + 5 + 2) + 7 + 32
    assert R.cp_parameter_count(16, 32, (3, 5, 2), 7, bias=True) == R.parameter_count(layer)
    tucker = hoconv.TuckerConv(16, 32, 3, dim=2, rank=(6, 4), bias=False)
    assert R.parameter_count(tucker) == 32 * 6 + 16 * 4 + 6 * 4 * 9


def test_jester_stack_counts_from_the_appendix():
    """Appendix table 7: a 3x3x3 stack (3,64),(64,128),(128,256),(256,256), CP rank 6 x input channels."""
    pairs = [(3, 64), (64, 128), (128, 256), (256, 256)]
    dense = sum(R.dense_parameter_count(c, t, (3, 3, 3)) for c, t in pairs)
    assert dense == 2_880_576
    cp_layers = [hoconv.CPConv(c, t, 3, dim=3, rank=6 * c, bias=False) for c, t in pairs]
    with_weights = sum(R.parameter_count(m) for m in cp_layers)
    weights_only = sum(m.weights.numel() for m in cp_layers)
    assert with_weights - weights_only == 1_180_632  # factors only, as the paper counts
    assert with_weights == 1_180_632 + 6 * (3 + 64 + 128 + 256)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
def test_fractional_rank_hits_parameter_budget(fraction):
    layer = hoconv.CPConv(64, 128, 3, dim=3, rank=fraction, bias=False)
    dense = R.dense_parameter_count(64, 128, (3, 3, 3))
    assert abs(R.parameter_count(layer) / (fraction * dense) - 1) < 0.01
    tucker = hoconv.TuckerConv(64, 128, 3, dim=2, rank=fraction, bias=False)
    assert (
        abs(R.parameter_count(tucker) / (fraction * R.dense_parameter_count(64, 128, (3, 3))) - 1)
        < 0.01
    )


def test_same_rank_and_tucker_clipping():
    layer = hoconv.CPConv(64, 64, 3, dim=2, rank="same", bias=False)
    dense = R.dense_parameter_count(64, 64, (3, 3))
    assert abs(R.parameter_count(layer) - dense) <= 64 + 64 + 6 + 1  # within one rank component
    assert hoconv.TuckerConv(4, 6, 3, dim=2, rank=100).rank == (6, 4)


def test_init_gives_sensible_output_variance():
    for layer in (
        hoconv.CPConv(64, 64, 3, dim=3, rank=64, padding=1),
        hoconv.TuckerConv(64, 64, 3, dim=3, padding=1),
    ):
        dense = nn.Conv3d(64, 64, 3, padding=1)
        x = torch.randn(2, 64, 8, 8, 8)
        with torch.no_grad():
            ratio = (layer(x) - layer.bias.view(1, -1, 1, 1, 1)).std() / (
                dense(x) - dense.bias.view(1, -1, 1, 1, 1)
            ).std()
        assert 0.5 < ratio < 2.0, ratio


def test_psi_and_skip_options():
    layer = hoconv.CPConv(
        4, 6, 3, dim=2, rank=5, padding=1, stride=2, norm=True, activation="prelu", skip=True
    )
    assert not layer.is_linear and len(layer.psi) == 2 and layer.skip_factor.shape == (6, 4)
    x = torch.randn(3, 4, 9, 9)
    out = layer(x)
    assert out.shape == (3, 6, 5, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    # the skip path is exactly x ×0 U(S) on the strided grid
    plain = hoconv.CPConv(4, 6, 3, dim=2, rank=5, padding=1, stride=2, skip=True)
    with torch.no_grad():
        skip_only = torch.einsum("tc,nchw->nthw", plain.skip_factor, x[:, :, ::2, ::2])
        conv_only = direct_conv(x, plain.to_dense(), plain.bias, 2, 1)
        torch.testing.assert_close(plain(x), conv_only + skip_only, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="skip=True"):
        hoconv.CPConv(4, 6, 3, dim=2, rank=5, padding=0, skip=True)


def test_macs_count_every_stage():
    layer = hoconv.CPConv(8, 16, 3, dim=2, rank=4, padding=1)
    n, size = 2, 10
    expected = n * size * size * (4 * 8 + 4 * 3 + 4 * 3 + 16 * 4)
    assert layer.macs((n, 8, size, size)) == expected
    assert R.macs(nn.Sequential(layer), (n, 8, size, size)) == expected
    assert R.flops(nn.Sequential(layer), (n, 8, size, size)) == 2 * expected
    dense = nn.Conv2d(8, 16, 3, padding=1)
    assert R.macs(dense, (n, 8, size, size)) == n * 16 * size * size * 8 * 9
    assert next(layer.parameters()).device.type == "cpu"  # counting does not move the model


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rank": 0}, ValueError, "rank must be >= 1"),
        ({"rank": -0.5}, ValueError, "fraction"),
        ({"rank": "half"}, ValueError, "rank must be"),
        ({"kernel_size": 2.5}, TypeError, "kernel_size"),
        ({"kernel_size": (3, 3, 3)}, ValueError, "kernel_size must have 2 entries"),
        ({"padding": "full"}, ValueError, "padding must be"),
        ({"activation": "gelu"}, ValueError, "activation"),
        ({"dim": 0}, ValueError, "dim must be >= 1"),
        ({"in_channels": 0}, ValueError, "in_channels"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "dim": 2, "rank": 3} | kwargs
    with pytest.raises(error, match=match):
        hoconv.CPConv(
            args.pop("in_channels"), args.pop("out_channels"), args.pop("kernel_size"), **args
        )


def test_bad_forward_input():
    layer = hoconv.CPConv(4, 6, 3, dim=2, rank=3)
    with pytest.raises(ValueError, match="expected in_channels=4"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="4 dims"):
        layer(torch.randn(1, 4, 8, 8, 8))
    with pytest.raises(ValueError, match="larger than spatial axis"):
        layer(torch.randn(1, 4, 2, 8))


@pytest.mark.parametrize("kind", ["cp", "tucker"])
def test_serialisation_copy_and_dtypes(kind):
    layer = _make(kind, 3).float()
    x = torch.randn(2, 3, *CASES[3][4])
    clone = copy.deepcopy(layer)
    torch.testing.assert_close(clone(x), layer(x))
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    fresh = _make(kind, 3).float()
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    torch.testing.assert_close(fresh(x), layer(x))
    assert layer.to(torch.float64)(x.double()).dtype == torch.float64
    low = copy.deepcopy(layer).to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()


@pytest.mark.parametrize("kind", ["cp", "tucker"])
def test_trace_and_export(kind):
    layer = _make(kind, 2).float().eval()
    x = torch.randn(2, 3, *CASES[2][4])
    traced = torch.jit.trace(layer, x)
    torch.testing.assert_close(traced(x), layer(x))
    exported = torch.export.export(layer, (x,))
    torch.testing.assert_close(exported.module()(x), layer(x))


@pytest.mark.slow
def test_compile_fullgraph():
    layer = hoconv.CPConv(3, 4, 3, dim=3, rank=5, padding=1, norm=True, activation="relu")
    x = torch.randn(2, 3, 4, 5, 6)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), layer(x))
    tucker = hoconv.TuckerConv(3, 4, 3, dim=3, padding=1)
    torch.testing.assert_close(
        torch.compile(tucker, fullgraph=True, backend="aot_eager")(x), tucker(x)
    )
