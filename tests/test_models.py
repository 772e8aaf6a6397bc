"""Model zoo: shapes, gradients, tracing, exact parameter counts, input errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hoconv import rank as hrank
from hoconv.layers import CPConv, TuckerConv
from hoconv.models import create_model, list_models, register_model
from hoconv.models.resnet import midplanes_2plus1d

# Tiny configuration and input per model: (kwargs, input shape). Video models get clips.
SMALL = {
    "resnet18_2d": ({"width": 4}, (2, 3, 16, 16)),
    "cp_resnet18_2d": ({"width": 4}, (2, 3, 16, 16)),
    "tucker_resnet18_2d": ({"width": 4}, (2, 3, 16, 16)),
    "mobilenet_v2_cifar": ({"width": 10}, (2, 3, 16, 16)),
    "cp_mobilenet_v2_cifar": ({"width": 10}, (2, 3, 16, 16)),
    "cp_resnet18_3d": ({"width": 4}, (2, 3, 5, 16, 16)),
    "r3d_18": ({"width": 4}, (2, 3, 5, 16, 16)),
    "mc3_18": ({"width": 4}, (2, 3, 5, 16, 16)),
    "r2plus1d_18": ({"width": 4}, (2, 3, 5, 16, 16)),
    "convnet3d": ({"width": 4, "hidden": 16}, (2, 3, 16, 16, 16)),
    "cp_convnet3d": ({"width": 4, "hidden": 16}, (2, 3, 16, 16, 16)),
    "cp_convnet3d_s": ({"width": 4, "hidden": 16}, (2, 3, 16, 16, 16)),
}
VIDEO = [name for name, (_, shape) in SMALL.items() if len(shape) == 5]


def _build(name: str, **extra) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    kwargs, shape = SMALL[name]
    return create_model(name, **kwargs, **extra), torch.randn(*shape)


def test_every_registered_model_is_tested():
    assert sorted(SMALL) == list_models()


def _expected_shape(shape: tuple[int, ...], k: int, temporal_output: str) -> tuple[int, ...]:
    if len(shape) == 5 and temporal_output == "frames":
        return (shape[0], shape[2], k)  # (N, T, K): per frame, at the input's T
    return (shape[0], k)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_and_trace(name):
    """Documented shape, finite outputs of sane scale, a gradient for every parameter, and
    ``torch.jit.trace`` (eval mode) giving the eager outputs."""
    model, x = _build(name, num_outputs=3)
    y = model(x)
    assert y.shape == _expected_shape(tuple(x.shape), 3, "frames")
    assert torch.isfinite(y).all()
    assert 1e-3 < y.std().item() < 1e2  # sensible scale at init
    y.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    # Exact zeros are legitimate for a few tensors (e.g. a BN bias whose only consumers are a
    # 1x1 conv + BN, which removes constant shifts), so require most, not all, to be nonzero.
    nonzero = [bool(p.grad.abs().sum() > 0) for p in model.parameters()]
    assert sum(nonzero) >= 0.9 * len(nonzero)
    model.eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", ["r2plus1d_18", "cp_convnet3d"])
def test_clip_output_and_trl_head(name):
    model, x = _build(name, temporal_output="clip", num_outputs=10, head="trl")
    y = model(x)
    assert y.shape == (x.shape[0], 10)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "name,factorization",
    [("resnet18_2d", "tucker"), ("cp_mobilenet_v2_cifar", "cp"), ("r3d_18", "cp")],
)
def test_trl_head(name, factorization):
    model, x = _build(name, head="trl", trl_factorization=factorization, trl_rank=4)
    y = model(x)
    assert y.shape == _expected_shape(tuple(x.shape), DEFAULT_K[name], "frames")
    assert torch.isfinite(y).all()


DEFAULT_K = {"resnet18_2d": 2, "cp_mobilenet_v2_cifar": 10, "r3d_18": 2}  # documented defaults


@pytest.mark.slow
def test_torch_compile_small_model():
    model, x = _build("cp_resnet18_2d")
    model.eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


# --------------------------------------------------------------------------- counts
def _count(name: str, **kwargs) -> int:
    with torch.device("meta"):  # no memory, no init cost
        return hrank.parameter_count(create_model(name, **kwargs))


# torchvision's published counts (its weights' "num_params" metadata) for the same classes.
@pytest.mark.parametrize(
    "name,classes,expected",
    [
        ("resnet18_2d", 1000, 11_689_512),
        ("r3d_18", 400, 33_371_472),
        ("mc3_18", 400, 11_695_440),
        ("r2plus1d_18", 400, 31_505_325),
    ],
)
def test_torchvision_parameter_counts(name, classes, expected):
    assert _count(name, num_classes=classes) == expected


def _bn(c: int) -> int:
    return 2 * c


def test_r2plus1d_count_from_architecture_definition():
    """Count torchvision's r2plus1d_18 by hand: stem, 8 blocks of two (2+1)D convs, fc."""
    total = 3 * 45 * 49 + _bn(45) + 45 * 64 * 3 + _bn(64)  # R2Plus1dStem
    in_planes = 64
    for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block_in in (in_planes, planes):
            mid = midplanes_2plus1d(block_in, planes)
            for conv_in in (block_in, planes):  # conv1: in -> planes, conv2: planes -> planes
                total += conv_in * mid * 9 + _bn(mid) + mid * planes * 3 + _bn(planes)
        if stride != 1 or in_planes != planes:
            total += in_planes * planes + _bn(planes)  # 1x1x1 downsample + BN
        in_planes = planes
    total += 512 * 400 + 400
    assert total == 31_505_325
    assert _count("r2plus1d_18", num_classes=400) == total


