"""The fast CP path (hoconv._fast) against the plain path and an independent dense oracle."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from hoconv import _fast
from hoconv import functional as HF
from hoconv._fast import cp as _fast_cp  # noqa: F401 - submodules used as _fast.<name>
from hoconv._fast import plan
from hoconv._fast import rows as _fast_rows  # noqa: F401
from hoconv._fast import stream as _fast_stream  # noqa: F401
from hoconv._fast.depthwise import make_blocks
from hoconv._fast.plan import TUNING, tuned
from hoconv.layers import CPConv


@pytest.fixture(autouse=True)
def _native_route_forced(monkeypatch):
    """These tests check the native kernels: take their route on every build variant."""
    monkeypatch.setenv("HOCONV_NATIVE", "1")


DTYPE = torch.float64


def dense_oracle(x, weights, in_factor, kernel_factors, out_factor, bias, stride, pads, dilation):
    """Dense kernel by einsum + F.conv{1,2,3}d on an explicitly padded input (dims 1..3)."""
    letters = "abdefghi"[: len(kernel_factors)]
    spec = "r,tr,rc," + ",".join(f"r{a}" for a in letters) + f"->tc{letters}"
    kernel = torch.einsum(spec, weights, out_factor, in_factor, *kernel_factors)
    xp = F.pad(x, [p for pair in reversed(pads) for p in pair])
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(kernel_factors)]
    return conv(xp, kernel, bias, stride, 0, dilation)


def make_params(c, t, rank, kernel, dtype=DTYPE, bias=True):
    params = [
        torch.randn(rank, dtype=dtype),
        torch.randn(rank, c, dtype=dtype),
        [torch.randn(rank, k, dtype=dtype) for k in kernel],
        torch.randn(t, rank, dtype=dtype),
        torch.randn(t, dtype=dtype) if bias else None,
    ]
    for p in [params[0], params[1], *params[2], params[3], params[4]]:
        if p is not None:
            p.requires_grad_(True)
    return params


def leaves(x, params):
    w, a, ks, b, bias = params
    return [x, w, a, *ks, b] + ([bias] if bias is not None else [])


def assert_same(fn_ref, fn_test, x, params, rtol=1e-9, atol=1e-9):
    """Outputs and the gradients of every input agree for one random output gradient."""
    ref, out = fn_ref(x, *params), fn_test(x, *params)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=rtol, atol=atol)
    grad = torch.randn_like(ref)
    inputs = leaves(x, params)
    g_ref = torch.autograd.grad(ref, inputs, grad)
    g_out = torch.autograd.grad(out, inputs, grad)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


CASES = [
    # dim, kernel, stride, padding, dilation, spatial
    (1, (3,), 1, 1, 1, (9,)),
    (1, (4,), 2, (3,), 2, (11,)),
    (2, (3, 3), 1, "same", 1, (7, 6)),
    (2, (2, 3), (2, 1), (1, 0), (1, 2), (8, 9)),
    (2, (4, 2), 1, "same", (2, 3), (9, 8)),
    (3, (3, 3, 3), 1, 1, 1, (5, 6, 7)),
    (3, (2, 3, 4), (1, 2, 3), (2, 0, 1), (2, 1, 1), (9, 8, 10)),
    (3, (2, 1, 3), 1, "valid", (1, 1, 2), (6, 5, 8)),
    (4, (3, 2, 3, 2), (1, 2, 1, 1), (1, 0, 1, 1), (1, 1, 2, 1), (3, 4, 5, 3)),
    (4, (2, 2, 2, 2), 1, "same", 1, (3, 4, 3, 3)),
    (5, (2, 3, 1, 2, 3), (2, 1, 1, 1, 1), 1, 1, (4, 3, 3, 4, 4)),
]


SCHEDULES = [  # schedule, chunk, keep, stream window bytes
    ("batch", None, None, None),
    ("batch", 1, False, None),
    ("stream", None, None, 1),  # one output frame per slab: every window shares frames
    ("stream", None, None, 2000),  # a few frames per slab
]


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``x`` stored channels-first ("cf") or channels-last ("cl"), same values."""
    return x if layout == "cf" else x.movedim(1, -1).contiguous().movedim(-1, 1)


