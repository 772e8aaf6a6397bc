"""Transduction N -> N+K: exactness on constant clips, every layer rule, phases, specs, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hoconv
from hoconv import functional as HF
from hoconv.layers import CPConv, TuckerConv
from hoconv.transduction import (
    ConvNd,
    PerFrame,
    TransducedTuckerConv,
    phase,
    phase_parameter_counts,
    rebuild,
    temporal_parameters,
    transduce,
)

DT = torch.float64


def make_model(kind: str, dim: int = 2, psi: bool = False, seed: int = 0) -> nn.Sequential:
    """Factorized convs, BN, max pool, a dense conv, channel dropout, global pool, linear head."""
    torch.manual_seed(seed)
    fact = {"cp": CPConv, "tucker": TuckerConv}[kind]
    extra = {"norm": True, "activation": "prelu", "skip": True} if psi else {}
    first = fact(3, 8, 3, dim=dim, rank=6, padding=1, **extra)
    model = nn.Sequential(
        first,
        getattr(nn, f"BatchNorm{dim}d")(8),
        nn.ReLU(),
        getattr(nn, f"MaxPool{dim}d")(2),
        fact(8, 8, 3, dim=dim, rank=5, stride=2, padding=1),
        getattr(nn, f"Conv{dim}d")(8, 6, 3, padding=1),
        getattr(nn, f"Dropout{dim}d")(0.3),
        getattr(nn, f"AdaptiveAvgPool{dim}d")(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).to(DT)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.randn(4, 3, *([8] * dim), dtype=DT))
    return model


def constant_clip(x: torch.Tensor, dims: int, length: int, positions=None) -> torch.Tensor:
    """Repeat an (N, C, *S) input along new axes of size ``length`` at ``positions``."""
    positions = tuple(range(dims)) if positions is None else positions
    out = x
    for p in positions:
        out = out.unsqueeze(2 + p)
    shape = list(out.shape)
    for p in positions:
        shape[2 + p] = length
    return out.expand(shape)


def set_mode(model: nn.Module, train: bool) -> None:
    model.train(train)
    for m in model.modules():  # dropout is random: compare without it
        if isinstance(m, (nn.Dropout2d, nn.Dropout1d, hoconv.transduction.ChannelDropout)):
            m.eval()


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(
    "kind,src_dim,dims,psi",
    [
        ("cp", 2, 1, False),
        ("cp", 2, 1, True),
        ("tucker", 2, 1, False),
        ("cp", 2, 2, False),
        ("cp", 2, 2, True),
        ("tucker", 2, 2, False),
        ("cp", 1, 2, True),
        ("tucker", 1, 2, False),
    ],
)
def test_constant_clip_reproduces_per_frame_output(kind, src_dim, dims, psi, train):
    model = make_model(kind, src_dim, psi)
    video = transduce(model, dims=dims)
    set_mode(model, train)
    set_mode(video, train)
    x = torch.randn(2, 3, *([8] * src_dim), dtype=DT)
    with torch.no_grad():
        expected = model(x)  # (N, 4)
        got = video(constant_clip(x, dims, 3))  # (N, *new, 4)
    assert got.shape == (2, *([3] * dims), 4)
    torch.testing.assert_close(got, expected.reshape(2, *([1] * dims), 4).expand_as(got))


def test_layer_types_after_transduction():
    model = make_model("cp", 2)
    video4 = transduce(model, dims=2)
    assert isinstance(video4[0], CPConv) and video4[0].dim == 4
    assert isinstance(video4[1], hoconv.BatchNorm)
    assert isinstance(video4[3], PerFrame) and video4[3].axes == (0, 1)
    assert isinstance(video4[5], ConvNd) and video4[5].weight.shape == (6, 8, 3, 3, 3, 3)
    video3 = transduce(model)
    assert isinstance(video3[5], nn.Conv3d)
    tucker = transduce(make_model("tucker", 2))
    assert isinstance(tucker[0], TransducedTuckerConv)
    assert tucker[0].effective_core().shape == (*tucker[0].rank, 3, 3, 3)


def test_source_model_untouched():
    model = make_model("cp", 2, psi=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = transduce(model)
    assert video[0] is not model[0]
    assert model[0].dim == 2 and len(model[0].kernel_factors) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_positions_put_time_last():
    model = make_model("cp", 2, psi=True)
    video = transduce(model, positions=(2,))
    set_mode(model, False)
    set_mode(video, False)
    x = torch.randn(2, 3, 8, 8, dtype=DT)
    clip = constant_clip(x, 1, 3, positions=(2,))  # (N, C, H, W, T)
    assert clip.shape == (2, 3, 8, 8, 3)
    with torch.no_grad():
        torch.testing.assert_close(video(clip), model(x).unsqueeze(1).expand(2, 3, 4))
    assert video[0].transduced_axes == (2,)


def test_stride_match_downsamples_time_and_stays_exact():
    model = make_model("cp", 2)
    video = transduce(model, stride="match")
    assert video[4].stride == (2, 2, 2) and video[0].stride == (1, 1, 1)
    set_mode(model, False)
    set_mode(video, False)
    x = torch.randn(2, 3, 8, 8, dtype=DT)
    with torch.no_grad():
        got = video(constant_clip(x, 1, 5))
    assert got.shape == (2, 3, 4)  # ceil(5 / 2) frames
    torch.testing.assert_close(got, model(x).unsqueeze(1).expand_as(got))


def test_after_from_dense():
    torch.manual_seed(1)
    dense = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3)).to(DT)
    for cls in (CPConv, TuckerConv):
        model = nn.Sequential(
            cls.from_dense(dense[0], 4, n_iter_max=20),
            nn.ReLU(),
            cls.from_dense(dense[2], 3, n_iter_max=20),
        )
        assert model[0].decomposition_error < 1.0
        video = transduce(model, dims=1)
        x = torch.randn(2, 3, 7, 7, dtype=DT)
        expected = model(x)  # (N, 5, 5, 5)
        got = video(constant_clip(x, 1, 3))  # (N, 5, 3, 5, 5)
        torch.testing.assert_close(got, expected.unsqueeze(2).expand_as(got))


@pytest.mark.parametrize("kind", ["cp", "tucker"])
def test_transduced_layer_is_a_convolution_with_the_inflated_kernel(kind):
    """The new layer equals conv_nd with the source kernel times the init profile in time."""
    torch.manual_seed(2)
    layer = (CPConv if kind == "cp" else TuckerConv)(3, 4, 3, dim=2, rank=3, padding=1).to(DT)
    x = torch.randn(2, 3, 5, 6, 6, dtype=DT)  # a real (non-constant) clip
    for init, profile in (("center", [0, 1, 0]), ("ones", [1, 1, 1]), ("average", [1 / 3] * 3)):
        video = transduce(nn.Sequential(layer), init=init)[0]
        kernel = layer.to_dense().unsqueeze(2) * torch.tensor(profile, dtype=DT).view(3, 1, 1)
        expected = HF.conv_nd(x, kernel, layer.bias, padding=1)
        torch.testing.assert_close(video(x), expected)
        torch.testing.assert_close(video.to_dense(), kernel)


def test_average_init_exact_on_interior_frames_only():
    torch.manual_seed(3)
    layer = CPConv(3, 4, 3, dim=2, rank=3, padding=1).to(DT)
    video = transduce(nn.Sequential(layer), init="average")
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    got = video(constant_clip(x, 1, 5))  # (N, 4, 5, 6, 6)
    expected = layer(x)
    for t in (1, 2, 3):
        torch.testing.assert_close(got[:, :, t], expected)
    assert not torch.allclose(got[:, :, 0], expected)  # the border frame sees zero padding


def test_string_paddings_of_the_source_layer():
    torch.manual_seed(6)
    for ks in (3, 2):  # "same" with an even kernel is asymmetric: kept as the string "same"
        layer = CPConv(3, 4, ks, dim=2, rank=3, padding="same").to(DT)
        video = transduce(nn.Sequential(layer))[0]
        assert video.padding == ((1, 1, 1) if ks == 3 else "same")
        x = torch.randn(2, 3, 6, 6, dtype=DT)
        got = video(constant_clip(x, 1, 3))
        torch.testing.assert_close(got, layer(x).unsqueeze(2).expand_as(got))
    with pytest.raises(ValueError, match="asymmetric"):
        transduce(nn.Sequential(layer), padding="valid")
    valid = transduce(nn.Sequential(CPConv(3, 4, 3, dim=2, rank=3, padding="valid")))
    assert valid[0].padding == (1, 0, 0)


def test_pointwise_layers_stay_pointwise():
    torch.manual_seed(4)
    model = nn.Sequential(
        CPConv(3, 4, 3, dim=2, rank=3, padding=1), nn.Conv2d(4, 4, 1, stride=2)
    ).to(DT)
    video = transduce(model, stride="match")
    assert video[1].kernel_size == (1, 1, 1) and video[1].stride == (2, 2, 2)  # its own stride
    assert video[0].stride == (1, 1, 1) and video[0].kernel_size == (3, 3, 3)
    video = transduce(model, stride=1)
    assert video[1].stride == (1, 2, 2) and video[1].padding == (0, 0, 0)


def test_phases_train_only_the_new_factors():
    for kind, psi in (("cp", False), ("cp", True), ("tucker", False)):
        video = transduce(make_model(kind, 2, psi), dims=1)
        new = temporal_parameters(video)
        if kind == "cp":  # one (R, 3) factor per CP layer
            assert [tuple(p.shape) for _, p in new] == [(6, 3), (5, 3)]
        else:  # one (R_out, R_in, 3) factor per Tucker layer
            assert [tuple(p.shape) for _, p in new] == [(6, 3, 3), (5, 5, 3)]
        counts = phase(video, "temporal")
        expected = sum(p.numel() for _, p in new)
        assert counts["trainable"] == expected == phase_parameter_counts(video)["temporal"]
        trainable = {n for n, p in video.named_parameters() if p.requires_grad}
        assert trainable == {n for n, _ in new}
        x = constant_clip(torch.randn(2, 3, 8, 8, dtype=DT), 1, 3) + 0.1 * torch.randn(
            2, 3, 3, 8, 8, dtype=DT
        )
        video(x).square().sum().backward()
        for name, p in video.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            else:
                assert p.grad is None, name
        counts = phase(video, "all")
        assert counts["trainable"] == counts["total"] == sum(p.numel() for p in video.parameters())


def test_phase_errors():
    with pytest.raises(ValueError, match="transduce"):
        phase(make_model("cp"), "temporal")
    with pytest.raises(ValueError, match="'temporal' or 'all'"):
        phase(transduce(make_model("cp")), "spatial")


def test_spec_is_recorded_and_rebuild_loads_a_checkpoint(tmp_path):
    base = make_model("cp", 2, psi=True)
    video = transduce(base, dims=1, kernel_size=5, stride="match", init="ones")
    assert video.transduction_spec == {
        "dims": 1, "kernel_size": (5,), "stride": ("match",), "padding": "same",
        "dilation": (1,), "init": "ones", "positions": (0,),
    }  # fmt: skip
    with torch.no_grad():
        for p in temporal_parameters(video):
            p[1].normal_()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": video.state_dict(), "spec": video.transduction_history}, path)
    ckpt = torch.load(path, weights_only=True)
    again = rebuild(make_model("cp", 2, psi=True, seed=7), ckpt["spec"])
    again.load_state_dict(ckpt["model"])
    set_mode(video, False)
    set_mode(again, False)
    x = torch.randn(2, 3, 6, 8, 8, dtype=DT)
    torch.testing.assert_close(again(x), video(x))


def test_transduce_twice_equals_once():
    model = make_model("cp", 1, psi=True)
    twice = transduce(transduce(model, dims=1), dims=1)
    once = transduce(model, dims=2)
    assert len(twice.transduction_history) == 2
    assert twice[0].transduced_axes == (0, 1)
    set_mode(twice, False)
    set_mode(once, False)
    x = torch.randn(2, 3, 4, 4, 8, dtype=DT)
    with torch.no_grad():
        torch.testing.assert_close(twice(x), once(x))
    tucker = transduce(transduce(make_model("tucker", 1), dims=1), dims=1)
    assert tucker[0].temporal_axes == (0, 1)


def test_dtype_is_kept():
    model = make_model("cp", 2, psi=True).float()
    video = transduce(model)
    assert all(p.dtype == torch.float32 for p in video.parameters())
    assert video(torch.randn(1, 3, 2, 8, 8)).dtype == torch.float32
    # the meta device (used by hoconv.rank.macs) runs the transduced model too
    frame_macs = hoconv.rank.macs(model, (1, 3, 8, 8))
    assert hoconv.rank.macs(video, (1, 3, 4, 8, 8)) > 4 * frame_macs > 0


def test_transduce_hook_protocol():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = CPConv(3, 4, 3, dim=2, rank=3, padding=1)
            self.head = nn.Linear(4, 2)
            self.frames = False

        def forward(self, x):
            h = self.conv(x).mean(dim=(-2, -1))  # (N, 4) or (N, 4, T)
            return self.head(h.movedim(1, -1) if self.frames else h)

        def transduce_hook(self, spec, convert):
            self.conv = convert(self.conv)
            self.frames = True
            return self

    net = Net().to(DT)
    video = transduce(net)
    x = torch.randn(2, 3, 6, 6, dtype=DT)
    got = video(constant_clip(x, 1, 4))
    torch.testing.assert_close(got, net(x).unsqueeze(1).expand(2, 4, 2))


def test_bad_input():
    dense = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="no CPConv or TuckerConv"):
        transduce(dense)
    model = make_model("cp")
    with pytest.raises(ValueError, match="dims must be >= 1"):
        transduce(model, dims=0)
    with pytest.raises(TypeError, match="dims"):
        transduce(model, dims=1.0)
    with pytest.raises(ValueError, match="odd"):
        transduce(model, kernel_size=2)  # center init needs a centre
    with pytest.raises(ValueError, match="padding='same' needs odd"):
        transduce(model, kernel_size=2, init="ones")
    with pytest.raises(ValueError, match="init must be one of"):
        transduce(model, init="zeros")
    with pytest.raises(ValueError, match="positions"):
        transduce(model, positions=(5,))
    with pytest.raises(ValueError, match="positions"):
        transduce(model, dims=2, positions=(0, 0))
    with pytest.raises(ValueError, match="stride"):
        transduce(model, stride="fast")
    with pytest.raises(TypeError, match="nn.Module"):
        transduce("resnet")
    even = transduce(model, kernel_size=2, padding=0, init="ones")  # even + explicit padding: fine
    assert even[0].kernel_size == (2, 3, 3)
    assert even(torch.randn(1, 3, 4, 8, 8, dtype=DT)).shape == (1, 1, 4)  # 4 -> 3 -> 2 -> 1
