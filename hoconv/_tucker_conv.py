"""The Tucker (bottleneck) convolution module, re-exported by :mod:`hoconv.layers`.

:class:`TuckerConv` is the paper's Tucker counterpart (eq. 4) of :class:`hoconv.layers.CPConv`:
a thin wrapper over :func:`hoconv.functional.tucker_conv`. Initialisation as in
:mod:`hoconv.layers`: every stage preserves the variance of its input (``in_factor`` ~
N(0, 1/C), ``core`` ~ N(0, 1/(R_in prod K))) and ``out_factor`` is scaled so the dense kernel
has the variance ``kernel_var`` (default ``1 / (3 fan_in)``); the bias follows ``nn.ConvNd``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from hoconv import functional as HF
from hoconv import rank as R
from hoconv._checks import PaddingArg, prod
from hoconv._conv_base import FactorizedConv, dense_source
from hoconv.decompose import tucker_decompose_kernel


class TuckerConv(FactorizedConv):
    """Tucker (bottleneck) convolution: 1x1 to R_in, a dense ``R_in -> R_out`` conv with the core, 1x1 to T.

    Args:
        in_channels: input channels C.
        out_channels: output channels T.
        kernel_size: int or one size per axis.
        dim: number of spatial axes (any >= 1).
        rank: ``(R_out, R_in)``, an int for both, a float (fraction of the dense parameter
            count) or ``"same"``; clipped to the channel counts.
        stride: int or per axis.
        padding: int, per axis, ``"same"`` or ``"valid"``.
        dilation: int or per axis.
        bias: add a learned bias.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        dim: int,
        rank: R.RankArg | tuple[int, int] = "same",
        stride: int | Sequence[int] = 1,
        padding: PaddingArg = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, dim, stride, padding, dilation)
        r_out, r_in = R.tucker_ranks(rank, in_channels, out_channels, self.kernel_size)
        kw = {"device": device, "dtype": dtype}
        self.core = nn.Parameter(torch.empty(r_out, r_in, *self.kernel_size, **kw))
        self.in_factor = nn.Parameter(torch.empty(r_in, in_channels, **kw))
        self.out_factor = nn.Parameter(torch.empty(out_channels, r_out, **kw))
        self.bias = nn.Parameter(torch.empty(out_channels, **kw)) if bias else None
        self.reset_parameters()

    @property
    def rank(self) -> tuple[int, int]:
        return (self.core.shape[0], self.core.shape[1])

    def reset_parameters(self, kernel_var: float | None = None) -> None:
        """Variance-preserving stages; the dense kernel gets ``kernel_var`` (default ``1/(3 fan_in)``)."""
        kernel_var = 1.0 / (3 * self.fan_in) if kernel_var is None else kernel_var
        r_out, r_in = self.rank
        with torch.no_grad():
            nn.init.normal_(self.in_factor, 0.0, 1.0 / math.sqrt(self.in_channels))
            nn.init.normal_(self.core, 0.0, 1.0 / math.sqrt(r_in * prod(self.kernel_size)))
            nn.init.normal_(self.out_factor, 0.0, math.sqrt(kernel_var * self.fan_in / r_out))
        self._bias_init(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return HF.tucker_conv(
            x,
            self.core,
            self.in_factor,
            self.out_factor,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
        )

    def to_dense(self) -> torch.Tensor:
        """The equivalent dense kernel ``(T, C, *K)``."""
        return HF.tucker_to_dense(self.core, self.in_factor, self.out_factor)

    def macs(self, input_shape: Sequence[int]) -> int:
        """Multiply-accumulates of a forward pass on ``input_shape``, stage by stage."""
        n, r_out, r_in = input_shape[0], *self.rank
        out_size = prod(self._output_shape(input_shape))
        total = n * r_in * self.in_channels * prod(input_shape[2:])
        total += n * r_out * r_in * prod(self.kernel_size) * out_size
        return total + n * self.out_channels * r_out * out_size

    @classmethod
    def from_dense(
        cls,
        conv_or_kernel: nn.Module | torch.Tensor,
        rank: R.RankArg | tuple[int, int],
        *,
        stride: int | Sequence[int] | None = None,
        padding: PaddingArg | None = None,
        dilation: int | Sequence[int] | None = None,
        bias: torch.Tensor | None = None,
        seed: int = 0,
        n_iter_max: int = 100,
        tol: float = 1e-8,
    ) -> TuckerConv:
        """Decompose a trained ``nn.ConvNd`` (or a kernel ``(T, C, *K)``) with a partial Tucker on channels.

        The relative reconstruction error is stored in ``layer.decomposition_error``.
        """
        kernel, geometry = dense_source(conv_or_kernel, stride, padding, dilation, bias)
        t, c, *ksize = kernel.shape
        ranks = R.tucker_ranks(rank, c, t, ksize)
        core, in_f, out_f, error = tucker_decompose_kernel(
            kernel, ranks, seed=seed, n_iter_max=n_iter_max, tol=tol
        )
        tensors = {"core": core, "in_factor": in_f, "out_factor": out_f}
        return cls._from_decomposition(kernel, geometry, ranks, tensors, error)
