"""The native depthwise kernels (hoconv._fast.native) against conv3d / aten, and their fallbacks."""

from __future__ import annotations

import ctypes
import os

import pytest
import torch

from hoconv import functional as HF
from hoconv._fast import cp as fast_cp
from hoconv._fast import native, native_build, plan
from hoconv.layers import CPConv


@pytest.fixture(autouse=True)
def _native_route_forced(monkeypatch):
    """These tests check the native kernels: take their route on every build variant."""
    monkeypatch.setenv("HOCONV_NATIVE", "1")


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


def conv3d_separable(x, factors, out_spatial, before, dilation):
    """Reference: F.conv3d (float64) with the outer-product kernel, on the padded / cropped x."""
    rank = x.shape[-1]
    fd, fh, fw = (f.double() for f in factors)
    kernel = fd[:, :, None, None] * fh[:, None, :, None] * fw[:, None, None, :]
    pads = [
        (b, (lo - 1) + d * (f.shape[1] - 1) - b - (size - 1))
        for size, lo, b, d, f in zip(x.shape[1:4], out_spatial, before, dilation, factors)
    ]
    xp = torch.nn.functional.pad(x.movedim(-1, 1).double(), [p for a in reversed(pads) for p in a])
    out = torch.nn.functional.conv3d(xp, kernel.unsqueeze(1), dilation=dilation, groups=rank)
    return out.movedim(1, -1).float()


@needs_native
@pytest.mark.parametrize(
    "rank,kernel,before,dilation,spatial",
    [
        (32, (3, 3, 3), (1, 1, 1), (1, 1, 1), (4, 5, 6)),  # "same" padding
        (48, (2, 3, 1), (0, 2, 0), (2, 1, 1), (5, 4, 7)),  # dilation, kernel 1, wide pads
        (16, (1, 3, 2), (0, 1, 1), (1, 2, 3), (2, 6, 5)),
        (288, (3, 3, 3), (0, 1, 1), (1, 1, 1), (5, 8, 8)),  # a stream window: axis 0 unpadded
        (64, (3, 5, 7), (2, -1, 3), (1, 1, 1), (6, 7, 9)),  # a negative offset crops
        (32, (1, 1, 3), (0, 0, 1), (1, 1, 1), (1, 1, 10)),  # a 1-D conv as the runs use it
        (16, (1, 3, 3), (1, 1, 1), (1, 1, 1), (3, 5, 4)),  # kernel 1, padded: zero frames
    ],
)
def test_native_separable_matches_conv3d(rank, kernel, before, dilation, spatial):
    torch.manual_seed(0)
    x = torch.randn(2, *spatial, rank)
    factors = tuple(torch.randn(rank, k) for k in kernel)
    out_spatial = tuple(
        size + 2 * b - d * (k - 1) for size, b, d, k in zip(spatial, before, dilation, kernel)
    )
    got = native.depthwise_separable(x, factors, out_spatial, before, dilation)
    assert got.shape == (2, *out_spatial, rank) and got.is_contiguous()
    expected = conv3d_separable(x, factors, out_spatial, before, dilation)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_separable_is_planned_only_for_what_it_computes():
    m = plan.Machine("avx2", native="1", available=True)
    assert plan.native_depthwise(torch.float32, "cpu", 32, (3, 3, 3), m)
    assert not plan.native_depthwise(torch.float32, "cpu", 24, (3, 3, 3), m)  # not 16-lanes
    assert not plan.native_depthwise(torch.float64, "cpu", 32, (3, 3, 3), m)
    assert not plan.native_depthwise(torch.float32, "meta", 32, (3, 3, 3), m)
    assert not plan.native_depthwise(torch.float32, "cpu", 32, (1, 1, native.MAX_TAPS + 1), m)
    off = plan.Machine("avx2", native="0", available=True)
    assert not plan.native_depthwise(torch.float32, "cpu", 32, (3, 3, 3), off)


@needs_native
@pytest.mark.parametrize("rank", [24, 32])  # 32: the separable forward and input gradient too
@pytest.mark.parametrize("layout", ["cf", "cl"])
@pytest.mark.parametrize("schedule", ["batch", "stream"])
@pytest.mark.parametrize(
    "spatial,kernel,padding", [((6, 7, 5), (3, 3, 3), 1), ((9, 8), (3, 2), (2, 0)),
                               ((5, 4, 6, 3), (2, 3, 1, 2), 1)],
)  # fmt: skip
def test_fast_path_with_native_kernels_matches_plain(
    rank, layout, schedule, spatial, kernel, padding, monkeypatch
):
    calls = []
    separable = native.depthwise_separable
    monkeypatch.setattr(native, "depthwise_separable", lambda *a: calls.append(1) or separable(*a))
    torch.manual_seed(1)
    x = torch.randn(2, 6, *spatial)
    if layout == "cl" and x.dim() in (4, 5):
        x = x.contiguous(
            memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        )
    x.requires_grad_(True)
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
    assert bool(calls) == (rank % 16 == 0)  # forward and input gradient, when R allows


def test_disabled_or_missing_compiler_falls_back(monkeypatch):
    monkeypatch.setattr(native_build, "_STATE", {})
    monkeypatch.setenv("HOCONV_NATIVE", "0")
    assert not native.available()
    g = x = torch.zeros(1, 1, 2, 2, 16)
    assert native.depthwise_weight_grad(g, x, (1, 1, 1), (0, 0, 0), (1, 1, 1)) is None
    monkeypatch.setattr(native_build, "_STATE", {})
    monkeypatch.setenv("HOCONV_NATIVE", "1")
    monkeypatch.setenv("CC", "no-such-compiler-hoconv")
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert not native.available()


