"""The paper's unified framework made executable (section 3.4, figures 4-5).

Efficient blocks are factorized convolutions with their factors regrouped:

- a CP convolution is a MobileNet-v2 block without its BN / ReLU: 1x1 expansion (``in_factor``),
  a depthwise KxK conv whose kernel is the outer product of the spatial factors, and a 1x1
  projection (``diag(weights) out_factor``);
- a MobileNet-v1 block (depthwise then 1x1) is a CP convolution of rank C whose input factor is
  diagonal: the depthwise kernels absorb it and the 1x1 is ``out_factor diag(weights)``;
- a Tucker convolution is a ResNet bottleneck: 1x1 reduction, a small KxK conv (the core), 1x1
  expansion.

Each function returns an ``nn.Sequential`` of standard ``nn.ConvNd`` modules (``dim <= 3``)
that computes exactly what the factorized layer computes.
"""

from __future__ import annotations

import string

import torch
from torch import nn

from hoconv.layers import CPConv, TuckerConv

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _conv_class(layer: CPConv | TuckerConv) -> type[nn.modules.conv._ConvNd]:
    if layer.dim not in _CONV:
        raise ValueError(
            f"blocks are built from nn.Conv1d/2d/3d, so dim must be 1, 2 or 3, got {layer.dim}"
        )
    return _CONV[layer.dim]


def _pointwise(matrix: torch.Tensor, bias: torch.Tensor | None, conv: type) -> nn.Module:
    """A 1x1 conv computing ``x ×_0 matrix`` (matrix ``(O, I)``)."""
    out_ch, in_ch = matrix.shape
    module = conv(in_ch, out_ch, 1, bias=bias is not None, device=matrix.device, dtype=matrix.dtype)
    with torch.no_grad():
        module.weight.copy_(matrix.reshape(module.weight.shape))
        if bias is not None:
            module.bias.copy_(bias)
    return module


def _depthwise(layer: CPConv, kernel: torch.Tensor, conv: type) -> nn.Module:
    """A depthwise conv with per-channel kernels ``(R, *K)`` and the layer's geometry."""
    channels = kernel.shape[0]
    module = conv(channels, channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                  dilation=layer.dilation, groups=channels, bias=False,
                  device=kernel.device, dtype=kernel.dtype)  # fmt: skip
    with torch.no_grad():
        module.weight.copy_(kernel.unsqueeze(1))  # (R, 1, *K)
    return module


def _spatial_kernel(layer: CPConv) -> torch.Tensor:
    """Outer product of the spatial factors: one rank-1 kernel ``(R, *K)`` per rank component."""
    letters = string.ascii_lowercase[: layer.dim]
    operands = ",".join(f"r{c}" for c in letters)
    return torch.einsum(f"{operands}->r{letters}", *layer.kernel_factors)


def _check_linear(layer: CPConv) -> None:
    if not layer.is_linear:
        raise ValueError("only a plain CP convolution (no psi, no skip) maps exactly onto a block")


def cp_to_mobilenet_v2(layer: CPConv) -> nn.Sequential:
    """MobileNet-v2-style block (1x1 expand, depthwise KxK, 1x1 project) equal to a CP conv."""
    _check_linear(layer)
    conv = _conv_class(layer)
    with torch.no_grad():
        return nn.Sequential(
            _pointwise(layer.in_factor.detach(), None, conv),
            _depthwise(layer, _spatial_kernel(layer), conv),
            _pointwise(
                layer.out_factor * layer.weights,
                None if layer.bias is None else layer.bias.detach(),
                conv,
            ),
        )


def cp_to_mobilenet_v1(layer: CPConv, *, atol: float = 1e-6) -> nn.Sequential:
    """MobileNet-v1 block (depthwise KxK, 1x1) equal to a CP conv of rank C with a diagonal input factor.

    Raises:
        ValueError: when ``rank != in_channels`` or ``in_factor`` is not diagonal.
    """
    _check_linear(layer)
    conv = _conv_class(layer)
    in_factor = layer.in_factor.detach()
    diagonal = torch.diagonal(in_factor) if in_factor.shape[0] == in_factor.shape[1] else None
    if diagonal is None or not torch.allclose(in_factor, torch.diag(diagonal), atol=atol):
        raise ValueError(
            "a MobileNet-v1 block is a CP conv with rank == in_channels and a diagonal in_factor "
            f"(no first 1x1 conv); got rank {layer.rank}, in_channels {layer.in_channels}"
        )
    with torch.no_grad():
        kernel = _spatial_kernel(layer) * diagonal.view(-1, *([1] * layer.dim))  # (C, *K)
        return nn.Sequential(
            _depthwise(layer, kernel, conv),
            _pointwise(
                layer.out_factor * layer.weights,
                None if layer.bias is None else layer.bias.detach(),
                conv,
            ),
        )


def tucker_to_bottleneck(layer: TuckerConv) -> nn.Sequential:
    """ResNet bottleneck (1x1 reduce, KxK core conv, 1x1 expand) equal to a Tucker conv."""
    conv = _conv_class(layer)
    r_out, r_in = layer.rank
    core = conv(r_in, r_out, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                dilation=layer.dilation, bias=False, device=layer.core.device, dtype=layer.core.dtype)  # fmt: skip
    with torch.no_grad():
        core.weight.copy_(layer.core)
        return nn.Sequential(
            _pointwise(layer.in_factor.detach(), None, conv),
            core,
            _pointwise(
                layer.out_factor.detach(), None if layer.bias is None else layer.bias.detach(), conv
            ),
        )
