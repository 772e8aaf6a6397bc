"""Tensor regression layer and output heads: exactness against dense / TensorLy oracles."""

from __future__ import annotations

import pytest
import tensorly as tl
import torch
import torch.nn.functional as F
from tensorly.cp_tensor import cp_to_tensor
from tensorly.tucker_tensor import tucker_to_tensor

from hoconv.heads import TRL, OutputHead

SHAPES = [(6,), (5, 3, 4), (4, 3, 2, 3)]


def _tensorly_weight(trl: TRL) -> torch.Tensor:
    """Dense weight (K, *input_shape) rebuilt by TensorLy (an independent oracle)."""
    factors = [f.detach() for f in trl.factors] + [trl.out_factor.detach()]
    with tl.backend_context("pytorch"):
        if trl.factorization == "cp":
            w = cp_to_tensor((trl.weights.detach(), factors))
        else:
            w = tucker_to_tensor((trl.core.detach(), factors))
    return torch.movedim(w, -1, 0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("factorization,rank", [("cp", 7), ("tucker", 3), ("tucker", 4)])
def test_trl_equals_dense_linear(shape, factorization, rank):
    torch.manual_seed(0)
    trl = TRL(shape, 5, rank=rank, factorization=factorization).double()
    with torch.no_grad():
        trl.bias.normal_()
    x = torch.randn(3, *shape, dtype=torch.float64)
    weight = _tensorly_weight(trl)
    torch.testing.assert_close(trl.full_weight().detach(), weight)
    expected = F.linear(x.flatten(1), weight.reshape(5, -1), trl.bias.detach())
    torch.testing.assert_close(trl(x), expected)


def test_trl_tucker_explicit_ranks_and_clipping():
    trl = TRL((4, 3), 2, rank=(9, 2, 9), factorization="tucker")
    assert trl.rank == (4, 2, 2)  # clipped to the mode sizes
    assert trl.core.shape == (4, 2, 2)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(
        trl(x), F.linear(x.flatten(1), trl.full_weight().reshape(2, -1), trl.bias)
    )


@pytest.mark.parametrize("factorization", ["cp", "tucker"])
def test_trl_init_matches_linear_variance(factorization):
    torch.manual_seed(0)
    shape = (32, 4, 4)
    trl = TRL(shape, 8, rank=16, factorization=factorization)
    # a low-rank weight's empirical variance fluctuates from draw to draw: average 40 draws
    var = 0.0
    for _ in range(40):
        trl.reset_parameters()
        var += trl.full_weight().detach().square().mean().item() / 40
    target = 1.0 / (3 * 32 * 16)  # nn.Linear's default: U(+-1/sqrt(fan_in))
    assert 0.7 * target < var < 1.4 * target
    y = trl(torch.randn(64, *shape))
    assert torch.isfinite(y).all() and 0.1 < y.std().item() < 2.0


@pytest.mark.parametrize("factorization", ["cp", "tucker"])
def test_trl_gradients(factorization):
    trl = TRL((3, 2, 2), 4, rank=3, factorization=factorization)
    trl(torch.randn(5, 3, 2, 2)).square().sum().backward()
    for name, p in trl.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_trl_bad_arguments():
    with pytest.raises(ValueError, match="factorization"):
        TRL((3, 2), 2, factorization="tt")
    with pytest.raises(ValueError, match="rank"):
        TRL((3, 2), 2, rank=0)
    with pytest.raises(ValueError, match="rank"):
        TRL((3, 2), 2, rank=(2, 2), factorization="tucker")
    with pytest.raises(ValueError, match="input_shape"):
        TRL((3, 0), 2)
    with pytest.raises(ValueError, match=r"shape \(B, 3, 2\)"):
        TRL((3, 2), 2)(torch.randn(4, 2, 3))


@pytest.mark.parametrize("kind", ["fc", "trl"])
def test_head_frames_equal_per_frame_image_head(kind):
    """A 2-D head on (N, C, T, H, W) features regresses each frame as an image (transduction)."""
    torch.manual_seed(0)
    head = OutputHead(6, 3, kind=kind, pool_size=2 if kind == "trl" else 1).eval()
    feats = torch.randn(2, 6, 4, 5, 5)
    out = head(feats)
    assert out.shape == (2, 4, 3)
    for t in range(4):
        torch.testing.assert_close(out[:, t], head(feats[:, :, t]))


def test_head_frames_interpolate_back_to_input_length():
    torch.manual_seed(0)
    head = OutputHead(4, 2).eval()
    feats = torch.randn(1, 4, 2, 3, 3)
    per_frame = head(feats)  # (1, 2, 2), no resampling
    out = head(feats, out_frames=8)
    assert out.shape == (1, 8, 2)
    # align_corners=False: frames 0-1 copy the first value, 6-7 the last, linear in between
    torch.testing.assert_close(out[0, 0], per_frame[0, 0])
    torch.testing.assert_close(out[0, 7], per_frame[0, 1])
    torch.testing.assert_close(out[0, 3] + out[0, 4], per_frame[0, 0] + per_frame[0, 1])
    const = head(feats[:, :, :1].expand(1, 4, 3, 3, 3).contiguous(), out_frames=9)
    torch.testing.assert_close(const, const[:, :1].expand_as(const))


def test_head_clip_pools_time():
    head = OutputHead(4, 2, temporal_output="clip").eval()
    feats = torch.randn(3, 4, 5, 2, 2)
    torch.testing.assert_close(head(feats), head(feats.mean(2)))


def test_head_bad_arguments():
    with pytest.raises(ValueError, match="head"):
        OutputHead(4, 2, kind="mlp")
    with pytest.raises(ValueError, match="temporal_output"):
        OutputHead(4, 2, temporal_output="video")
    with pytest.raises(ValueError, match="num_outputs"):
        OutputHead(4, 0)
    with pytest.raises(ValueError, match="features"):
        OutputHead(4, 2)(torch.randn(1, 4, 2, 2, 2, 2))


def _einsum_weight(trl: TRL) -> torch.Tensor:
    """Dense weight (K, *input_shape) by one explicit einsum over the parameters (autograd)."""
    letters = "ijlmnopq"[: len(trl.input_shape)]
    operands = [*trl.factors, trl.out_factor]
    if trl.factorization == "cp":  # W[k, i, j, ...] = sum_r w_r U1[i, r] U2[j, r] ... Uk[k, r]
        spec = ",".join(f"{a}r" for a in letters) + ",kr,r->k" + letters
        return torch.einsum(spec, *operands, trl.weights)
    ranks = "abcdefgh"[: len(letters)]  # W = G x_1 U1 ... x_N UN x_out Uk
    spec = ",".join(f"{a}{r}" for a, r in zip(letters, ranks)) + ",ks," + ranks + "s->k" + letters
    return torch.einsum(spec, *operands, trl.core)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("factorization,rank", [("cp", 5), ("tucker", 3)])
def test_trl_output_and_gradients_match_the_einsum_reference(shape, factorization, rank):
    """<x, W> + b with W reconstructed by one einsum: the same output and every gradient."""
    torch.manual_seed(1)
    trl = TRL(shape, 4, rank=rank, factorization=factorization).double()
    with torch.no_grad():
        trl.bias.normal_()
    x = torch.randn(3, *shape, dtype=torch.float64, requires_grad=True)
    letters = "ijlmnopq"[: len(shape)]
    ref = torch.einsum(f"b{letters},k{letters}->bk", x, _einsum_weight(trl)) + trl.bias
    out = trl(x)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    inputs = [x, *trl.parameters()]
    for got, expected in zip(
        torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)
    ):
        torch.testing.assert_close(got, expected)


def test_trl_head_matches_the_einsum_reference():
    """OutputHead(kind="trl") as the zoo builds it: pooled features regressed exactly."""
    torch.manual_seed(2)
    head = OutputHead(6, 3, kind="trl", pool_size=2, trl_rank=3).double()
    trl = head.regressor
    with torch.no_grad():
        trl.bias.normal_()
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    pooled = F.adaptive_avg_pool2d(x, 2)  # (2, 6, 2, 2)
    ref = torch.einsum("bijl,kijl->bk", pooled, _einsum_weight(trl)) + trl.bias
    torch.testing.assert_close(head(x), ref)
