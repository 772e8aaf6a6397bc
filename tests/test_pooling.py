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
