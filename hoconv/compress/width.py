"""Narrower inverted-residual blocks: a block's CP rank (its hidden width) as a compress candidate.

An inverted-residual block (expand 1x1, BN, ReLU, depthwise, BN, ReLU, project 1x1, BN) is a CP
convolution whose rank R is its hidden width (the paper, section 4; :mod:`hoconv.models.mobilenet`).
Every stage between the two 1x1 convs works per channel, so keeping k of the R hidden channels is
a rank-k block: the expand rows, norms and depthwise filters of the kept channels and the project
columns of the same channels. The CP variant's 3x1 / BN / ReLU / 1x3 depthwise part is per
channel too and narrows the same way.

Which channels: the k with the largest ``||P[:, j]|| x RMS(a_j)`` on the sample batch, where
``a_j`` is hidden channel j as it enters the project conv ``P``; that is the size of what
dropping channel j alone takes from the project conv's output, with the norm's shift and the
ReLU taken into account (``|gamma|`` of the norm alone ignores both).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from hoconv.compress.candidates import Candidate
from hoconv.compress.measure import forward_with_hooks, model_macs, param_count
from hoconv.models.mobilenet import InvertedResidual

FRACTIONS = (0.25, 0.375, 0.5, 0.625, 0.75)
ROUND = 8  # hidden widths are rounded to a multiple of this (SIMD-friendly), at least this


def hidden_width(block: nn.Module) -> int:
    """The block's hidden width R (its CP rank): the expand conv's output channels."""
    return block.block[0].out_channels


def is_width_block(module: nn.Module) -> bool:
    """An inverted-residual block with expansion > 1 (the blocks whose width is a candidate)."""
    return (
        isinstance(module, InvertedResidual) and hidden_width(module) > module.block[0].in_channels
    )


@dataclass
class BlockInfo:
    """A block to consider: its name, module, the input it saw on the sample batch, and its
    hidden channels ordered by importance (most important first)."""

    name: str
    block: nn.Module
    input: torch.Tensor
    order: torch.Tensor = field(repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the recorded input."""
        return tuple(self.input.shape)

    @property
    def hidden(self) -> int:
        """The dense hidden width R."""
        return hidden_width(self.block)

    @property
    def params(self) -> int:
        """Dense parameter count of the whole block (shortcut included)."""
        return param_count(self.block)

    @cached_property
    def macs(self) -> int:
        """Dense MACs of the block at the recorded input (``model_macs`` conventions)."""
        return block_macs(self.block, self.input_shape)

    @cached_property
    def output(self) -> torch.Tensor:
        """The dense block's output on the recorded input (eval mode)."""
        with torch.no_grad():
            return self.block.eval()(self.input)


def record_blocks(model: nn.Module, sample: torch.Tensor) -> list[BlockInfo]:
    """Run ``sample`` through ``model``; every width block with its input and channel order."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if is_width_block(module):

            def hook(mod, args, name=name):
                inputs.setdefault(name, args[0].detach().clone())

            hooks.append(module.register_forward_pre_hook(hook))
    forward_with_hooks(model, sample, hooks)
    modules = dict(model.named_modules())
    return [
        BlockInfo(n, modules[n], x, importance(modules[n], x).argsort(descending=True))
        for n, x in inputs.items()
    ]


def importance(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per hidden channel j: ``||P[:, j]|| x RMS(a_j)`` on ``x`` (see the module docstring)."""
    with torch.no_grad():
        hidden = block.eval().block[:-2](x).transpose(0, 1).flatten(1)
    project = block.block[-2].weight.detach().transpose(0, 1).flatten(1)
    return hidden.pow(2).mean(1).sqrt() * project.norm(dim=1)


def width_ranks(hidden: int, fractions=FRACTIONS) -> list[int]:
    """The distinct widths k < ``hidden`` the ``fractions`` give, rounded to a multiple of
    :data:`ROUND` (at least :data:`ROUND`)."""
    ks = {max(ROUND, ROUND * round(f * hidden / ROUND)) for f in fractions}
    return sorted(k for k in ks if k < hidden)


def keep_channels(info: BlockInfo, k: int) -> torch.Tensor:
    """The ``k`` most important hidden channels, in their original order."""
    return info.order[:k].sort().values


