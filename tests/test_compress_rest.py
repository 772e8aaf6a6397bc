"""``without_layers``: the model minus its factorizable convs, for measuring the rest's ms."""

import torch
from torch import nn

from hoconv.compress.measure import without_layers


def test_without_layers_gives_the_same_output_without_calling_the_layers():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()), nn.AdaptiveAvgPool2d(1),
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    rest = without_layers(model, x, ["0", "3.0"])
    calls = []
    for name in ("0", "3.0"):
        rest.get_submodule(name).register_forward_pre_hook(lambda m, i: calls.append(i[0].shape))
        assert not isinstance(rest.get_submodule(name), nn.Conv2d)
    with torch.no_grad():
        assert torch.equal(rest(x), model(x))
    assert len(calls) == 2  # the stand-ins ran, and the original model is untouched:
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[3][0], nn.Conv2d)
    with torch.no_grad():  # another input: the first stand-in still gives the sample's output
        assert torch.equal(rest(torch.randn_like(x)), model(x))


def test_a_layer_inside_another_named_one_goes_with_it():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(1, 3, 5, 5)
    rest = without_layers(model, x, ["0.0", "0", "1"])
    assert not isinstance(rest[0], nn.Sequential) and not isinstance(rest[1], nn.Conv2d)
    with torch.no_grad():
        assert torch.equal(rest(x), model(x))
