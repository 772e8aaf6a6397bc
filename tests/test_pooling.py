"""The zoo's max pools (channels-last route for channels-first CPU inputs) equal nn.MaxPoolNd."""

import pytest
import torch
from torch import nn

from hoconv.models.common import MaxPool2d, MaxPool3d

CASES = [
    (MaxPool2d, nn.MaxPool2d, (3, 2, 1), (2, 5, 9, 11), torch.channels_last),
    (MaxPool3d, nn.MaxPool3d, ((1, 3, 3), (1, 2, 2), (0, 1, 1)), (2, 5, 3, 9, 11),
     torch.channels_last_3d),
    (MaxPool3d, nn.MaxPool3d, (2,), (2, 4, 4, 6, 6), torch.channels_last_3d),
]  # fmt: skip


@pytest.mark.parametrize("ours, reference, args, shape, layout", CASES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_equals_torch_forward_backward_and_keeps_layout(
    ours, reference, args, shape, layout, channels_last
):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=layout)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(*args)(x1), reference(*args)(x2)
    assert torch.equal(y1, y2)
    assert y1.is_contiguous() == y2.is_contiguous()
    assert y1.is_contiguous(memory_format=layout) == y2.is_contiguous(memory_format=layout)
    grad = torch.randn_like(y2)
    y1.backward(grad)
    y2.backward(grad)
    assert torch.equal(x1.grad, x2.grad)


def test_max_pool_with_indices_takes_torch_route():
    x = torch.randn(1, 2, 6, 6)
    out, idx = MaxPool2d(2, return_indices=True)(x)
    ref, ref_idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_max_pool_unbatched_input_takes_torch_route():
    x = torch.randn(2, 6, 6)
    assert torch.equal(MaxPool2d(2)(x), nn.MaxPool2d(2)(x))


TILING = [
    (MaxPool3d, nn.MaxPool3d, (2,), (2, 3, 5, 7, 9), torch.channels_last_3d),  # odd sizes: floor
    (MaxPool3d, nn.MaxPool3d, ((1, 2, 2),), (2, 3, 4, 8, 6), torch.channels_last_3d),
    (MaxPool2d, nn.MaxPool2d, ((3, 2),), (2, 4, 9, 7), torch.channels_last),
]  # fmt: skip


@pytest.mark.parametrize("ours, reference, args, shape, layout", TILING)
@pytest.mark.parametrize("channels_last", [False, True])
def test_tiling_windows_in_inference_equal_torch_and_keep_layout(
    ours, reference, args, shape, layout, channels_last
):
    """kernel == stride without gradients takes tile_max (no copy, no indices): same values."""
    torch.manual_seed(0)
    x = torch.randn(shape).round(decimals=1)  # ties inside windows too
    if channels_last:
        x = x.contiguous(memory_format=layout)
    pool = ours(*args)
    assert pool._tiles()
    with torch.no_grad():
        y, ref = pool(x), reference(*args)(x)
    assert torch.equal(y, ref)
    assert y.is_contiguous() == ref.is_contiguous()
    assert y.is_contiguous(memory_format=layout) == ref.is_contiguous(memory_format=layout)


def test_overlapping_or_padded_windows_do_not_tile():
    assert not MaxPool2d(3, 2, 1)._tiles()
    assert not MaxPool3d(2, ceil_mode=True)._tiles()
    assert not MaxPool3d(2, dilation=2)._tiles()
    assert MaxPool3d((1, 2, 2), (1, 2, 2))._tiles() and MaxPool2d(2)._tiles()


def test_convnet3d_block_pools_before_elu_with_the_figure_orders_outputs_and_gradients():
    """ELU is increasing: conv -> BN -> pool -> ELU equals figure 10's conv -> BN -> ELU -> pool."""
    from hoconv.models.convnet3d import _dense, conv_block

    torch.manual_seed(0)
    ours = conv_block(3, 4, _dense).double()
    conv, bn, pool, elu = ours
    figure = nn.Sequential(conv, bn, nn.ELU(), nn.MaxPool3d(2))
    x = torch.randn(2, 3, 6, 8, 8, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(x1), figure(x2)
    assert isinstance(pool, MaxPool3d) and isinstance(elu, nn.ELU)
    assert torch.equal(y1, y2)
    grad = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, x1, grad)
    (g2,) = torch.autograd.grad(y2, x2, grad)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