def narrow(block: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of the inverted-residual ``block`` keeping only the hidden channels ``keep``.

    Raises:
        ValueError: ``block`` is not an inverted-residual block, ``keep`` is empty, repeats or
            is out of range, or a stage between the 1x1 convs does not work per channel.
    """
    if not isinstance(block, InvertedResidual):
        raise ValueError(f"width: {type(block).__name__} is not an inverted-residual block")
    keep = _checked_keep(keep, hidden_width(block))
    stages = list(block.block)
    new = copy.deepcopy(block)
    new.block = nn.Sequential(
        _narrow_conv(stages[0], rows=keep),
        *(_per_channel(m, keep) for m in stages[1:-2]),
        _narrow_conv(stages[-2], cols=keep),
        copy.deepcopy(stages[-1]),
    )
    return new.train(block.training)  # fresh modules start in training mode


def _checked_keep(keep, r: int) -> torch.Tensor:
    """``keep`` as a long tensor of distinct channel indices in ``[0, r)``, else ValueError."""
    keep = torch.as_tensor(keep, dtype=torch.long).flatten()
    if (
        keep.numel() == 0
        or keep.unique().numel() != keep.numel()
        or keep.min() < 0
        or keep.max() >= r
    ):
        raise ValueError(
            f"width: kept channels must be distinct indices in [0, {r}), got {keep.tolist()}"
        )
    return keep


def narrowed_empty(block: nn.Module, k: int) -> nn.Module:
    """A block of hidden width ``k`` with ``block``'s geometry (for loading a state dict into)."""
    if not isinstance(block, InvertedResidual):
        raise ValueError(f"width: {type(block).__name__} is not an inverted-residual block")
    r = hidden_width(block)
    if not 1 <= int(k) <= r:
        raise ValueError(f"width: rank {k} outside [1, {r}] (the block's hidden width)")
    return narrow(block, torch.arange(int(k)))


def _narrow_conv(conv: nn.Module, rows=None, cols=None, depthwise: bool = False) -> nn.Module:
    """``conv`` with only output channels ``rows`` and / or input channels ``cols``."""
    weight = conv.weight.detach()
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    out_ch = weight.shape[0]
    in_ch = out_ch if depthwise else weight.shape[1] * conv.groups
    new = type(conv)(
        in_ch, out_ch, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        out_ch if depthwise else conv.groups, bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(weight)  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach() if rows is None else conv.bias.detach()[rows])
    return new


def _per_channel(module: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A per-channel stage (norm, depthwise conv, activation, a sequence of them) on ``keep``."""
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*(_per_channel(m, keep) for m in module))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        new = type(module)(len(keep), module.eps, module.momentum, module.affine,
                           module.track_running_stats)  # fmt: skip
        state = {n: v[keep] if v.dim() else v.clone() for n, v in module.state_dict().items()}
        new.load_state_dict(state)
        return new.to(module.weight if module.affine else state["running_mean"])
    if isinstance(module, nn.modules.conv._ConvNd):
        if not module.groups == module.in_channels == module.out_channels:
            raise ValueError("width: a conv between the 1x1 convs must be depthwise")
        return _narrow_conv(module, rows=keep, depthwise=True)
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        raise ValueError(f"width: cannot narrow {type(module).__name__} (not a per-channel stage)")
    return copy.deepcopy(module)


def block_macs(block: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of ``block`` on an input of ``input_shape`` (:func:`model_macs` conventions)."""
    return model_macs(block, torch.zeros(input_shape))


def block_key(info: BlockInfo, k: int) -> str:
    """What a block's latency depends on besides the input shape: width k and its geometry."""
    b = info.block
    kernels = tuple(
        m.kernel_size for m in b.block.modules() if isinstance(m, nn.modules.conv._ConvNd)
    )
    shortcut = "none" if b.shortcut is None else type(b.shortcut).__name__
    geometry = (b.block[0].in_channels, info.hidden, b.block[-2].out_channels, b.stride, kernels)
    return f"width|{k}|{geometry}|shortcut={shortcut}"


def dense_ms(info: BlockInfo, latency) -> float:
    """Measured (cached) forward ms of the dense block at its input shape."""
    return latency.forward_ms(block_key(info, info.hidden), info.block, info.input_shape)


def build(info: BlockInfo, k: int) -> nn.Module:
    """The block narrowed to its ``k`` most important hidden channels (eval mode)."""
    return narrow(info.block, keep_channels(info, k)).eval()


def output_error(info: BlockInfo, block: nn.Module) -> float:
    """Relative output error ``||y_narrow - y|| / ||y||`` on the recorded input (eval mode)."""
    with torch.no_grad():
        y = block.eval()(info.input)
    return float((y - info.output).norm() / info.output.norm().clamp_min(1e-12))


def block_candidates(
    info: BlockInfo, fractions=FRACTIONS, latency=None, useful=None
) -> list[Candidate]:
    """One ``"width"`` candidate per distinct width the ``fractions`` of R give.

    Args:
        info: the block.
        fractions: target fractions of the hidden width (see :func:`width_ranks`).
        latency: optional :class:`LatencyTable` to measure forward ms at ``info.input_shape``.
        useful: optional predicate on a candidate's params / MACs / ms; candidates it rejects
            are dropped before their error is computed.
    """
    out = []
    for k in width_ranks(info.hidden, fractions):
        block = build(info, k)
        cand = Candidate("width", k, float("nan"), param_count(block),
                         block_macs(block, info.input_shape), fraction=k / info.hidden)  # fmt: skip
        if latency is not None:
            cand.ms = latency.forward_ms(block_key(info, k), block, info.input_shape)
        if useful is not None and not useful(cand):
            continue
        cand.error = output_error(info, block)
        out.append(cand)
    return out
