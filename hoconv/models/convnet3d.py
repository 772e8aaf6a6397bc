"""The small 3-D ConvNet of the paper's appendix (figure 10, table 7) and its HO-CP versions.

Four blocks ``conv 3x3x3 (padding 1) -> BN -> ELU -> 2x2x2 max-pool`` with channels
(3, 64), (64, 128), (128, 256), (256, 256), then FC 512, ELU, FC to the outputs.

* ``convnet3d``: dense ``nn.Conv3d`` (2,880,576 conv weights; the paper's 2.9M).
* ``cp_convnet3d``: ``CPConv`` with rank 6 x input channels and ReLU (+ rank-space BN) between
  the 1-D factors ("HO-CP ConvNet"; 1,180,632 factor entries + 2,706 weights; the paper's 1.2M).
* ``cp_convnet3d_s``: the same with the skip factor U(S) and PReLU ("HO-CP ConvNet-S").

The FC head is size-agnostic: space is adaptively pooled to 5x5 (the size the paper's 84x84x18
clips reach, so there it is the identity) before FC 512. Each axis is halved four times, so
every input axis must be >= 16 (the model raises a ValueError otherwise). Jester
classification uses ``temporal_output="clip"`` (time pooled, (N, classes)); the default
``"frames"`` gives per-frame outputs (N, T, K) as every video model of the zoo.

Kwargs: ``num_classes`` / ``num_outputs`` (default 27, Jester's gestures), ``in_channels=3``,
``width=64`` (channels w, 2w, 4w, 4w), ``hidden=512``, ``head="fc" | "trl"``,
``temporal_output``; CP versions: ``rank_multiplier=6``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from hoconv.layers import CPConv
from hoconv.models.common import (
    MaxPool3d,
    ZooModel,
    init_dense,
    make_head,
    positive_int,
    resolve_outputs,
)
from hoconv.models.registry import register_model

ConvMaker = Callable[[int, int], nn.Module]


def conv_block(in_planes: int, out_planes: int, conv: ConvMaker) -> nn.Sequential:
    """conv -> BN -> ELU -> 2x2x2 max-pool (figure 10's block), run as conv -> BN -> pool -> ELU.

    ELU is increasing, so it commutes with the max: same outputs and gradients (each window's
    max is at the same place), with the ELU on an eighth of the values.
    """
    return nn.Sequential(
        conv(in_planes, out_planes), nn.BatchNorm3d(out_planes), MaxPool3d(2),
        nn.ELU(inplace=True),
    )  # fmt: skip


def _convnet3d(
    conv: ConvMaker,
    *,
    num_outputs: int | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    width: int = 64,
    hidden: int = 512,
    head: str = "fc",
    temporal_output: str = "frames",
    trl_size: int = 4,
    trl_rank: int | tuple[int, ...] = 16,
    trl_factorization: str = "cp",
    bound_va: bool = False,
) -> ZooModel:
    k = resolve_outputs(num_outputs, num_classes, default=27)
    in_channels = positive_int("in_channels", in_channels)
    width = positive_int("width", width)
    hidden = positive_int("hidden", hidden)
    channels = (in_channels, width, 2 * width, 4 * width, 4 * width)
    blocks = [conv_block(i, o, conv) for i, o in zip(channels[:-1], channels[1:])]
    out_head = make_head(
        channels[-1], k, head, temporal_output, pool_size=5, hidden=(hidden,),
        trl_size=trl_size, trl_rank=trl_rank, trl_factorization=trl_factorization,
        bound_va=bound_va,
    )  # fmt: skip
    model = ZooModel(nn.Sequential(*blocks), out_head, in_channels, data_dim=3, min_size=16)
    init_dense(model.features)
    return model


def _dense(i: int, o: int) -> nn.Module:
    return nn.Conv3d(i, o, 3, padding=1, bias=False)


def _cp_maker(rank_multiplier: int, activation: str, skip: bool) -> ConvMaker:
    multiplier = positive_int("rank_multiplier", rank_multiplier)

    def conv(i: int, o: int) -> nn.Module:
        return CPConv(
            i, o, 3, dim=3, rank=multiplier * i, padding=1, bias=False,
            norm=True, activation=activation, skip=skip,
        )  # fmt: skip

    return conv


@register_model
def convnet3d(**kwargs) -> ZooModel:
    """Figure 10's 3-D ConvNet with dense 3x3x3 convs. Input (N, 3, T, H, W), each >= 16."""
    return _convnet3d(_dense, **kwargs)


@register_model
def cp_convnet3d(*, rank_multiplier: int = 6, **kwargs) -> ZooModel:
    """HO-CP ConvNet: CP convs of rank 6 x input channels, rank-space BN + ReLU."""
    return _convnet3d(_cp_maker(rank_multiplier, "relu", skip=False), **kwargs)


@register_model
def cp_convnet3d_s(*, rank_multiplier: int = 6, **kwargs) -> ZooModel:
    """HO-CP ConvNet-S: as ``cp_convnet3d`` with the skip factor U(S) and PReLU."""
    return _convnet3d(_cp_maker(rank_multiplier, "prelu", skip=True), **kwargs)
