"""The native depthwise kernel gradient (hoconv._fast.native) against aten, and its fallbacks."""

from __future__ import annotations

import pytest
import torch

from hoconv import functional as HF
from hoconv._fast import cp as fast_cp
from hoconv._fast import native

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler here")


def aten_weight_grad(g, x, kernel, pads, dilation):
    """Reference: aten's depthwise conv weight backward on (N, R, D, H, W) tensors."""
    rank = x.shape[-1]
    xc, gc = x.movedim(-1, 1).contiguous(), g.movedim(-1, 1).contiguous()
    xp = torch.nn.functional.pad(xc, [p for pair in reversed(pads) for p in pair])
    w = torch.empty(rank, 1, *kernel)
    return torch.ops.aten.convolution_backward(
        gc, xp, w, None, [1, 1, 1], [0, 0, 0], list(dilation), False, [0, 0, 0], rank,
        [False, True, False],
    )[1].view(rank, *kernel)  # fmt: skip


@needs_native
@pytest.mark.parametrize("rank", [5, 16, 70, 128])
@pytest.mark.parametrize(
    "kernel,pads,dilation,spatial",
    [
        ((3, 3, 3), ((1, 1), (1, 1), (1, 1)), (1, 1, 1), (4, 5, 6)),
        ((2, 3, 1), ((0, 1), (2, 0), (0, 0)), (2, 1, 1), (5, 4, 7)),
        ((1, 3, 2), ((0, 0), (1, 1), (1, 0)), (1, 2, 3), (2, 6, 5)),
    ],
)
def test_native_weight_grad_matches_aten(rank, kernel, pads, dilation, spatial):
    torch.manual_seed(0)
    x = torch.randn(2, *spatial, rank)
    out_spatial = [
        s + a + b - d * (k - 1) for s, (a, b), d, k in zip(spatial, pads, dilation, kernel)
    ]
    g = torch.randn(2, *out_spatial, rank)
    before = tuple(a for a, _ in pads)
    got = native.depthwise_weight_grad(g, x, kernel, before, dilation)
    torch.testing.assert_close(got, aten_weight_grad(g, x, kernel, pads, dilation),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


@needs_native
@pytest.mark.parametrize("schedule", ["batch", "stream"])
@pytest.mark.parametrize(
    "spatial,kernel,padding", [((6, 7, 5), (3, 3, 3), 1), ((9, 8), (3, 2), (2, 0)),
                               ((5, 4, 6, 3), (2, 3, 1, 2), 1)],
)  # fmt: skip
def test_fast_path_with_native_gradient_matches_plain(schedule, spatial, kernel, padding):
    torch.manual_seed(1)
    rank = 24
    x = torch.randn(2, 6, *spatial, requires_grad=True)
    params = [torch.randn(rank), torch.randn(rank, 6) / 3, [torch.randn(rank, k) for k in kernel],
              torch.randn(5, rank) / 5]  # fmt: skip
    leaves = [params[0], params[1], *params[2], params[3]]
    for p in leaves:
        p.requires_grad_(True)
    ref = HF.cp_conv(x, *params, None, 1, padding)
    out = fast_cp.cp_conv(x, *params, None, 1, padding, schedule=schedule)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(ref)
    expected = torch.autograd.grad(ref, [x, *leaves], grad)
    got = torch.autograd.grad(out, [x, *leaves], grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_disabled_or_missing_compiler_falls_back(monkeypatch):
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("HOCONV_NATIVE", "0")
    assert not native.available()
    g = x = torch.zeros(1, 1, 2, 2, 16)
    assert native.depthwise_weight_grad(g, x, (1, 1, 1), (0, 0, 0), (1, 1, 1)) is None
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv("HOCONV_NATIVE", "1")
    monkeypatch.setenv("CC", "no-such-compiler-hoconv")
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not native.available()


@needs_native
def test_native_kernel_works_in_a_forked_child():
    import multiprocessing as mp

    g = torch.randn(2, 3, 4, 5, 32)
    x = torch.randn(2, 3, 4, 5, 32)
    args = (g, x, (1, 3, 3), (0, 1, 1), (1, 1, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers: the parent's thread pool exists after this call
    try:
        expected = native.depthwise_weight_grad(*args)
        with mp.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(native.depthwise_weight_grad, args).get(timeout=60)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, expected)