def _one_thread_weight_grad(args):
    torch.set_num_threads(1)  # what DataLoader workers do: libgomp's pool does not survive fork
    return native.depthwise_weight_grad(*args)


@needs_native
def test_a_compiler_without_openmp_builds_serial_kernels(monkeypatch, tmp_path):
    import shutil
    import stat

    real = shutil.which(os.environ.get("CC", "cc"))
    fake = tmp_path / "cc-without-openmp"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = -fopenmp ] && { echo "unsupported -fopenmp" >&2; exit 1; }; done\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(native_build, "_STATE", {})
    monkeypatch.setenv("CC", str(fake))
    monkeypatch.setenv("HOCONV_CACHE", str(tmp_path / "cache"))
    with pytest.warns(RuntimeWarning, match="without OpenMP.*unsupported -fopenmp"):
        assert native.available()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 32)
    factors = tuple(torch.randn(32, 3) for _ in range(3))
    got = native.depthwise_separable(x, factors, (3, 4, 5), (1, 1, 1), (1, 1, 1))
    expected = conv3d_separable(x, factors, (3, 4, 5), (1, 1, 1), (1, 1, 1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_native
def test_native_kernel_works_in_a_forked_child():
    """The kernels run on torch's OpenMP runtime, so a forked child uses them like torch ops."""
    import multiprocessing as mp

    g = torch.randn(2, 3, 4, 5, 32)
    x = torch.randn(2, 3, 4, 5, 32)
    args = (g, x, (1, 3, 3), (0, 1, 1), (1, 1, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent has used a 2-thread parallel region before the fork
    try:
        expected = native.depthwise_weight_grad(*args)
        with mp.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(_one_thread_weight_grad, (args,)).get(timeout=60)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(got, expected)


@needs_native
@pytest.mark.parametrize("norm,activation", [(True, "prelu"), (False, "relu")])
def test_rank_space_stages_run_native_and_match_plain(norm, activation, monkeypatch):
    """The layer's Psi option (1-D convs with BN / activation between) in float32, rank 32."""
    calls = []
    separable = native.depthwise_separable
    monkeypatch.setattr(native, "depthwise_separable", lambda *a: calls.append(1) or separable(*a))
    torch.manual_seed(2)
    kw = dict(dim=3, rank=32, padding=1, norm=norm, activation=activation)
    plain = CPConv(5, 4, 3, implementation="plain", **kw)
    fast = CPConv(5, 4, 3, implementation="fast", **kw)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 4, 6, 5, requires_grad=True)
    out_p, out_f = plain(x), fast(x)
    torch.testing.assert_close(out_f, out_p, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(out_p)
    expected = torch.autograd.grad(out_p, [x, *plain.parameters()], grad)
    got = torch.autograd.grad(out_f, [x, *fast.parameters()], grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)
    assert calls  # forward and input gradient of each 1-D conv


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_route_follows_the_instruction_set(isa):
    """The native route only on variants measured faster than eager; forced with =1."""
    layer = CPConv(16, 16, 3, dim=3, rank=16, padding=1)
    x = torch.randn(2, 16, 8, 16, 16)
    route = plan.plan(layer, x, m=plan.Machine(isa, available=True))
    assert route.path == "fast"
    if isa in plan.TUNING.native_faster_on:
        assert route.schedule == "fused" and route.native
    else:
        assert route.schedule == "batch" and not route.native
        assert any(isa in r and "slower than eager" in r for r in route.reasons)
    forced = plan.plan(layer, x, m=plan.Machine(isa, native="1", available=True))
    assert forced.schedule == "fused" and forced.native
    off = plan.plan(layer, x, m=plan.Machine(isa, native="0", available=True))
    assert off.schedule == "batch" and any("HOCONV_NATIVE=0" in r for r in off.reasons)


def test_this_machine_is_planned_from_its_flags(monkeypatch):
    monkeypatch.delenv("HOCONV_NATIVE", raising=False)
    monkeypatch.delenv("HOCONV_NATIVE_ISA", raising=False)
    assert plan.machine().isa == native.cpu_variants()[0]
    monkeypatch.setenv("HOCONV_NATIVE_ISA", "generic")
    assert plan.machine() == plan.Machine("generic", "")


def test_variant_rejects_unknown_or_unrunnable_isa(monkeypatch):
    monkeypatch.setenv("HOCONV_NATIVE_ISA", "sse9")
    with pytest.raises(ValueError, match="HOCONV_NATIVE_ISA must be one of"):
        native.variant()
    missing = [v for v in native.VARIANT_FLAGS if v not in native.cpu_variants()]
    for isa in missing:
        monkeypatch.setenv("HOCONV_NATIVE_ISA", isa)
        with pytest.raises(ValueError, match="this CPU runs only"):
            native.variant()


@pytest.mark.parametrize("isa", native.cpu_variants())
def test_every_runnable_variant_builds_its_own_library_and_matches(monkeypatch, isa):
    """Each variant this CPU runs: its own cached library (key holds the variant), exact."""
    monkeypatch.setenv("HOCONV_NATIVE_ISA", isa)
    path = native_build.build()
    assert f"hoconv-native-{isa}-" in path.name
    lib = ctypes.CDLL(str(path))
    assert lib.hc_cp_fwd_ws_floats is not None


def test_transduce_keeps_the_layers_implementation():
    from hoconv import CPConv, transduce

    layer = CPConv(4, 4, 3, dim=2, rank=16, padding=1, implementation="plain")
    new = transduce(layer)
    assert isinstance(new, CPConv) and new.implementation == "plain"