def test_midplanes_rule():
    assert midplanes_2plus1d(64, 64) == 144  # torchvision: 64*64*27 // (64*9 + 3*64)
    assert midplanes_2plus1d(64, 128) == 230


def test_mobilenet_table6_counts():
    dense, cp = _count("mobilenet_v2_cifar"), _count("cp_mobilenet_v2_cifar")
    assert dense == 2_296_922 and round(dense / 1e6, 2) == 2.30  # paper: 2.30M
    assert round(cp / 1e6, 2) == 2.29 and cp < dense  # paper: 2.29M


def _conv_params(model: nn.Module) -> dict[str, int]:
    dense = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv3d))
    cps = [m for m in model.modules() if isinstance(m, CPConv)]
    factors = sum(
        m.in_factor.numel() + m.out_factor.numel() + sum(f.numel() for f in m.kernel_factors)
        for m in cps
    )
    return {"dense": dense, "factors": factors, "weights": sum(m.rank for m in cps)}


def test_convnet3d_table7_counts():
    with torch.device("meta"):
        dense = _conv_params(create_model("convnet3d"))
        cp = _conv_params(create_model("cp_convnet3d"))
        cp_s = _conv_params(create_model("cp_convnet3d_s"))
    assert dense["dense"] == 2_880_576  # paper: 2.9M
    assert cp["factors"] == 1_180_632 and cp["weights"] == 6 * (3 + 64 + 128 + 256)
    assert cp_s["factors"] == cp["factors"]  # the same factors; -S adds U(S) and PReLU
    assert round((cp["factors"] + cp["weights"]) / 1e6, 1) == 1.2  # paper: 1.2M


def test_cp_resnet_ranks_keep_dense_counts():
    with torch.device("meta"):
        model = create_model("cp_resnet18_2d")
        dense = create_model("resnet18_2d")
    dense_convs = [m for m in dense.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
    cp_convs = [m for m in model.modules() if isinstance(m, CPConv)]
    assert len(cp_convs) == len(dense_convs) == 17  # stem + 16 block convs
    for cp, d in zip(cp_convs, dense_convs):
        per_rank = cp.in_channels + cp.out_channels + sum(cp.kernel_size) + 1
        assert abs(hrank.parameter_count(cp) - d.weight.numel()) <= per_rank / 2
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1 for m in model.modules())


def test_tucker_resnet_replaces_every_kxk_conv():
    with torch.device("meta"):
        model = create_model("tucker_resnet18_2d")
    assert sum(isinstance(m, TuckerConv) for m in model.modules()) == 17
    assert abs(hrank.parameter_count(model) / _count("resnet18_2d") - 1) < 0.01


@pytest.mark.parametrize("temporal_downsample", [True, False])
def test_cp_resnet18_3d_is_the_2d_model_plus_temporal_factors(temporal_downsample):
    with torch.device("meta"):
        m2 = create_model("cp_resnet18_2d")
        m3 = create_model("cp_resnet18_3d", temporal_downsample=temporal_downsample)
    cp2 = [m for m in m2.modules() if isinstance(m, CPConv)]
    cp3 = [m for m in m3.modules() if isinstance(m, CPConv)]
    assert [m.rank for m in cp2] == [m.rank for m in cp3]
    temporal = sum(m.kernel_factors[0].numel() for m in cp3)  # leading axis = time, size 3
    assert temporal == 3 * sum(m.rank for m in cp3)
    assert hrank.parameter_count(m3) == hrank.parameter_count(m2) + temporal
    strides = [m.stride[0] for m in cp3]
    assert max(strides) == (2 if temporal_downsample else 1)


