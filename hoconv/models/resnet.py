"""ResNet-18, 2-D and 3-D, dense / CP / Tucker, from one skeleton with injected conv builders.

As torchvision's ``models/video/resnet.py`` (where r3d_18, mc3_18 and r2plus1d_18 differ only
in their conv makers and stem), a model here is: stem -> 4 stages of 2 ``BasicBlock`` each
(widths w, 2w, 4w, 8w; stride 1, 2, 2, 2) -> ``OutputHead``. A conv maker is a callable
``(in_planes, out_planes, midplanes, stride) -> nn.Module`` for the 3x3(x3) convs; ``midplanes``
is torchvision's (2+1)D rule ``(in * out * 27) // (in * 9 + 3 * out)``, ignored by the others.

Downsample shortcuts are dense 1x1(x1) convs + norm in every model: a 1x1 conv has no spatial
kernel to factorize, and its CP at "same" rank would save nothing, so the CP/Tucker models keep
them dense (as the paper replaces "each of the convolutional layers" that have a kernel).

Model kwargs (all builders): ``num_outputs`` (default 2 = valence/arousal; 10 = V/A + 8
expression logits; ``num_classes`` is an alias), ``in_channels=3``, ``width=64`` (paper size;
use e.g. 8 for CPU tests), ``head="fc" | "trl"`` (+ ``trl_size``, ``trl_rank``,
``trl_factorization``), ``temporal_output="frames" | "clip"`` (clips; see ``OutputHead``),
``bound_va`` (tanh on valence / arousal; default False, ``hoconv train`` sets True for affect).
CP/Tucker models also take ``rank`` (default "same": each conv has its dense twin's parameter
count, as the paper's ResNet-18).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

from torch import nn

from hoconv import rank as hrank
from hoconv.layers import BatchNorm, CPConv, TuckerConv
from hoconv.models.common import (
    MaxPool2d,
    MaxPool3d,
    ZooModel,
    init_dense,
    make_head,
    positive_int,
    resolve_outputs,
)
from hoconv.models.registry import register_model

ConvMaker = Callable[[int, int, int, int], nn.Module]
NormMaker = Callable[[int], nn.Module]


# --------------------------------------------------------------------------- blocks
def midplanes_2plus1d(in_planes: int, out_planes: int) -> int:
    """torchvision's (2+1)D mid-planes: the (2+1)D conv has about the 3x3x3 conv's params."""
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


class BasicBlock(nn.Module):
    """Two 3x3(x3) convs with norm + ReLU and an identity or downsample shortcut."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        conv: ConvMaker,
        norm: NormMaker,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        mid = midplanes_2plus1d(in_planes, planes)
        self.conv1 = nn.Sequential(
            conv(in_planes, planes, mid, stride), norm(planes), nn.ReLU(True)
        )
        self.conv2 = nn.Sequential(conv(planes, planes, mid, 1), norm(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):  # noqa: D102
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


def _stage(
    in_planes: int,
    planes: int,
    stride: int,
    conv: ConvMaker,
    norm: NormMaker,
    shortcut: Callable[[int, int, int], nn.Module],
) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(shortcut(in_planes, planes, stride), norm(planes))
    return nn.Sequential(
        BasicBlock(in_planes, planes, conv, norm, stride, downsample),
        BasicBlock(planes, planes, conv, norm, 1, None),
    )


class ResNet18(ZooModel):
    """ResNet-18 skeleton: ``stem`` then 4 stages built from the injected makers, then a head.

    Args:
        stem: module mapping the input to ``width`` channels.
        convs: four conv makers, one per stage.
        shortcut: ``(in, out, stride) -> module`` for the 1x1 downsample convs.
        norm: ``channels -> module`` normalisation.
        head: the ``OutputHead``.
        width: stem / first-stage channels.
        in_channels: input channels.
        data_dim: 2 (images) or 3 (clips).
    """

    def __init__(
        self,
        stem: nn.Module,
        convs: Sequence[ConvMaker],
        shortcut: Callable[[int, int, int], nn.Module],
        norm: NormMaker,
        head: nn.Module,
        width: int,
        in_channels: int,
        data_dim: int,
    ) -> None:
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages, in_planes = [], width
        for i, (planes, conv) in enumerate(zip(widths, convs)):
            stages.append(_stage(in_planes, planes, 1 if i == 0 else 2, conv, norm, shortcut))
            in_planes = planes
        features = nn.Sequential(stem, *stages)
        super().__init__(features, head, in_channels, data_dim)
        init_dense(self)


def _build(
    stem_fn: Callable[[int, int], nn.Module],
    convs: Sequence[ConvMaker],
    shortcut: Callable[[int, int, int], nn.Module],
    norm: NormMaker,
    data_dim: int,
    *,
    num_outputs: int | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    width: int = 64,
    head: str = "fc",
    temporal_output: str = "frames",
    trl_size: int = 4,
    trl_rank: int | tuple[int, ...] = 16,
    trl_factorization: str = "cp",
    bound_va: bool = False,
) -> ResNet18:
    k = resolve_outputs(num_outputs, num_classes, default=2)
    in_channels = positive_int("in_channels", in_channels)
    width = positive_int("width", width)
    head_module = make_head(
        8 * width, k, head, temporal_output,
        trl_size=trl_size, trl_rank=trl_rank, trl_factorization=trl_factorization,
        bound_va=bound_va,
    )  # fmt: skip
    stem = stem_fn(in_channels, width)
    return ResNet18(stem, convs, shortcut, norm, head_module, width, in_channels, data_dim)


# --------------------------------------------------------------------------- dense 2-D
def _conv2d(i: int, o: int, mid: int, stride: int) -> nn.Module:
    return nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)