@pytest.mark.parametrize("dim,kernel,stride,padding,dilation,spatial", CASES)
@pytest.mark.parametrize("schedule,chunk,keep,window", SCHEDULES)
@pytest.mark.parametrize("layout", ["cf", "cl"])
def test_fast_equals_plain(
    dim, kernel, stride, padding, dilation, spatial, schedule, chunk, keep, window, layout
):  # fmt: skip
    x = as_layout(torch.randn(2, 3, *spatial, dtype=DTYPE), layout).requires_grad_(True)
    params = make_params(3, 4, 5, kernel)
    geometry = (stride, padding, dilation)
    options = dict(chunk=chunk, keep=keep, schedule=schedule)
    window = {} if window is None else {"window_bytes": window}
    with tuned(**window):
        assert_same(
            lambda x, *p: HF.cp_conv(x, *p, *geometry),
            lambda x, *p: _fast.cp_conv(x, *p, *geometry, **options),
            x,
            params,
        )
    out = _fast.cp_conv(x, *params, *geometry, **options)
    assert _fast.rows.channels_last(out) == (layout == "cl")  # the output follows the input
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    assert grad_x.stride() == x.stride()


@pytest.mark.parametrize("case", [c for c in CASES if c[0] <= 3])
def test_fast_equals_dense_oracle(case):
    """Also covers per-sample chunks that keep their activations (chunk=1, keep=True)."""
    dim, kernel, stride, padding, dilation, spatial = case
    from hoconv._checks import as_tuple, resolve_padding

    st, dil = as_tuple(stride, dim, "stride"), as_tuple(dilation, dim, "dilation")
    pads = resolve_padding(padding, kernel, st, dil)
    x = torch.randn(2, 3, *spatial, dtype=DTYPE, requires_grad=True)
    params = make_params(3, 4, 6, kernel)
    assert_same(
        lambda x, *p: dense_oracle(x, *p, st, pads, dil),
        lambda x, *p: _fast.cp_conv(x, *p, stride, padding, dilation, chunk=1, keep=True),
        x,
        params,
    )


def test_padded_rank_is_exact():
    from hoconv._fast.cp import padded_rank

    assert padded_rank(273) == 288 and padded_rank(64) == 64 and padded_rank(5) == 5
    x = torch.randn(2, 3, 4, 5, dtype=DTYPE, requires_grad=True)
    params = make_params(3, 4, 137, (3, 2))  # computed with rank 144 (7 zero terms)
    assert_same(
        lambda x, *p: HF.cp_conv(x, *p, 1, 1),
        lambda x, *p: _fast.cp_conv(x, *p, 1, 1, chunk=1),
        x,
        params,
    )


def test_no_bias_and_partial_grads():
    x = torch.randn(2, 3, 6, 7, dtype=DTYPE)  # no grad wanted for the input
    params = make_params(3, 4, 5, (3, 2), bias=False)
    out = _fast.cp_conv(x, *params, padding=1)
    ref = HF.cp_conv(x, *params, padding=1)
    torch.testing.assert_close(out, ref)
    params[1].requires_grad_(False)  # frozen in_factor
    grads = torch.autograd.grad(out.sum(), [params[0], *params[2], params[3]])
    refs = torch.autograd.grad(ref.sum(), [params[0], *params[2], params[3]])
    for a, b in zip(grads, refs):
        torch.testing.assert_close(a, b)


