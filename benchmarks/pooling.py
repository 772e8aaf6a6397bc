"""The zoo's max pools and the 3-D ConvNet's block order, side by side (inference, CPU).

Pools: ``torch.nn.MaxPoolNd`` against the zoo's (``hoconv.models.common``): windows that tile
the input take ``tile_max`` without gradients, others a channels-last copy. Whole model: the
3-D ConvNet (appendix, figure 10) as the zoo builds it (conv, BN, pool, ELU; tiling pool) against
figure 10's order (conv, BN, ELU, pool) with torch's pool and with the zoo's previous
channels-last pool. Every row is timed interleaved in one process (median ms, no_grad).

    python benchmarks/pooling.py [--threads 2] [--repeats 20]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from hoconv.compress.measure import interleaved_ms
from hoconv.models import create_model
from hoconv.models.common import MaxPool2d, MaxPool3d

POOLS = [  # (label, torch pool, zoo pool, input shape)
    ("ConvNet block 1, 2x2x2", nn.MaxPool3d(2), MaxPool3d(2), (4, 64, 16, 32, 32)),
    ("ConvNet block 2, 2x2x2", nn.MaxPool3d(2), MaxPool3d(2), (4, 128, 8, 16, 16)),
    ("ResNet stem, 3x3/2 pad 1", nn.MaxPool2d(3, 2, 1), MaxPool2d(3, 2, 1), (8, 64, 56, 56)),
]


class _ChannelsLastOnly(MaxPool3d):
    """The zoo's pool before tiling windows had their own route (a channels-last copy)."""

    def _tiles(self) -> bool:
        return False


def figure_order(model: nn.Module, pool: type[nn.Module]) -> nn.Module:
    """A copy of the zoo's ConvNet with each block back in figure 10's order, ``pool`` pooling."""
    out = copy.deepcopy(model)
    for i, (conv, bn, _, elu) in enumerate(model.features):
        out.features[i] = nn.Sequential(conv, bn, elu, pool(2))
    return out.eval()


def main(argv: list[str] | None = None) -> None:
    """Print the pool table and the whole-model table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, median of {args.repeats} interleaved runs, no_grad\n")
    print("| pool | input | torch ms | zoo ms | zoo / torch |\n|---|---|---|---|---|")
    for label, reference, ours, shape in POOLS:
        ms = interleaved_ms({"torch": reference, "zoo": ours}, torch.randn(shape), args.repeats)
        print(f"| {label} | {shape} | {ms['torch']:.2f} | {ms['zoo']:.2f} | "
              f"{ms['zoo'] / ms['torch']:.2f} |")  # fmt: skip
    zoo = create_model("convnet3d", num_classes=4, temporal_output="clip").eval()
    models = {
        "zoo (conv, BN, tiling pool, ELU)": zoo,
        "figure order, channels-last pool": figure_order(zoo, _ChannelsLastOnly),
        "figure order, torch pool": figure_order(zoo, nn.MaxPool3d),
    }
    sample = torch.randn(4, 3, 16, 32, 32)
    with torch.no_grad():
        outputs = [m(sample) for m in models.values()]
    assert all(torch.equal(outputs[0], o) for o in outputs[1:]), "the orders must agree"
    ms = interleaved_ms(models, sample, args.repeats)
    base = ms["figure order, torch pool"]
    print(f"\n3-D ConvNet (width 64), input {tuple(sample.shape)}: the same outputs\n")
    print("| model | forward ms | / figure order with torch pool |\n|---|---|---|")
    for name, value in ms.items():
        print(f"| {name} | {value:.1f} | {value / base:.2f} |")


if __name__ == "__main__":
    main()