def _shortcut2d(i: int, o: int, stride: int) -> nn.Module:
    return nn.Conv2d(i, o, 1, stride=stride, bias=False)


def _maxpool3d() -> nn.Module:
    return MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))


def _stem2d(
    conv7: Callable[[int, int], nn.Module],
    norm: NormMaker,
    pool: Callable[[], nn.Module] | None = None,
) -> Callable:
    def stem(in_channels: int, width: int) -> nn.Module:
        maxpool = MaxPool2d(3, 2, 1) if pool is None else pool()
        return nn.Sequential(conv7(in_channels, width), norm(width), nn.ReLU(True), maxpool)

    return stem


@register_model
def resnet18_2d(**kwargs) -> ResNet18:
    """torchvision's resnet18 (11,689,512 params with 1000 classes); input (N, 3, H, W)."""
    conv7 = partial(nn.Conv2d, kernel_size=7, stride=2, padding=3, bias=False)
    stem = _stem2d(conv7, nn.BatchNorm2d)
    return _build(stem, [_conv2d] * 4, _shortcut2d, nn.BatchNorm2d, 2, **kwargs)


# --------------------------------------------------------------------------- dense 3-D
class Conv3DSimple(nn.Conv3d):
    """3x3x3 conv, stride ``stride`` on every axis (r3d_18)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1):
        super().__init__(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class Conv3DNoTemporal(nn.Conv3d):
    """1x3x3 conv, stride (1, s, s) (mc3_18 stages 2-4)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1):
        super().__init__(
            in_planes, out_planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
            bias=False,
        )  # fmt: skip


class Conv2Plus1D(nn.Sequential):
    """(2+1)D conv: 1x3x3 to ``midplanes``, BN, ReLU, 3x1x1 (r2plus1d_18)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(in_planes, midplanes, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
        )


def _shortcut3d(i: int, o: int, stride: int, temporal_stride: int | None = None) -> nn.Module:
    ts = stride if temporal_stride is None else temporal_stride
    return nn.Conv3d(i, o, 1, stride=(ts, stride, stride), bias=False)


def _basic_stem3d(in_channels: int, width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(in_channels, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def _r2plus1d_stem(in_channels: int, width: int) -> nn.Module:
    mid = max(1, round(45 * width / 64))  # torchvision hard-codes 45 for width 64
    return nn.Sequential(
        nn.Conv3d(in_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


@register_model
def r3d_18(**kwargs) -> ResNet18:
    """torchvision's r3d_18 (33,371,472 params with 400 classes); input (N, 3, T, H, W)."""
    return _build(_basic_stem3d, [Conv3DSimple] * 4, _shortcut3d, nn.BatchNorm3d, 3, **kwargs)


@register_model
def mc3_18(**kwargs) -> ResNet18:
    """torchvision's mc3_18: 3-D stage 1, 2-D (1x3x3) stages 2-4 (11,695,440 params, 400 cls)."""
    convs = [Conv3DSimple] + [Conv3DNoTemporal] * 3
    shortcut = partial(_shortcut3d, temporal_stride=1)  # stages 2-4 downsample space only
    return _build(_basic_stem3d, convs, shortcut, nn.BatchNorm3d, 3, **kwargs)


