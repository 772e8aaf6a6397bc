"""Every registered model on each CP path (plain / fast), and bf16 fast-path gradients."""

from __future__ import annotations

import pytest
import torch
from test_models import SMALL, _expected_shape

from hoconv import CPConv, _fast
from hoconv import functional as HF
from hoconv.models import create_model, list_models


@pytest.mark.parametrize("implementation", ["plain", "fast"])
@pytest.mark.parametrize("name", list_models())
def test_zoo_model_on_each_path(name, implementation):
    """Documented shape, finite output, a finite gradient for every parameter; the fast
    path's output equals the plain one's (same weights, same input)."""
    kwargs, shape = SMALL[name]
    torch.manual_seed(0)
    model = create_model(name, num_outputs=3, implementation=implementation, **kwargs)
    cps = [m for m in model.modules() if isinstance(m, CPConv)]
    assert all(m.implementation == implementation for m in cps)
    x = torch.randn(*shape)
    y = model(x)
    assert y.shape == _expected_shape(tuple(x.shape), 3, "frames")
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    if implementation == "fast" and cps:
        torch.manual_seed(0)
        plain = create_model(name, num_outputs=3, implementation="plain", **kwargs)
        plain.load_state_dict(model.state_dict())
        torch.testing.assert_close(y, plain(x), rtol=1e-4, atol=1e-4)


BF16_TOL = 3e-2  # max |bf16 - fp32| / max |fp32| per gradient (bf16: 8-bit mantissa)


def _bf16_errors(norm: bool, implementation: str) -> list[float]:
    """Relative error of each bf16 gradient (input, then parameters) against fp32 plain."""
    torch.manual_seed(3)
    kw = dict(dim=3, rank=16, padding=1, norm=norm, activation="relu" if norm else None)
    ref = CPConv(8, 8, 3, implementation="plain", **kw)
    low = CPConv(8, 8, 3, implementation=implementation, dtype=torch.bfloat16, **kw)
    low.load_state_dict({k: v.bfloat16() for k, v in ref.state_dict().items()})
    x, grad = torch.randn(2, 8, 4, 10, 10), torch.randn(2, 8, 4, 10, 10)
    x32, x16 = x.clone().requires_grad_(True), x.bfloat16().requires_grad_(True)
    out16 = low(x16)
    assert out16.dtype == torch.bfloat16
    g32 = torch.autograd.grad(ref(x32), [x32, *ref.parameters()], grad)
    g16 = torch.autograd.grad(out16, [x16, *low.parameters()], grad.bfloat16())
    return [float((a.float() - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in
            zip(g16, g32)]  # fmt: skip


def test_bfloat16_fast_path_gradients_match_float32():
    """The linear layer's fast path in bf16: every gradient within BF16_TOL of fp32's."""
    errors = _bf16_errors(False, "fast")
    assert len(errors) == 8 and max(errors) < BF16_TOL, errors  # x, w, A, 3 K_i, B, bias


def test_bfloat16_fast_path_with_psi_no_worse_than_plain_bf16():
    """With rank-space BatchNorm, bf16 itself loses accuracy (the BN backward cancels terms:
    measured up to 0.15 relative error on the plain path too); the fast path's bf16
    gradients must be as close to fp32 as the plain path's bf16 ones."""
    fast, plain = _bf16_errors(True, "fast"), _bf16_errors(True, "plain")
    for f, p in zip(fast, plain):
        assert f <= 1.5 * p + BF16_TOL, (fast, plain)


def test_bfloat16_fast_path_takes_the_fast_route():
    layer = CPConv(32, 32, 3, dim=2, rank=8, padding=1, dtype=torch.bfloat16)
    x = torch.randn(2, 32, 40, 40, dtype=torch.bfloat16)
    route = layer.route(x)
    assert route.path == "fast" and "bfloat16" in route.reasons[0]
    args = (layer.weights, layer.in_factor, list(layer.kernel_factors), layer.out_factor)
    expected = HF.cp_conv(x.float(), *(a.float() if torch.is_tensor(a) else [f.float() for f in a]
                                       for a in args), layer.bias.float(), 1, 1)  # fmt: skip
    out = _fast.cp_conv(x, *args, layer.bias, 1, 1)
    err = (out.float() - expected).abs().max() / expected.abs().max()
    assert err < BF16_TOL
