"""The native extension as torch.library ops (compile / export keep them), each build variant
this CPU runs against the F.convNd oracle, and the variants' cached builds."""

from __future__ import annotations

import ctypes

import pytest
import torch
from test_fused import assert_close_scaled, dense_reference, layout

import hoconv
from hoconv._fast import native, native_abi, native_build, plan
from hoconv._fast.fused import cp_fused, cp_fused_backward


@pytest.fixture(autouse=True)
def _native_route_forced(monkeypatch):
    """These tests check the native kernels: take their route on every build variant."""
    monkeypatch.setenv("HOCONV_NATIVE", "1")


needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler here")


def _layer_and_input(dim: int = 3):
    torch.manual_seed(0)
    layer = hoconv.CPConv(16, 8, 3, dim=dim, rank=32, padding=1, implementation="fast")
    x = torch.randn(2, 16, 4, 8, 8) if dim == 3 else torch.randn(2, 16, 8, 40)
    return layer, x


def _grads(module, x):
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), [x.grad, *(p.grad.clone() for p in module.parameters())]


@needs_native
@pytest.mark.parametrize("dim", [2, 3])
def test_compile_fullgraph_keeps_the_native_op_and_matches_eager(dim):
    """Dynamo traces the layer into one graph holding hoconv::cp_fused (no graph break, no
    fallback to the plain path); forward and gradients as eager."""
    layer, x = _layer_and_input(dim)
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager_out, eager_grads = _grads(layer, x)
    layer.zero_grad()
    compiled = torch.compile(layer, fullgraph=True, backend=recording)
    out, grads = _grads(compiled, x)
    targets = [n.target for g in graphs for n in g.graph.nodes]
    assert torch.ops.hoconv.cp_fused.default in targets or torch.ops.hoconv.cp_fused in targets
    torch.testing.assert_close(out, eager_out, rtol=0, atol=0)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _default_layer(stride: int, dim: int):
    """A CPConv with no implementation of its own (it follows "auto") and its input."""
    torch.manual_seed(0)
    if dim == 2:  # dense-route MACs 8x the CP ones (not the dense path), 64 positions a row
        layer = hoconv.CPConv(32, 32, 3, dim=2, rank=16, padding=1, stride=stride)
        return layer, torch.randn(2, 32, 8, 64)
    layer = hoconv.CPConv(16, 8, 3, dim=3, rank=32, padding=1, stride=stride)
    return layer, torch.randn(2, 16, 4, 8, 8)


def _op_count(graphs) -> int:
    ops = (torch.ops.hoconv.cp_fused.default, torch.ops.hoconv.cp_fused)
    return sum(n.target in ops for g in graphs for n in g.graph.nodes)


@needs_native
@pytest.mark.parametrize("stride,dim", [(1, 3), (1, 2), (2, 3)])
def test_compile_auto_keeps_the_fused_op_where_eager_takes_it(monkeypatch, stride, dim):
    """Default implementation ("auto") under torch.compile(fullgraph=True): hoconv::cp_fused is
    in the graph exactly where the eager plan takes the fused pass; outputs and gradients equal
    eager's (the same op, or the plain path on both sides)."""
    monkeypatch.delenv("HOCONV_NATIVE")  # the measured rule of this machine, not forced
    monkeypatch.delenv("HOCONV_IMPLEMENTATION", raising=False)
    layer, x = _default_layer(stride, dim)
    eager_route = layer.route(x.requires_grad_(True))
    fused = eager_route.schedule == "fused"
    if stride == 1 and plan.native_refusal(plan.machine()) is None:
        assert fused, eager_route.reasons  # the native route applies on this machine
    if stride == 2:
        assert not fused
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager_out, eager_grads = _grads(layer, x.detach())
    layer.zero_grad()
    out, grads = _grads(torch.compile(layer, fullgraph=True, backend=recording), x.detach())
    assert _op_count(graphs) == (1 if fused else 0)
    tol = {"rtol": 0, "atol": 0} if fused else {}  # plain: eager took batch, compiled plain
    torch.testing.assert_close(out, eager_out, **tol)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b, **tol)