@register_model
def r2plus1d_18(**kwargs) -> ResNet18:
    """torchvision's r2plus1d_18 (31,505,325 params with 400 classes); input (N, 3, T, H, W)."""
    return _build(_r2plus1d_stem, [Conv2Plus1D] * 4, _shortcut3d, nn.BatchNorm3d, 3, **kwargs)


# --------------------------------------------------------------------------- factorized
def _kaiming_like(layer: CPConv | TuckerConv) -> CPConv | TuckerConv:
    """Re-initialise so the implied dense kernel has Kaiming fan_out variance (as dense convs)."""
    fan_out = layer.out_channels * math.prod(layer.kernel_size)
    layer.reset_parameters(kernel_var=2.0 / fan_out)
    return layer


def _factorized_2d(cls: type, rank: hrank.RankArg) -> tuple[Callable, ConvMaker]:
    """(stem conv7 maker, 3x3 conv maker) building ``cls`` (CPConv/TuckerConv) 2-D layers."""

    def conv7(i: int, o: int) -> nn.Module:
        return _kaiming_like(cls(i, o, 7, dim=2, rank=rank, stride=2, padding=3, bias=False))

    def conv3(i: int, o: int, mid: int, stride: int) -> nn.Module:
        return _kaiming_like(cls(i, o, 3, dim=2, rank=rank, stride=stride, padding=1, bias=False))

    return conv7, conv3


@register_model
def cp_resnet18_2d(*, rank: hrank.RankArg = "same", **kwargs) -> ResNet18:
    """ResNet-18 with every kxk conv a ``CPConv`` (rank "same": dense parameter count).

    Norms are ``hoconv.BatchNorm`` (any number of axes), so transducing the model needs no
    change to them. Input (N, 3, H, W).
    """
    conv7, conv3 = _factorized_2d(CPConv, rank)
    stem = _stem2d(conv7, BatchNorm)
    return _build(stem, [conv3] * 4, _shortcut2d, BatchNorm, 2, **kwargs)


@register_model
def tucker_resnet18_2d(*, rank: hrank.RankArg = "same", **kwargs) -> ResNet18:
    """ResNet-18 with every kxk conv a ``TuckerConv`` (rank "same"). Input (N, 3, H, W)."""
    conv7, conv3 = _factorized_2d(TuckerConv, rank)
    stem = _stem2d(conv7, BatchNorm)
    return _build(stem, [conv3] * 4, _shortcut2d, BatchNorm, 2, **kwargs)


@register_model
def cp_resnet18_3d(
    *, rank: hrank.RankArg = "same", temporal_downsample: bool = True, **kwargs
) -> ResNet18:
    """CP ResNet-18-3D: ``cp_resnet18_2d`` with a temporal factor (size 3) in every CP conv.

    Each conv keeps the rank of its 2-D twin (``rank`` is resolved against the 2-D dense
    kxk conv), so the model is what transducing ``cp_resnet18_2d`` gives: ~11.2M params,
    of which only the temporal factors (3 x rank per conv) are new. Stem: 3x7x7 CP conv,
    stride (1, 2, 2), then 1x3x3 max-pool, stride (1, 2, 2) (no temporal stride). With
    ``temporal_downsample=True`` (default, as r3d_18) the first conv and the 1x1x1 shortcut of
    stages 2-4 also stride time by 2; with False time is never strided (exactly the geometry of
    ``hoconv.transduce`` with its default stride 1). Outputs are interpolated back to T anyway.
    Input (N, 3, T, H, W).
    """
    ts_of = (lambda s: s) if temporal_downsample else (lambda s: 1)

    def conv7(i: int, o: int) -> nn.Module:
        r = hrank.cp_rank(rank, i, o, (7, 7))
        layer = CPConv(
            i, o, (3, 7, 7), dim=3, rank=r, stride=(1, 2, 2), padding=(1, 3, 3), bias=False
        )
        return _kaiming_like(layer)

    def conv3(i: int, o: int, mid: int, stride: int) -> nn.Module:
        r = hrank.cp_rank(rank, i, o, (3, 3))
        st = (ts_of(stride), stride, stride)
        return _kaiming_like(CPConv(i, o, 3, dim=3, rank=r, stride=st, padding=1, bias=False))

    def shortcut(i: int, o: int, stride: int) -> nn.Module:
        return _shortcut3d(i, o, stride, temporal_stride=ts_of(stride))

    stem = _stem2d(conv7, BatchNorm, pool=_maxpool3d)
    return _build(stem, [conv3] * 4, shortcut, BatchNorm, 3, **kwargs)