def test_channels_last_and_noncontiguous_input():
    x = torch.randn(2, 3, 5, 6, 7, dtype=DTYPE).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    params = make_params(3, 4, 5, (3, 3, 3))
    assert_same(
        lambda x, *p: HF.cp_conv(x, *p, 1, 1),
        lambda x, *p: _fast.cp_conv(x, *p, 1, 1),
        x,
        params,
    )
    y = torch.randn(2, 7, 6, 3, dtype=DTYPE).transpose(1, 3)  # (N, C, 6, 7) non-contiguous
    p2 = make_params(3, 2, 4, (2, 3))
    torch.testing.assert_close(_fast.cp_conv(y, *p2, 1, 1), HF.cp_conv(y, *p2, 1, 1))


def test_gradcheck_custom_functions():
    x = torch.randn(2, 2, 3, 5, dtype=DTYPE, requires_grad=True)
    params = make_params(2, 2, 2, (2, 3))
    inputs = leaves(x, params)

    for keep in (True, False):  # activations kept / recomputed per sample

        def fn(x, w, a, k0, k1, b, bias, keep=keep):
            return _fast.cp_conv(
                x, w, a, [k0, k1], b, bias, (2, 1), (1, 0), (1, 2), chunk=1, keep=keep
            )

        assert torch.autograd.gradcheck(fn, inputs)
    h = torch.randn(2, 4, 5, 3, dtype=DTYPE, requires_grad=True)  # channels-last (N, *S, R)
    k = torch.randn(3, 3, dtype=DTYPE, requires_grad=True)
    block = make_blocks((3,), (2,), ((2, 1),), (1,))[0]
    block = type(block)(1, 2, block.kernel, block.stride, block.pads, block.dilation)
    assert torch.autograd.gradcheck(
        lambda h, k: _fast.stages.DepthwiseFunction.apply(h, k, block), (h, k)
    )


@pytest.mark.parametrize("layout", ["cf", "cl"])
def test_gradcheck_stream(layout):
    x = as_layout(torch.randn(2, 2, 4, 3, dtype=DTYPE), layout).requires_grad_(True)
    inputs = leaves(x, make_params(2, 3, 2, (3, 2)))

    def fn(x, w, a, k0, k1, b, bias):
        return _fast.cp_conv(x, w, a, [k0, k1], b, bias, 1, (1, 0), schedule="stream")

    with tuned(window_bytes=1):  # one frame per slab
        assert torch.autograd.gradcheck(fn, inputs)


def test_auto_schedule_streams_large_samples():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5, 4)
    params = make_params(3, 4, 8, (3,) * 3, dtype=torch.float32, bias=False)
    inp, geometry = plan.describe(x), ((3, 3, 3), (1, 1, 1), (1, 1, 1))
    schedule, reasons = plan.fast_schedule(inp, 8, *geometry)
    assert schedule == "batch" and "fits a chunk" in reasons[-1]  # 6 * 5 * 4 * 8 floats
    with tuned(chunk_bytes=6 * 5 * 4 * 8 * 4 - 1):  # one sample no longer fits
        schedule, reasons = plan.fast_schedule(inp, 8, *geometry)
        assert schedule == "stream" and reasons[-1].startswith("stream")
        assert plan.fast_schedule(inp, 8, (3, 3, 3), (1, 2, 1), (1, 1, 1))[0] == "batch"
        assert plan.fast_schedule(inp, 8, *geometry, chunk=1)[0] == "batch"
    out = _fast.cp_conv(x, *params, 1, 1, schedule="stream")
    torch.testing.assert_close(out, HF.cp_conv(x, *params, 1, 1), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="schedule must be one of"):
        _fast.cp_conv(x, *params, 1, 1, schedule="tiles")
    with pytest.raises(TypeError):
        with tuned(chunk_kib=3):
            pass