def test_cp_resnet18_3d_temporal_geometry():
    model, x = _build("cp_resnet18_3d", temporal_downsample=False)
    feats = model.features(x)
    assert feats.shape[2] == x.shape[2]  # time never strided
    model, x = _build("cp_resnet18_3d")
    assert model.features(x).shape[2] == 1  # 5 -> 3 -> 2 -> 1 in stages 2-4


# --------------------------------------------------------------------------- errors
def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown model name 'resnet19'.*r3d_18"):
        create_model("resnet19")


def test_duplicate_registration_raises():
    def resnet18_2d():  # same name as a registered model
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(resnet18_2d)


@pytest.mark.parametrize("name", ["resnet18_2d", "r3d_18", "convnet3d"])
def test_bad_input_rank_and_channels(name):
    model, x = _build(name)
    with pytest.raises(ValueError, match=f"{x.dim()}-D"):
        model(x[0])
    with pytest.raises(ValueError, match="3 channels"):
        model(x[:, :2])
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(x.numpy())


def test_too_small_clip_for_convnet3d():
    model, _ = _build("convnet3d")
    with pytest.raises(ValueError, match=">= 16"):
        model(torch.randn(1, 3, 8, 16, 16))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"width": 0}, "width"),
        ({"in_channels": -1}, "in_channels"),
        ({"num_outputs": 2, "num_classes": 3}, "disagree"),
        ({"head": "mlp"}, "head"),
        ({"temporal_output": "video"}, "temporal_output"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_bad_kwargs(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        create_model("r3d_18", **kwargs)


# --------------------------------------------------------------------------- transduction
def test_transduce_hook_rejects_unsupported_specs():
    model, _ = _build("cp_resnet18_2d")
    spec = SimpleNamespace(dims=2, positions=(0, 1))
    with pytest.raises(ValueError, match="one new leading"):
        model.transduce_hook(spec, lambda m: m)
    video, _ = _build("cp_resnet18_3d")
    with pytest.raises(ValueError, match="data_dim=3"):
        video.transduce_hook(SimpleNamespace(dims=1, positions=(0,)), lambda m: m)


def test_transduced_cp_resnet_gives_per_frame_outputs():
    transduction = pytest.importorskip("hoconv.transduction")
    model, image = _build("cp_resnet18_2d")
    model.eval()
    video = transduction.transduce(model).eval()  # default "center" init, stride 1
    clip = image.unsqueeze(2).expand(-1, -1, 3, -1, -1).contiguous()  # (N, 3, T=3, H, W)
    with torch.no_grad():
        out = video(clip)
        ref = model(image)
    assert out.shape == (image.shape[0], 3, 2)
    for t in range(3):
        torch.testing.assert_close(out[:, t], ref, rtol=1e-4, atol=1e-5)
    ranks = sum(m.rank for m in video.modules() if isinstance(m, CPConv))
    assert transduction.phase_parameter_counts(video)["temporal"] == 3 * ranks


# --------------------------------------------------------------------------- report
def test_report_tables_and_files(tmp_path, capsys):
    from hoconv.app.commands import report

    assert report.run(SimpleNamespace(out=tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "Table 4" in printed and "Figure 6" in printed
    assert {p.name for p in tmp_path.iterdir()} == {"report.md", "tables.json", "figure6.png"}
    tables = json.loads((tmp_path / "tables.json").read_text())
    t4 = {r["model"]: r for r in tables["table4"]["rows"]}
    assert (
        round(t4["r3d_18"]["total"] / 1e6) == 33 and round(t4["r2plus1d_18"]["total"] / 1e6) == 31
    )
    assert round(t4["cp_resnet18_3d"]["total"] / 1e6) == 11
    assert 0 < t4["cp_resnet18_3d"]["video"] < 0.01 * t4["cp_resnet18_3d"]["total"]
    voxels = 16 * 32 * 32
    for row, (c, t) in zip(tables["figure6"]["rows"], report.FIG6_PAIRS):
        assert row["3D-Conv"] == pytest.approx(2 * c * t * 27 * voxels / 1e9)
        for mult in (3, 6):  # 1x1 in, three 1-D convs of size 3, 1x1 out ('same' padding)
            expected = 2 * mult * c * (c + 9 + t) * voxels / 1e9
            assert row[f"CP-HOConv-{mult}"] == pytest.approx(expected)


def test_report_out_must_be_a_folder(tmp_path):
    from hoconv.app.commands import report

    file = tmp_path / "x.txt"
    file.write_text("")
    with pytest.raises(ValueError, match="--out"):
        report.run(SimpleNamespace(out=file))
