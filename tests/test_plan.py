"""The dispatch plan (hoconv._fast.plan) and the implementation switch (hoconv.set_implementation)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hoconv
from hoconv import CPConv
from hoconv._fast import plan
from hoconv.models import create_model

AVX512 = plan.Machine("avx512", available=True)
AVX2 = plan.Machine("avx2", available=True)
GENERIC = plan.Machine("generic", available=True)


@pytest.fixture(autouse=True)
def _default_switch(monkeypatch):
    """Every test starts and ends with the process-wide switch unset."""
    monkeypatch.delenv("HOCONV_IMPLEMENTATION", raising=False)
    monkeypatch.delenv("HOCONV_NATIVE", raising=False)
    hoconv.set_implementation(None)
    yield
    hoconv.set_implementation(None)


def test_route_of_the_issue_shape_per_instruction_set():
    """(4, 64, 16, 32, 32) rank 64: fused on AVX-512 and AVX2, the eager batch schedule on
    the generic build (measured slower than eager)."""
    layer = CPConv(64, 64, 3, dim=3, rank=64, padding=1)
    x = torch.randn(4, 64, 16, 32, 32)
    fast512 = plan.plan(layer, x, AVX512)
    assert (fast512.path, fast512.schedule, fast512.native) == ("fast", "fused", True)
    assert fast512.reasons[-1] == "fused: the native pass runs this layer and its workspace fits"
    avx2 = plan.plan(layer, x, AVX2)
    assert (avx2.path, avx2.schedule, avx2.native) == ("fast", "fused", True)
    generic = plan.plan(layer, x, GENERIC)
    assert (generic.path, generic.schedule, generic.native) == ("fast", "batch", False)
    assert any("built for generic, measured slower than eager" in r for r in generic.reasons)
    rank273 = plan.plan(CPConv(64, 64, 3, dim=3, rank=273, padding=1), x, AVX512)
    assert "rank 273 computed as 288 (aligned rows)" in rank273.reasons


def test_routes_are_cached_per_input_kind():
    layer = CPConv(32, 32, 3, dim=2, rank=8, padding=1)
    x = torch.randn(2, 32, 40, 40)
    first = plan.plan(layer, x, AVX2)
    assert first.path == "fast"
    assert plan.plan(layer, torch.randn(2, 32, 40, 40), AVX2) is first  # same key: cached
    other = plan.plan(layer, x.double(), AVX2)
    assert other is not first and other.path == "plain"
    cl = plan.plan(layer, x.contiguous(memory_format=torch.channels_last), AVX2)
    assert cl.path == "fast" and cl is not first
    with torch.no_grad():  # inference: another key (requires_grad), the same rules
        assert plan.plan(layer, x, AVX2) is not first


def test_psi_layers_and_explicit_paths():
    psi = CPConv(8, 8, 3, dim=2, rank=16, padding=1, norm=True, activation="relu")
    x = torch.randn(2, 8, 64, 64)
    assert plan.plan(psi, x, AVX512).path == "plain"
    psi.implementation = "fast"
    route = plan.plan(psi, x, AVX512)
    assert (route.path, route.schedule) == ("fast", "stages")
    assert route.reasons[0] == "implementation='fast' was asked for"
    with hoconv.implementation("dense"):  # the switch cannot make a Psi layer dense
        psi.implementation = None
        route = plan.plan(psi, x, AVX512)
        assert route.path == "plain" and "has Psi" in route.reasons[0]
        torch.testing.assert_close(psi(x), psi(x))
    with pytest.raises(ValueError, match="dense"):
        psi.implementation = "dense"


def test_tuning_is_one_frozen_dataclass():
    with pytest.raises(AttributeError):
        plan.TUNING.dense_ratio = 9.0  # type: ignore[misc]
    layer = CPConv(64, 64, 3, dim=3, rank=64, padding=1)
    x = torch.randn(4, 64, 16, 32, 32)
    with plan.tuned(native_faster_on=("generic",)):  # e.g. a kernel measured faster there
        assert plan.plan(layer, x, GENERIC).schedule == "fused"
        assert plan.plan(layer, x, AVX2).schedule == "batch"
    with plan.tuned(min_activations=1 << 40):
        assert plan.plan(layer, x, AVX2).path == "plain"
    assert plan.active() is plan.TUNING


def test_switch_reaches_layers_without_their_own():
    x = torch.randn(2, 32, 40, 40)
    layer = CPConv(32, 32, 3, dim=2, rank=8, padding=1)
    own = CPConv(32, 32, 3, dim=2, rank=8, padding=1, implementation="fast")
    assert layer.route(x).path == "fast" and hoconv.get_implementation() == "auto"
    with hoconv.implementation("plain") as name:
        assert name == "plain" and layer.implementation == "plain"
        assert layer.route(x).path == "plain" and own.route(x).path == "fast"
    assert layer.route(x).path == "fast"
    hoconv.set_implementation("dense")
    assert layer.route(x).path == "dense" and layer.own_implementation is None
    hoconv.set_implementation(None)
    assert layer.implementation == "auto"


def test_switch_from_the_environment(monkeypatch):
    layer = CPConv(32, 32, 3, dim=2, rank=8, padding=1)
    x = torch.randn(2, 32, 40, 40)
    monkeypatch.setenv("HOCONV_IMPLEMENTATION", "plain")
    assert layer.route(x).path == "plain"
    with hoconv.implementation("fast"):  # the function wins over the variable
        assert layer.route(x).path == "fast"
    monkeypatch.setenv("HOCONV_IMPLEMENTATION", "fastest")
    with pytest.raises(ValueError, match="HOCONV_IMPLEMENTATION must be one of"):
        layer(x)


def test_invalid_implementations_raise():
    layer = CPConv(4, 4, 3, dim=2, rank=4)
    for bad in ("fastest", "", 3, "Plain"):
        with pytest.raises(ValueError, match="implementation must be one of"):
            hoconv.set_implementation(bad)
        with pytest.raises(ValueError, match="implementation must be one of"):
            layer.implementation = bad
        with pytest.raises(ValueError, match="implementation must be one of"):
            with hoconv.implementation(bad):
                pass
    assert hoconv.get_implementation() == "auto" and layer.implementation == "auto"


def test_from_dense_factorize_transduce_and_create_model_take_it():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    assert CPConv.from_dense(conv, 4).own_implementation is None
    assert CPConv.from_dense(conv, 4, implementation="plain").own_implementation == "plain"
    with pytest.raises(ValueError, match="implementation"):
        CPConv.from_dense(conv, 4, implementation="gpu")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    new, _ = hoconv.factorize(model, rank=4, implementation="fast")
    layers = [m for m in new.modules() if isinstance(m, CPConv)]
    assert len(layers) == 2 and all(m.own_implementation == "fast" for m in layers)
    with pytest.raises(ValueError, match="implementation"):
        hoconv.factorize(model, rank=4, implementation="triton")
    free, _ = hoconv.factorize(model, rank=4)
    video = hoconv.transduce(free)  # no implementation of their own: still none
    assert all(m.own_implementation is None for m in video.modules() if isinstance(m, CPConv))
    zoo = create_model("cp_resnet18_2d", num_outputs=2, width=8, implementation="plain")
    cps = [m for m in zoo.modules() if isinstance(m, CPConv)]
    assert cps and all(m.own_implementation == "plain" for m in cps)
    with pytest.raises(ValueError, match="implementation"):
        create_model("cp_resnet18_2d", implementation="quick")


def test_cli_flag_sets_the_switch(monkeypatch, tmp_path):
    from hoconv.app import cli

    monkeypatch.setenv("HOCONV_IMPLEMENTATION", "auto")  # restored after the test
    args = cli.build_parser().parse_args(["--implementation", "plain", "layers"])
    assert args.implementation == "plain"
    missing = str(tmp_path / "none.pt")
    code = cli.main(["--no-tune-allocator", "--implementation", "plain", "evaluate",
                     "--checkpoint", missing, "--data", "synthetic", "--out", str(tmp_path)])  # fmt: skip
    assert code == 2 and hoconv.get_implementation() == "plain"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--implementation", "fastest", "layers"])
