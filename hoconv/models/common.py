"""Pieces shared by every model of the zoo: argument checks, the model base class, init."""

from __future__ import annotations

import torch
from torch import nn

from hoconv.heads import OutputHead

_AXES = {2: "H, W", 3: "T, H, W"}


def positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive int, else raise a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def resolve_outputs(num_outputs: int | None, num_classes: int | None, default: int) -> int:
    """Merge the ``num_outputs`` / ``num_classes`` aliases (classifiers say num_classes)."""
    if num_outputs is not None and num_classes is not None and num_outputs != num_classes:
        raise ValueError(
            f"num_outputs={num_outputs} and num_classes={num_classes} disagree; give only one"
        )
    value = num_outputs if num_outputs is not None else num_classes
    return positive_int("num_outputs", default if value is None else value)


def check_input(x: torch.Tensor, in_channels: int, data_dim: int, min_size: int = 1) -> None:
    """Raise a clear error unless ``x`` is (N, in_channels, *data_dim axes of >= min_size)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    axes = _AXES.get(data_dim, f"{data_dim} axes")
    if x.dim() != data_dim + 2:
        raise ValueError(
            f"input must be {data_dim + 2}-D (N, {in_channels}, {axes}), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"input must have {in_channels} channels (N, {in_channels}, {axes}), "
            f"got shape {tuple(x.shape)}"
        )
    if any(size < min_size for size in x.shape[2:]):
        raise ValueError(
            f"input ({axes}) sizes must each be >= {min_size}, got shape {tuple(x.shape)}"
        )


def init_dense(module: nn.Module) -> None:
    """torchvision's ResNet init: Kaiming-normal (fan_out, ReLU) dense convs, BN weight 1 bias 0.

    Factorized layers (CPConv, TuckerConv) keep their own ``reset_parameters`` init; Linear
    layers keep PyTorch's default.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ZooModel(nn.Module):
    """Backbone ``features`` followed by an ``OutputHead``, with input validation.

    Attributes:
        in_channels: channels the input must have.
        data_dim: number of data axes of the input (2: images (N, C, H, W); 3: clips
            (N, C, T, H, W)). A transduction that adds axes must increase it.
        min_size: smallest size accepted on every data axis.
    """

    def __init__(
        self,
        features: nn.Module,
        head: OutputHead,
        in_channels: int,
        data_dim: int,
        min_size: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.data_dim = data_dim
        self.min_size = min_size
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, K); (N, C, T, H, W) -> (N, T, K) or (N, K) (clip output)."""
        check_input(x, self.in_channels, self.data_dim, self.min_size)
        out_frames = x.shape[2] if x.dim() - 2 > self.head.spatial_dims else None
        return self.head(self.features(x), out_frames)

    def transduce_hook(self, spec, convert):  # noqa: ANN001 (TransductionSpec, callable)
        """``hoconv.transduce`` support for image models: one new leading (time) axis.

        The backbone is converted by the generic rules; the head is kept as is (it already
        treats a leading extra axis as time and gives per-frame outputs, or clip outputs with
        ``temporal_output="clip"``); the model then accepts clips (``data_dim`` + 1).
        """
        if (
            spec.dims != 1
            or tuple(spec.positions) != (0,)
            or self.data_dim != self.head.spatial_dims
        ):
            raise ValueError(
                "zoo models transduce an image model by one new leading (time) axis only "
                f"(dims=1, positions=(0,)); got dims={spec.dims}, positions={spec.positions} "
                f"for a model with data_dim={self.data_dim}"
            )
        self.features = convert(self.features)
        self.data_dim += 1
        return self


def make_head(
    channels: int,
    num_outputs: int,
    head: str,
    temporal_output: str,
    *,
    pool_size: int | None = None,
    hidden: tuple[int, ...] = (),
    trl_size: int = 4,
    trl_rank: int | tuple[int, ...] = 16,
    trl_factorization: str = "cp",
    bound_va: bool = False,
) -> OutputHead:
    """Build the ``OutputHead`` for a backbone with ``channels`` output channels.

    ``head="fc"`` pools to ``pool_size`` (default 1: global average pool); ``head="trl"`` pools
    space to ``trl_size`` and regresses with a TRL over (C, trl_size, trl_size).
    ``bound_va``: tanh on the first two outputs (valence, arousal); see ``OutputHead``.
    """
    if head == "trl":
        size = positive_int("trl_size", trl_size)
    else:
        size = 1 if pool_size is None else pool_size
    return OutputHead(
        channels,
        num_outputs,
        spatial_dims=2,
        kind=head,
        temporal_output=temporal_output,
        pool_size=size,
        hidden=hidden if head == "fc" else (),
        trl_rank=trl_rank,
        trl_factorization=trl_factorization,
        bound_va=bound_va,
    )


class _ChannelsLastPool:
    """Max pooling of CPU inputs by a faster route, with torch's values, element for element.

    Windows that tile the input (kernel = stride, no padding), without gradients: ``tile_max``
    (0.18x of torch's time on the 3-D ConvNet's 2x2x2 pools, ``benchmarks/pooling.py``).
    Otherwise channels-first inputs go through a channels-last copy, same layout back: PyTorch's
    CPU max pooling is several times faster on channels-last tensors (measured, 2 threads,
    eval: (8, 64, 56, 56) 3x3/2 7.6 -> 2.0 ms with both copies; (2, 64, 8, 56, 56) (1, 3, 3)/
    (1, 2, 2) 14.9 -> 8.8 ms). Traced and exported graphs (TorchScript, ONNX) keep the plain
    pool: they carry no memory format.
    """

    layout: torch.memory_format
    batched_dim: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reroute = (
            not self.return_indices
            and not torch.jit.is_tracing()
            and not torch.onnx.is_in_onnx_export()
            and x.device.type == "cpu"
            and x.dim() == self.batched_dim
        )
        if reroute and self._tiles() and not (torch.is_grad_enabled() and x.requires_grad):
            return tile_max(x, _ntuple(self.kernel_size, self.batched_dim - 2))
        if reroute and not x.is_contiguous(memory_format=self.layout):
            return super().forward(x.contiguous(memory_format=self.layout)).contiguous()
        return super().forward(x)

    def _tiles(self) -> bool:
        """Windows that tile the input: kernel == stride, no padding, no dilation, floor."""
        n = self.batched_dim - 2
        kernel = _ntuple(self.kernel_size, n)
        stride = _ntuple(self.stride if self.stride else self.kernel_size, n)
        return (
            kernel == stride
            and set(_ntuple(self.padding, n)) == {0}
            and set(_ntuple(self.dilation, n)) == {1}
            and not self.ceil_mode
        )


def _ntuple(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def tile_max(x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """Max pooling over windows that tile the trailing axes (stride = kernel, floor), no indices.

    One elementwise maximum of strided slices per window offset and axis, last axis first:
    each pass reads what the previous one left (1 + 1/k + ... of the input in all), with no
    layout copy and no index tensor. Inference only: where a window holds ties, autograd
    through ``torch.maximum`` would split the gradient, unlike max pooling.
    """
    for axis, k in zip(range(-1, -len(kernel) - 1, -1), reversed(kernel)):
        if k == 1:
            continue
        size = x.shape[axis] // k * k
        tiles = x.narrow(axis, 0, size).unflatten(axis, (size // k, k))  # (..., size/k, k, ...)
        x = tiles.select(axis, 0)
        for offset in range(1, k):
            x = torch.maximum(x, tiles.select(axis, offset))
    return x


class MaxPool2d(_ChannelsLastPool, nn.MaxPool2d):
    """``nn.MaxPool2d`` with the faster CPU routes of :class:`_ChannelsLastPool` (exact)."""

    layout, batched_dim = torch.channels_last, 4


class MaxPool3d(_ChannelsLastPool, nn.MaxPool3d):
    """``nn.MaxPool3d`` with the faster CPU routes of :class:`_ChannelsLastPool` (exact)."""

    layout, batched_dim = torch.channels_last_3d, 5