@needs_native
def test_onnx_export_of_auto_gives_standard_ops(tmp_path, monkeypatch):
    """ONNX (the torch.export-based exporter) cannot carry the custom op: "auto" stays plain."""
    onnx = pytest.importorskip("onnx")
    monkeypatch.delenv("HOCONV_NATIVE")
    layer, x = _default_layer(1, 3)
    assert layer.route(x).schedule == "fused" or plan.native_refusal(plan.machine())
    torch.onnx.export(layer, (x,), str(tmp_path / "m.onnx"), dynamo=True)
    model = onnx.load(str(tmp_path / "m.onnx"))
    domains = {node.domain for node in model.graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    assert {"Conv", "MatMul", "Einsum", "Mul"} & {node.op_type for node in model.graph.node}


@needs_native
def test_export_keeps_the_native_op_and_matches_eager():
    layer, x = _layer_and_input()
    program = torch.export.export(layer, (x,))
    targets = [n.target for n in program.graph.nodes]
    assert torch.ops.hoconv.cp_fused.default in targets
    torch.testing.assert_close(program.module()(x), layer(x), rtol=0, atol=0)


@needs_native
@pytest.mark.slow
def test_inductor_compile_matches_eager():
    """The default backend (inductor): the op runs inside its generated code, fwd and bwd."""
    layer, x = _layer_and_input()
    eager_out, eager_grads = _grads(layer, x)
    layer.zero_grad()
    out, grads = _grads(torch.compile(layer, fullgraph=True), x)
    torch.testing.assert_close(out, eager_out)
    for a, b in zip(grads, eager_grads):
        torch.testing.assert_close(a, b)


@needs_native
def test_ops_pass_opcheck():
    """torch.library.opcheck: schema, fake kernels against the real ones, autograd."""
    torch.manual_seed(1)
    x = torch.randn(2, 5, 4, 6, 7)
    a, b, bias = torch.randn(32, 5), torch.randn(7, 32), torch.randn(7)
    factors = [torch.randn(32, k, requires_grad=True) for k in (3, 1, 3)]
    args = (x.requires_grad_(True), a.requires_grad_(True), b.requires_grad_(True), bias, factors)
    geometry = ([1, 0, 2], [1, 1, 1], [4, 6, 9])
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(cp_fused, (*args, *geometry), test_utils=tests)
    grad = torch.randn(2, 7, 4, 6, 9)
    bwd = (grad, x.detach(), a, b, [f.detach() for f in factors], [1, 0, 2], [1, 1, 1])
    torch.library.opcheck(cp_fused_backward, bwd, test_utils=("test_schema", "test_faketensor"))


# odd geometries: uneven pads, a dilation, 2-D, T and C not multiples of 16, a 1-sample D split
GEOMETRIES = [
    (3, 5, (6, 7, 9), 80, 17, (3, 2, 5), ((0, 2), (1, 0), (2, 2)), (2, 1, 1)),
    (1, 16, (9, 8, 8), 16, 16, (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),
    (2, 6, (10, 11), 48, 20, (3, 3), ((1, 1), (1, 1)), (1, 1)),
    (2, 8, (4, 4, 8), 144, 32, (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),
]


@pytest.mark.parametrize("isa", list(native_build.VARIANT_FLAGS))
@pytest.mark.parametrize("name", ["cf", "cl"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=range(len(GEOMETRIES)))
def test_every_variant_matches_the_dense_conv(monkeypatch, isa, name, geometry):
    """Each build variant this CPU runs, fused forward and backward against F.convNd."""
    if isa not in native_build.cpu_variants():
        pytest.skip(f"this CPU cannot run the {isa} variant (runs {native_build.cpu_variants()})")
    monkeypatch.setenv("HOCONV_NATIVE_ISA", isa)
    if not native.available():
        pytest.skip("no C compiler here")
    n, channels, spatial, rank, out_channels, kernel, pads, dilation = geometry
    torch.manual_seed(0)
    x = layout(torch.randn(n, channels, *spatial), name)
    in_factor, out_matrix = torch.randn(rank, channels), torch.randn(out_channels, rank)
    factors = tuple(torch.randn(rank, k) for k in kernel)
    bias = torch.randn(out_channels)
    before = tuple(a for a, _ in pads)
    ref = dense_reference(x, in_factor, factors, out_matrix, bias, pads, dilation)
    out = layout(torch.full(ref.shape, float("nan")), name)
    got = native.fused_forward(x, in_factor.t(), factors, out_matrix, bias, out, before, dilation)
    assert_close_scaled(got, ref)
    leaves = [t.double().requires_grad_(True) for t in (x, in_factor, out_matrix, *factors)]
    ref = dense_reference(leaves[0], leaves[1], leaves[3:], leaves[2], None, pads, dilation)
    grad = layout(torch.randn(ref.shape), name)
    expected = torch.autograd.grad(ref, leaves, grad.double())
    grad_x, grad_in, grad_out, grad_factors, _ = native.fused_backward(
        grad, x, in_factor, factors, out_matrix, before, dilation
    )
    for a, b in zip((grad_x, grad_in, grad_out, *grad_factors), expected):
        assert_close_scaled(a, b)


@pytest.mark.slow
def test_avx2_variant_builds_with_its_own_cache_key(tmp_path, monkeypatch):
    """What CI builds: the x86-64-v3 library, keyed on its flags and the compiler's version."""
    if "avx2" not in native_build.cpu_variants():
        pytest.skip(f"this CPU cannot run the avx2 variant (runs {native_build.cpu_variants()})")
    monkeypatch.setenv("HOCONV_CACHE", str(tmp_path))
    compiler = "cc"
    key = native_build.cache_key(compiler, "avx2", ("-O3", "-march=x86-64-v3"))
    version = native_build._compiler_version(compiler)
    assert version != "unknown" and version in key and "-march=x86-64-v3" in key
    assert key != native_build.cache_key(compiler, "generic", ("-O3",))
    path = native_build.build(isa="avx2")
    assert path.parent == tmp_path and path.name.startswith("hoconv-native-avx2-")
    lib = native_abi.bind(ctypes.CDLL(str(path)))  # ABI version and struct sizes agree
    assert lib.hc_abi_version() == native_abi.ABI_VERSION
    assert native_build.build(isa="avx2") == path  # cached: the same file


@needs_native
def test_bad_arguments_are_named():
    x = torch.randn(1, 4, 3, 3, 16)
    factors = tuple(torch.randn(16, 3) for _ in range(3))
    with pytest.raises(ValueError, match="x must be float32"):
        native.depthwise_separable(x.double(), factors, (3, 3, 3), (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="x must be contiguous"):
        native.depthwise_separable(x.transpose(1, 2), factors, (3, 3, 3), (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="fh must have shape"):
        bad = (factors[0], torch.randn(8, 3), factors[2])
        native.depthwise_separable(x, bad, (3, 3, 3), (1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match="hc_dw_sep: R must be a multiple of 16"):
        y = torch.randn(1, 4, 3, 3, 24)
        native.depthwise_separable(y, tuple(torch.randn(24, 3) for _ in range(3)), (3, 3, 3),
                                   (1, 1, 1), (1, 1, 1))  # fmt: skip
    with pytest.raises(ValueError, match="hc_dw_wgrad: dilations dd, dh, dw must be >= 1"):
        native.depthwise_weight_grad(x, x, (1, 1, 1), (0, 0, 0), (0, 1, 1))
