"""MobileNet-v2 for CIFAR-10 and the paper's CP version (appendix, table 6).

The CIFAR variant is the common one (e.g. kuangliu/pytorch-cifar): 3x3 stem conv with stride 1,
stage 2 with stride 1 instead of 2, ReLU, 4x4 average pool before the classifier; 2,296,922
parameters for 10 classes (the paper's 2.30M).

``cp_mobilenet_v2_cifar`` replaces each block's depthwise 3x3 by two separable depthwise 1-D
convs (3x1 then 1x3), each followed by BN + ReLU as in the paper's Algorithm 1. The block then
*is* a CP convolution with the paper's Psi (eq. 7): 1x1 to rank R = expansion x in (U(C)),
BN + ReLU, U(K0) (3x1), BN + ReLU, U(K1) (1x3), BN + ReLU, 1x1 back to T (U(T), lambda absorbed
in it), BN. Per block that is 6R + 2R (one more BN) instead of 9R weights: 2,289,786 params
(paper: 2.29M). Without the middle BN it would be 2,275,514 (2.28M), so the paper's count
implies Algorithm 1's per-factor BN.

Kwargs: ``num_classes`` / ``num_outputs`` (default 10), ``in_channels=3``, ``width`` (multiplier
on every channel count, in percent of the paper's; default 100), ``head="fc" | "trl"``.
Input (N, 3, H, W), e.g. 32x32.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hoconv.models.common import ZooModel, init_dense, make_head, positive_int, resolve_outputs
from hoconv.models.registry import register_model

# (expansion, out_planes, num_blocks, stride); stage 2 stride 1 for 32x32 CIFAR inputs.
CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
       (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip

Depthwise = Callable[[int, int], nn.Module]  # (planes, stride) -> spatial depthwise part


def depthwise_3x3(planes: int, stride: int) -> nn.Module:
    """MobileNet-v2's depthwise 3x3 conv."""
    return nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=False)


def depthwise_cp(planes: int, stride: int) -> nn.Module:
    """The CP block's spatial part: depthwise 3x1, BN, ReLU, depthwise 1x3 (U(K0), U(K1)).

    The block adds the BN + ReLU after the 1x3 (as after MobileNet-v2's depthwise 3x3).
    """
    return nn.Sequential(
        nn.Conv2d(planes, planes, (3, 1), (stride, 1), (1, 0), groups=planes, bias=False),
        nn.BatchNorm2d(planes),
        nn.ReLU(inplace=True),
        nn.Conv2d(planes, planes, (1, 3), (1, stride), (0, 1), groups=planes, bias=False),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise -> project 1x1, residual when stride is 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int, dw: Depthwise):
        super().__init__()
        planes = expansion * in_planes
        self.block = nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            dw(planes, stride),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )
        self.stride = stride
        self.shortcut: nn.Module | None = None
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes)
            )
        elif stride == 1:
            self.shortcut = nn.Identity()

    def forward(self, x):  # noqa: D102
        out = self.block(x)
        return out if self.shortcut is None else out + self.shortcut(x)


def _mobilenet(
    dw: Depthwise,
    *,
    num_outputs: int | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    width: int = 100,
    head: str = "fc",
    trl_size: int = 4,
    trl_rank: int | tuple[int, ...] = 16,
    trl_factorization: str = "cp",
    bound_va: bool = False,
) -> ZooModel:
    k = resolve_outputs(num_outputs, num_classes, default=10)
    in_channels = positive_int("in_channels", in_channels)
    pct = positive_int("width", width)

    def ch(c: int) -> int:
        return max(1, c * pct // 100)

    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, ch(32), 3, 1, 1, bias=False),
        nn.BatchNorm2d(ch(32)),
        nn.ReLU(inplace=True),
    ]
    c_in = ch(32)
    for expansion, out, blocks, stride in CFG:
        for i in range(blocks):
            layers.append(InvertedResidual(c_in, ch(out), expansion, stride if i == 0 else 1, dw))
            c_in = ch(out)
    layers += [nn.Conv2d(c_in, ch(1280), 1, bias=False), nn.BatchNorm2d(ch(1280)), nn.ReLU(True)]
    out_head = make_head(
        ch(1280), k, head, "frames",
        trl_size=trl_size, trl_rank=trl_rank, trl_factorization=trl_factorization,
        bound_va=bound_va,
    )  # fmt: skip
    model = ZooModel(nn.Sequential(*layers), out_head, in_channels, data_dim=2)
    init_dense(model.features)
    return model


@register_model
def mobilenet_v2_cifar(**kwargs) -> ZooModel:
    """MobileNet-v2 for CIFAR-10 (2,296,922 params, 10 classes)."""
    return _mobilenet(depthwise_3x3, **kwargs)


@register_model
def cp_mobilenet_v2_cifar(**kwargs) -> ZooModel:
    """MobileNet-v2 with CP blocks (depthwise 3x3 -> 3x1 then 1x3; 2,289,786 params)."""
    return _mobilenet(depthwise_cp, **kwargs)