def test_make_blocks_cover_every_axis_once():
    for dim in range(1, 8):
        blocks = make_blocks((3,) * dim, (1,) * dim, ((1, 1),) * dim, (1,) * dim)
        axes = [a for b in blocks for a in range(b.start, b.stop)]
        assert axes == list(range(dim))
        for b in blocks:  # each block plus its merged trailing axis fits a 2-D / 3-D conv
            assert (b.stop - b.start) + (b.stop < dim) <= 3


def test_bfloat16_close_to_float32():
    x = torch.randn(2, 8, 6, 7, 5)
    params = make_params(8, 6, 16, (3, 3, 3), dtype=torch.float32)
    ref = HF.cp_conv(x, *params, 1, 1)
    bf = [p.detach().bfloat16() if torch.is_tensor(p) else [q.detach().bfloat16() for q in p]
          for p in params]  # fmt: skip
    out = _fast.cp_conv(x.bfloat16(), *bf, 1, 1)
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 3e-2
    xb = x.bfloat16().requires_grad_(True)
    _fast.cp_conv(xb, *bf, 1, 1).float().sum().backward()
    assert xb.grad is not None and torch.isfinite(xb.grad.float()).all()


def test_auto_path_rules():
    """The plan's path for "auto": fast only on CPU float32 / bfloat16 with enough work."""
    spec = plan.LayerSpec(64, (3, 3, 3), (1, 1, 1), (1, 1, 1), stages=False, dense_ratio=20.0)
    big, small = (8, 16, 16, 32, 32), (1, 3, 4, 4)

    def path(shape=big, dtype=torch.float32, device="cpu", traced=False, **changes):
        inp = plan.Inputs(shape, dtype, device, "channels_first")
        s = replace(spec, rank=2) if shape == small else replace(spec, **changes)
        return plan.choose_path("auto", s, inp, traced)

    assert path()[0] == "fast" and path(dtype=torch.bfloat16)[0] == "fast"
    assert path(dtype=torch.float64) == ("plain", [
        "plain: torch.float64 has no oneDNN kernel (fast: float32, bfloat16)"])  # fmt: skip
    assert path(device="cuda")[0] == "plain" and "CPU only" in path(device="meta")[1][0]
    assert path(small)[0] == "plain" and "too few" in path(small)[1][0]
    assert path(stages=True)[0] == "plain" and "Psi" in path(stages=True)[1][0]
    assert path(traced=True)[0] == "plain" and "tracing" in path(traced=True)[1][0]
    assert path(dense_ratio=TUNING.dense_ratio)[0] == "dense"
    with pytest.raises(ValueError, match="implementation"):
        _fast.check_implementation("fastest")


def assert_layers_agree(args, kw, implementation, shape):
    """A CPConv on ``implementation`` gives the plain layer's output and every gradient."""
    plain = CPConv(*args, implementation="plain", **kw)
    other = CPConv(*args, implementation=implementation, **kw)
    other.load_state_dict(plain.state_dict())
    x = torch.randn(shape, dtype=DTYPE, requires_grad=True)
    out_p, out_o = plain(x), other(x)
    torch.testing.assert_close(out_o, out_p)
    grad = torch.randn_like(out_p)
    gp = torch.autograd.grad(out_p, [x, *plain.parameters()], grad)
    go = torch.autograd.grad(out_o, [x, *other.parameters()], grad)
    for a, b in zip(go, gp):
        torch.testing.assert_close(a, b)
    return plain, other


@pytest.mark.parametrize("norm,activation", [(False, None), (True, "prelu"), (False, "relu")])
def test_layer_fast_equals_plain(norm, activation):
    kw = dict(dim=3, rank=6, padding=(1, 0, 2), stride=(1, 2, 1), norm=norm, activation=activation)
    plain, fast = assert_layers_agree(
        (3, 4, (3, 2, 3)), dict(dtype=DTYPE, **kw), "fast", (2, 3, 5, 6, 7)
    )
    if norm:  # the running statistics moved the same way
        for a, b in zip(fast.buffers(), plain.buffers()):
            torch.testing.assert_close(a, b)


