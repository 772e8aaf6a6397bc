"""The fused native CP conv (hoconv._fast.fused: fused.c, fused_grad.c) against F.convNd."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from hoconv import functional as HF
from hoconv._fast import cp as fast_cp
from hoconv._fast import native, plan


@pytest.fixture(autouse=True)
def _native_route_forced(monkeypatch):
    """These tests check the native kernels: take their route on every build variant."""
    monkeypatch.setenv("HOCONV_NATIVE", "1")


needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler here")
LAYOUT = {4: torch.channels_last, 5: torch.channels_last_3d}


def dense_reference(x, in_factor, factors, out_matrix, bias, pads, dilation):
    """Oracle: F.conv2d / conv3d in float64 with the reconstructed dense kernel."""
    kernel = factors[0].double()
    for f in factors[1:]:  # (R, *K): outer product of the per-axis factors
        kernel = kernel.unsqueeze(-1) * f.double().view(f.shape[0], *[1] * (kernel.dim() - 1), -1)
    weight = torch.einsum("tr,rc,r...->tc...", out_matrix.double(), in_factor.double(), kernel)
    xp = F.pad(x.double(), [p for pair in reversed(pads) for p in pair])
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    return conv(xp, weight, None if bias is None else bias.double(), dilation=dilation)


def layout(x: torch.Tensor, name: str) -> torch.Tensor:
    return x.contiguous(memory_format=LAYOUT[x.dim()]) if name == "cl" else x.contiguous()


@needs_native
@pytest.mark.parametrize("name", ["cf", "cl"])
@pytest.mark.parametrize(
    "n,channels,spatial,rank,out_channels,kernel,pads,dilation",
    [
        (2, 8, (5, 6, 7), 32, 12, (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),
        (3, 5, (6, 7, 9), 80, 17, (3, 2, 5), ((0, 2), (1, 0), (2, 2)), (2, 1, 1)),  # odd pads
        (3, 5, (6, 7, 9), 144, 33, (1, 3, 3), ((0, 0), (1, 1), (1, 1)), (1, 2, 1)),  # 3 blocks
        (1, 16, (9, 8, 8), 16, 16, (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),  # one sample: D split
        (2, 8, (3, 8, 8), 32, 40, (3, 3, 3), ((2, 0),) * 3, (1, 1, 1)),  # 16 x 16 blocks
        (2, 6, (10, 11), 48, 20, (3, 3), ((1, 1), (1, 1)), (1, 1)),  # 2-D
        (2, 8, (9, 16), 64, 32, (5, 1), ((3, 1), (0, 0)), (1, 1)),
        (3, 7, (4, 1, 5), 32, 8, (3, 1, 3), ((1, 1), (0, 0), (1, 1)), (1, 1, 1)),  # 5-row GEMMs
        (2, 70, (3, 2, 2), 96, 70, (2, 1, 1), ((1, 0), (0, 0), (0, 0)), (1, 1, 1)),  # 4 rows
        (1, 4, (22, 3, 3), 16, 4, (3, 1, 1), ((1, 1), (0, 0), (0, 0)), (10, 1, 1)),  # span 21
        (2, 8, (4, 4, 8), 144, 32, (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),  # cf out from 3 blocks
        (2, 16, (4, 2, 8), 144, 16, (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),  # cf dx from 3 blocks
        (3, 6, (1, 5, 2), 32, 14, (2, 2, 1), ((1, 2), (0, 1), (1, 0)), (3, 1, 3)),  # all padding
        (2, 4, (3, 4, 8), 32, 8, (2, 3, 3), ((3, 1), (1, 1), (1, 1)), (1, 1, 1)),  # 2 such frames
        (2, 6, (5, 32), 80, 16, (3, 3), ((1, 1), (1, 1)), (1, 1)),  # 2-D, cf out from 2 blocks
    ],
)
def test_fused_forward_and_backward_match_dense_conv(
    name, n, channels, spatial, rank, out_channels, kernel, pads, dilation
):
    torch.manual_seed(0)
    x = layout(torch.randn(n, channels, *spatial), name)
    in_factor, out_matrix = torch.randn(rank, channels), torch.randn(out_channels, rank)
    factors = tuple(torch.randn(rank, k) for k in kernel)
    before = tuple(a for a, _ in pads)
    for bias in (torch.randn(out_channels), None):
        ref = dense_reference(x, in_factor, factors, out_matrix, bias, pads, dilation)
        out = layout(torch.full(ref.shape, float("nan")), name)
        got = native.fused_forward(x, in_factor.t(), factors, out_matrix, bias, out, before,
                                   dilation)  # fmt: skip
        assert got is out and got.is_contiguous(memory_format=LAYOUT[x.dim()]) == (name == "cl")
        assert_close_scaled(got, ref)
    leaves = [t.double().requires_grad_(True) for t in (x, in_factor, out_matrix, *factors)]
    ref = dense_reference(leaves[0], leaves[1], leaves[3:], leaves[2], None, pads, dilation)
    for grad_layout in ("cf", "cl"):  # the output gradient may come in either layout
        grad = layout(torch.randn(ref.shape), grad_layout)
        expected = torch.autograd.grad(ref, leaves, grad.double(), retain_graph=True)
        grad_x, grad_in, grad_out, grad_factors, grad_bias = native.fused_backward(
            grad, x, in_factor, factors, out_matrix, before, dilation
        )
        assert grad_x.stride() == x.stride()
        for a, b in zip((grad_x, grad_in, grad_out, *grad_factors), expected):
            assert a.shape == b.shape
            assert_close_scaled(a, b)
        assert_close_scaled(grad_bias, grad.double().sum([0, *range(2, grad.dim())]))


def assert_close_scaled(a: torch.Tensor, b: torch.Tensor) -> None:
    """float32 ``a`` against float64 ``b``, relative to ``b``'s largest value (absolute when
    ``b`` is all zeros: e.g. a layer whose output frames read only padding)."""
    scale = b.abs().max()
    scale = scale if scale > 0 else torch.ones_like(scale)
    torch.testing.assert_close(a.double() / scale, b / scale, rtol=0, atol=2e-6)


def test_fused_pass_is_planned_only_for_what_it_computes():
    x = torch.randn(2, 4, 5, 6, 7)
    m = plan.Machine("avx512", available=True)

    def refusal(t, rank=32, kernel=(3, 3, 3), stride=(1, 1, 1), params=()):
        return plan.fused_refusal(plan.describe(t, params), rank, kernel, stride, m)

    assert refusal(x) is None and refusal(layout(x, "cl")) is None
    assert "float32" in refusal(x.double())
    assert "multiple of 16" in refusal(x, rank=24)  # rank not whole vectors
    assert "stride 1" in refusal(x, stride=(1, 2, 2))
    assert "taps" in refusal(x, kernel=(3, 3, 17))  # past MAX_TAPS
    assert "contiguous" in refusal(x.transpose(2, 4))
    assert "spatial axes" in refusal(torch.randn(2, 4, 9), kernel=(3,), stride=(1,))
    assert "spatial axes" in refusal(torch.randn(2, 4, 3, 4, 5, 6), 32, (3,) * 4, (1,) * 4)
    assert "torch.float64" in refusal(x, params=(torch.zeros(3, dtype=torch.float64),))
    gone = plan.Machine("avx512", available=False)
    assert "unavailable" in plan.fused_refusal(plan.describe(x), 32, (3,) * 3, (1,) * 3, gone)


def _count_fused(monkeypatch) -> list:
    calls = []
    fused = native.fused_forward
    monkeypatch.setattr(native, "fused_forward", lambda *a: calls.append(1) or fused(*a))
    return calls


def _cp_params(rank, channels, out_channels, kernel, grad):
    params = [torch.randn(rank), torch.randn(rank, channels) / 3,
              [torch.randn(rank, k) for k in kernel], torch.randn(out_channels, rank) / 5]  # fmt: skip
    leaves = [params[0], params[1], *params[2], params[3]]
    for p in leaves:
        p.requires_grad_(grad)
    return params, leaves


@needs_native
@pytest.mark.parametrize("name", ["cf", "cl"])
@pytest.mark.parametrize("spatial", [(6, 7, 5), (7, 33)])  # >= 32 positions per frame
def test_inference_takes_the_fused_pass(name, spatial, monkeypatch):
    calls = _count_fused(monkeypatch)
    torch.manual_seed(1)
    x = layout(torch.randn(2, 6, *spatial), name)
    params, _ = _cp_params(30, 6, 5, (3,) * len(spatial), grad=True)  # rank padded to 32
    bias = torch.randn(5)
    with torch.no_grad():
        out = fast_cp.cp_conv(x, *params, bias, 1, 1)
        ref = HF.cp_conv(x, *params, bias, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert calls == [1]
    x.requires_grad_(True)
    fast_cp.cp_conv(x, *params, bias, 1, 1, schedule="batch")  # recorded for a backward
    assert calls == [1]


@needs_native
@pytest.mark.parametrize("name", ["cf", "cl"])
@pytest.mark.parametrize("spatial,padding", [((6, 7, 5), 1), ((7, 33), (2, 0)), ((4, 6, 6), 0)])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_schedule_gradients_match_plain(name, spatial, padding, bias, monkeypatch):
    calls = []
    backward = native.fused_backward
    monkeypatch.setattr(native, "fused_backward", lambda *a: calls.append(1) or backward(*a))
    torch.manual_seed(3)
    x = layout(torch.randn(2, 6, *spatial), name).requires_grad_(True)
    params, leaves = _cp_params(30, 6, 5, (3,) * len(spatial), grad=True)  # rank padded to 32
    b = torch.randn(5, requires_grad=True) if bias else None
    out = fast_cp.cp_conv(x, *params, b, 1, padding)  # "auto": fused
    ref = HF.cp_conv(x, *params, b, 1, padding)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    inputs = [x, *leaves, *([b] if bias else [])]
    grad = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-3)
    assert calls == [1]


def test_fused_schedule_refuses_what_it_cannot_run():
    x = torch.randn(2, 4, 5, 6, 7)
    params, _ = _cp_params(32, 4, 5, (3, 3, 3), grad=False)
    with pytest.raises(ValueError, match=r"cannot run this layer: stride is \(2, 2, 2\)"):
        fast_cp.cp_conv(x, *params, None, 2, 1, schedule="fused")
    as64 = [p.double() if torch.is_tensor(p) else [f.double() for f in p] for p in params]
    with pytest.raises(ValueError, match="x is torch.float64, the fused pass is float32"):
        fast_cp.cp_conv(x.double(), *as64, None, 1, 1, schedule="fused")
    params24, _ = _cp_params(24, 4, 5, (3, 3, 3), grad=False)
    with pytest.raises(ValueError, match="rank 24 is not a multiple of 16"):
        fast_cp.cp_conv(x, *params24, None, 1, 1, schedule="fused")
    params1d, _ = _cp_params(32, 4, 5, (3,), grad=False)
    with pytest.raises(ValueError, match="x has 1 spatial axes, the fused pass runs 2-D and 3-D"):
        fast_cp.cp_conv(torch.randn(2, 4, 9), *params1d, None, 1, 1, schedule="fused")


@needs_native
@pytest.mark.parametrize("name", ["cf", "cl"])
def test_streamed_training_forward_is_fused_and_gradients_exact(name, monkeypatch):
    calls = _count_fused(monkeypatch)
    torch.manual_seed(2)
    x = layout(torch.randn(2, 6, 7, 6, 5), name).requires_grad_(True)
    params, leaves = _cp_params(32, 6, 5, (3, 3, 3), grad=True)
    out = fast_cp.cp_conv(x, *params, None, 1, 1, schedule="stream")
    ref = HF.cp_conv(x, *params, None, 1, 1)
    assert calls == [1]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [x, *leaves], grad),
                    torch.autograd.grad(ref, [x, *leaves], grad)):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


@needs_native
@pytest.mark.parametrize("threads", [1, 3])
def test_fused_schedule_any_thread_count_and_expanded_output_gradient(threads):
    torch.manual_seed(4)
    x = layout(torch.randn(3, 5, 5, 6, 6), "cl").requires_grad_(True)
    params, leaves = _cp_params(32, 5, 4, (3, 3, 3), grad=True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # 3 samples over 1 or 3 threads; out.sum() gives an expanded (stride-0) gradient
        out = fast_cp.cp_conv(x, *params, None, 1, 1, schedule="fused")
        got = torch.autograd.grad(out.sum(), [x, *leaves])
    finally:
        torch.set_num_threads(previous)
    ref = HF.cp_conv(x, *params, None, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for a, e in zip(got, torch.autograd.grad(ref.sum(), [x, *leaves])):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-3)


def test_auto_leaves_short_frames_to_the_batch_schedule():
    m = plan.Machine("avx512", available=True)
    geometry = ((3, 3), (1, 1), (1, 1))
    short = plan.describe(torch.randn(2, 6, 40, 16))  # rows of 16 positions
    schedule, reasons = plan.fast_schedule(short, 32, *geometry, m=m)
    assert schedule == "batch" and "16 positions per frame" in reasons[0]
    wide = plan.describe(torch.randn(2, 6, 16, 40))  # rows of 40
    assert plan.fast_schedule(wide, 32, *geometry, m=m)[0] == "fused"
    with plan.tuned(fused_bytes=1000):  # the rings no longer fit
        schedule, reasons = plan.fast_schedule(wide, 32, *geometry, m=m)
        assert schedule == "batch" and "workspace" in reasons[0]
    assert plan.fast_schedule(wide, 32, *geometry, keep=True, m=m)[0] == "batch"


@needs_native
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize(
    "n,channels,spatial,kernel,pads,dilation",
    [
        (1, 6, (12, 6, 7), (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),
        (1, 6, (14, 5, 6), (3, 2, 3), ((2, 0), (1, 0), (1, 1)), (2, 1, 1)),  # span 5
        (2, 6, (10, 4, 5), (2, 3, 3), ((0, 1), (1, 1), (1, 1)), (1, 1, 1)),
        (1, 6, (9, 12), (3, 3), ((1, 1), (1, 1)), (1, 1)),  # 2-D: rows split
        (1, 16, (12, 2, 8), (3, 3, 3), ((1, 1),) * 3, (1, 1, 1)),  # dx frames from the GEMM
    ],
)
def test_fused_backward_splits_a_sample_between_threads(
    threads, n, channels, spatial, kernel, pads, dilation
):
    torch.manual_seed(6)
    x = layout(torch.randn(n, channels, *spatial), "cf")
    in_factor, out_matrix = torch.randn(32, channels), torch.randn(5, 32)
    factors = tuple(torch.randn(32, k) for k in kernel)
    leaves = [t.double().requires_grad_(True) for t in (x, in_factor, out_matrix, *factors)]
    ref = dense_reference(leaves[0], leaves[1], leaves[3:], leaves[2], None, pads, dilation)
    grad = torch.randn(ref.shape)
    expected = torch.autograd.grad(ref, leaves, grad.double())
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # fewer samples than threads: each sample's output frames are cut into ranges
        got = native.fused_backward(grad, x, in_factor, factors, out_matrix,
                                    tuple(a for a, _ in pads), dilation)  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    for a, b in zip((got[0], got[1], got[2], *got[3]), expected):
        assert_close_scaled(a, b)
    assert_close_scaled(got[4], grad.double().sum([0, *range(2, grad.dim())]))


def test_fused_pass_refuses_factors_of_another_dtype(monkeypatch):
    calls = _count_fused(monkeypatch)
    x = torch.randn(2, 4, 5, 6, 40)
    params, _ = _cp_params(32, 4, 5, (3, 3, 3), grad=False)
    bias = torch.randn(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="a factor or the bias is torch.float64"):
        fast_cp.cp_conv(x, *params, bias, 1, 1, schedule="fused")
    with torch.no_grad(), pytest.raises(RuntimeError):  # as the plain path: no silent cast
        HF.cp_conv(x, *params, bias, 1, 1)
    with torch.no_grad(), pytest.raises(RuntimeError):  # the streamed forward refuses it too
        fast_cp.cp_conv(x, *params, bias, 1, 1, schedule="stream")
    with torch.no_grad():
        fast_cp.cp_conv(x, *params, bias.float(), 1, 1)  # float32 bias: fused when available
    assert calls == ([1] if native.available() else [])


def test_fused_schedule_takes_an_empty_batch():
    x = torch.randn(0, 4, 5, 6, 40, requires_grad=True)
    params, leaves = _cp_params(32, 4, 5, (3, 3, 3), grad=True)
    out = fast_cp.cp_conv(x, *params, None, 1, 1)
    assert out.shape == (0, 5, 5, 6, 40)
    grads = torch.autograd.grad(out.sum(), [x, *leaves])
    assert grads[0].shape == x.shape and all(float(g.abs().sum()) == 0 for g in grads[1:])


@needs_native
@pytest.mark.parametrize("seed", range(12))
def test_fused_pass_on_random_geometries(seed):
    """Random 2-D / 3-D layers (kernels 1-5, dilation 1-3, pads up to the kernel, either
    layout, 1-3 threads, 1-3 samples) against the float64 oracle, forward and gradients."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    dim = rng.choice([2, 3])
    n, channels, out_channels = rng.randint(1, 3), rng.randint(1, 20), rng.randint(1, 40)
    rank = rng.choice([16, 32, 48, 80, 144])
    kernel = tuple(rng.randint(1, 5) for _ in range(dim))
    dilation = tuple(rng.randint(1, 3) for _ in range(dim))
    pads = tuple((rng.randint(0, k), rng.randint(0, k)) for k in kernel)
    spatial = [max(1, d * (k - 1) + 1 - a - b) + rng.randint(0, 6)
               for k, d, (a, b) in zip(kernel, dilation, pads)]  # fmt: skip
    name = rng.choice(["cf", "cl"])
    x = layout(torch.randn(n, channels, *spatial), name)
    in_factor, out_matrix = torch.randn(rank, channels), torch.randn(out_channels, rank)
    factors = tuple(torch.randn(rank, k) for k in kernel)
    bias = torch.randn(out_channels) if rng.random() < 0.5 else None
    leaves = [t.double().requires_grad_(True) for t in (x, in_factor, out_matrix, *factors)]
    b64 = None if bias is None else bias.double()
    ref = dense_reference(leaves[0], leaves[1], leaves[3:], leaves[2], b64, pads, dilation)
    grad = torch.randn(ref.shape)
    expected = torch.autograd.grad(ref, leaves, grad.double())
    before = tuple(a for a, _ in pads)
    previous = torch.get_num_threads()
    torch.set_num_threads(rng.randint(1, 3))
    try:
        out = layout(torch.empty(ref.shape), name)
        native.fused_forward(x, in_factor.t(), factors, out_matrix, bias, out, before, dilation)
        got = native.fused_backward(grad, x, in_factor, factors, out_matrix, before, dilation)
    finally:
        torch.set_num_threads(previous)
    assert_close_scaled(out, ref)
    for a, b in zip((got[0], got[1], got[2], *got[3]), expected):
        assert_close_scaled(a, b)
    assert_close_scaled(got[4], grad.double().sum([0, *range(2, grad.dim())]))
