"""Library edge cases: clear errors (or an exact answer) instead of raw torch / LAPACK errors."""

import pytest
import torch
from torch import nn

from hoconv import CPConv, TuckerConv, factorize


def test_cp_from_dense_of_zero_kernel_is_an_exact_zero_layer():
    layer = CPConv.from_dense(torch.zeros(4, 3, 3, 3), 5)
    assert layer.decomposition_error == 0.0
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(layer(x), torch.zeros(2, 4, 6, 6))
    assert all(torch.isfinite(p).all() for p in layer.parameters())


@pytest.mark.parametrize("cls", [CPConv, TuckerConv])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_from_dense_of_non_finite_kernel_is_refused(cls, value):
    kernel = torch.randn(4, 3, 3, 3)
    kernel[1, 2, 0, 0] = value
    with pytest.raises(ValueError, match="1 NaN/inf entries"):
        cls.from_dense(kernel, 2)


@pytest.mark.parametrize("cls", [CPConv, TuckerConv])
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8])
def test_from_dense_of_non_float_kernel_is_refused(cls, dtype):
    with pytest.raises(TypeError, match="floating-point kernel.*" + str(dtype).split(".")[1]):
        cls.from_dense(torch.ones(4, 3, 3, 3, dtype=dtype), 2)


def test_cp_rank_above_the_useful_maximum_is_lowered_with_a_warning():
    kernel = torch.randn(4, 4, 3, 3)  # largest useful CP rank: 144 / 4 = 36
    with pytest.warns(UserWarning, match="above the largest useful rank 36.*using 36"):
        layer = CPConv.from_dense(kernel, 10**6)
    assert layer.rank == 36 and layer.weights.shape == (36,)
    assert layer.decomposition_error < 1e-3  # 36 components reconstruct it (ALS, 100 iterations)


def test_cp_rank_at_the_maximum_is_kept_silently(recwarn):
    layer = CPConv.from_dense(torch.randn(4, 4, 3, 3), 36)
    assert layer.rank == 36 and not [w for w in recwarn if "useful rank" in str(w.message)]


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = self.a  # the same conv under a second name
        self.c = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_factorize_replaces_a_shared_conv_under_every_name():
    model = Shared()
    new, errors = factorize(model, "cp", rank=6)
    assert isinstance(new.a, CPConv) and new.a is new.b  # still shared, one decomposition
    assert isinstance(new.c, CPConv) and set(errors) == {"a", "b", "c"}
    assert errors["a"] == errors["b"]
    assert isinstance(model.a, nn.Conv2d) and model.a is model.b  # the source is untouched
    x = torch.randn(1, 3, 6, 6)
    dense = model(x)
    assert (new(x) - dense).norm() / dense.norm() < 0.5
    filtered, errors = factorize(model, "cp", rank=6, filter_fn=lambda name, m: name == "b")
    assert filtered.a is filtered.b and isinstance(filtered.a, CPConv)  # both names, once
    assert isinstance(filtered.c, nn.Conv2d) and set(errors) == {"a", "b"}