def test_layer_auto_follows_the_plan():
    layer = CPConv(32, 32, 3, dim=2, rank=8, padding=1)  # 16x fewer MACs than dense
    x = torch.randn(2, 32, 40, 40)
    assert layer.implementation == "auto" and layer.own_implementation is None
    assert layer.route(x).path == "fast" and layer.route(x).schedule in ("fused", "batch")
    assert layer.route(torch.randn(1, 32, 3, 3)).path == "plain"  # tiny
    with pytest.raises(ValueError, match="implementation"):
        CPConv(4, 4, 3, dim=2, implementation="triton")
    traced = torch.jit.trace(layer, x, check_trace=False)  # the plain path while tracing
    torch.testing.assert_close(traced(x), layer(x), rtol=1e-4, atol=1e-5)
    layer.implementation = "plain"
    torch.testing.assert_close(traced(x), layer(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "dim,kernel,stride,padding",
    [(1, (3,), 2, 1), (2, (3, 2), (1, 2), "valid"), (3, (3, 1, 2), 1, "same")],
)
def test_layer_dense_route_equals_plain(dim, kernel, stride, padding):
    kw = dict(dim=dim, rank=5, stride=stride, padding=padding, dtype=DTYPE)
    assert_layers_agree((3, 4, kernel), kw, "dense", (2, 3, *[7] * dim))
    with pytest.raises(ValueError, match="linear layer"):
        CPConv(3, 4, kernel, implementation="dense", norm=True, **kw)


def test_auto_takes_the_dense_route_when_cp_saves_little():
    stem = CPConv(3, 16, (3, 7, 7), dim=3, rank="same", stride=(1, 2, 2), padding=(1, 3, 3))
    x = torch.randn(1, 3, 4, 24, 24)
    assert stem.dense_ratio(x.shape) <= TUNING.dense_ratio  # RGB in: CP saves little
    route = stem.route(x)
    assert route.path == "dense" and route.reasons[0].startswith("dense: the dense route costs")
    big = CPConv(64, 64, 3, dim=3, rank=8, padding=1)
    y = torch.randn(2, 64, 4, 24, 24)
    assert big.dense_ratio(y.shape) > 10 and big.route(y).path == "fast"
    out = stem(x)
    stem.implementation = "plain"
    assert stem.route(x).path == "plain"
    torch.testing.assert_close(out, stem(x), rtol=1e-4, atol=1e-5)


def test_bench_cli_quick_smoke(tmp_path):
    import argparse

    from hoconv.app.commands import bench

    parser = argparse.ArgumentParser()
    bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "--quick", "--config", "2d", "--repeats", "1", "--out", str(tmp_path)]
    )
    assert args.func(args) == 0
    table = (tmp_path / "results.md").read_text()
    for name in ("dense", "(2+1)D", "cp-plain", "cp-fast", "tucker"):
        assert table.count(f"| {name}") == 2  # one table per layout
    assert "channels-first" in table and "channels-last" in table
    assert (tmp_path / "speed.png").stat().st_size > 0
    args.repeats = 0
    with pytest.raises(ValueError, match="--repeats"):
        bench.run(args)


@pytest.mark.parametrize(
    "spatial,stride,padding",
    [((1, 2, 2), 1, 1), ((2, 3, 3), (1, 2, 2), 1), ((3, 3, 2), 2, (1, 0, 1))],
)
def test_fast_small_extents_large_rank(spatial, stride, padding):
    # positions per sample < rank: the one-GEMM-over-the-batch branches of the fast path
    x = torch.randn(3, 6, *spatial, dtype=DTYPE, requires_grad=True)
    params = make_params(6, 7, 40, (3, 3, 3))
    assert_same(
        lambda x, *p: HF.cp_conv(x, *p, stride, padding),
        lambda x, *p: _fast.cp_conv(x, *p, stride, padding),
        x,
        params,
    )
