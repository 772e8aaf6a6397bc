"""Tensor regression layer (TRL) and the output heads shared by the model zoo.

The TRL (Kossaifi et al., "Tensor regression networks", JMLR 2020) maps an activation tensor
``X`` of shape ``(B, I_1, ..., I_N)`` to ``Y = <X, W> + b`` of shape ``(B, K)`` with a low-rank
weight ``W`` of shape ``(I_1, ..., I_N, K)``:

* CP: ``W = sum_r weights[r] U_1[:, r] o ... o U_N[:, r] o U_out[:, r]``;
* Tucker: ``W = G x_1 U_1 ... x_N U_N x_{N+1} U_out``.

The forward contracts ``X`` with one factor at a time and never builds ``W``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_FACTORIZATIONS = ("cp", "tucker")


def trl_cp(
    x: torch.Tensor,
    weights: torch.Tensor,
    factors: Sequence[torch.Tensor],
    out_factor: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """CP tensor regression ``<x, W> + bias`` without building ``W``.

    Args:
        x: activations (B, I_1, ..., I_N).
        weights: (R,) scale of each rank-one component.
        factors: N matrices, the k-th of shape (I_k, R).
        out_factor: (K, R).
        bias: (K,) or None.

    Returns:
        (B, K).
    """
    z = torch.einsum("bi...,ir->br...", x, factors[0])  # (B, R, I_2, ..., I_N)
    for factor in factors[1:]:
        z = torch.einsum("bri...,ir->br...", z, factor)  # (B, R, I_{k+1}, ..., I_N)
    out = (z * weights) @ out_factor.t()  # (B, K)
    return out if bias is None else out + bias


def trl_tucker(
    x: torch.Tensor,
    core: torch.Tensor,
    factors: Sequence[torch.Tensor],
    out_factor: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Tucker tensor regression ``<x, W> + bias`` without building ``W``.

    Args:
        x: activations (B, I_1, ..., I_N).
        core: (R_1, ..., R_N, R_out).
        factors: N matrices, the k-th of shape (I_k, R_k).
        out_factor: (K, R_out).
        bias: (K,) or None.

    Returns:
        (B, K).
    """
    z = x
    for mode, factor in enumerate(factors, start=1):
        z = torch.tensordot(z, factor, dims=([mode], [0]))  # (B, ..., I_{k+1}, ..., R_k) last
        z = torch.movedim(z, -1, mode)  # (B, R_1, ..., R_k, I_{k+1}, ..., I_N)
    z = z.flatten(1) @ core.reshape(-1, core.shape[-1])  # (B, R_out)
    out = z @ out_factor.t()  # (B, K)
    return out if bias is None else out + bias


def _check_positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    out = tuple(values)
    if not out or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {values!r}")
    return out


class TRL(nn.Module):
    """Tensor regression layer with a CP or Tucker low-rank weight.

    Initialisation: the factors are Gaussian, scaled so that every entry of the implied full
    weight has variance ``1 / (3 * fan_in)`` (that of ``nn.Linear``'s default init), with
    ``fan_in = prod(input_shape)``; the intermediate contractions stay O(1). Bias starts at 0.

    Args:
        input_shape: (I_1, ..., I_N), the activation shape without the batch axis.
        num_outputs: K.
        rank: CP rank (int), or Tucker ranks: an int used for every mode (clipped to each
            mode's size) or a tuple (R_1, ..., R_N, R_out).
        factorization: "cp" or "tucker".
        bias: add a learned bias.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        rank: int | Sequence[int] = 16,
        factorization: str = "cp",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if factorization not in _FACTORIZATIONS:
            raise ValueError(
                f"factorization must be one of {_FACTORIZATIONS}, got {factorization!r}"
            )
        self.input_shape = _check_positive_ints("input_shape", input_shape)
        self.num_outputs = _check_positive_ints("num_outputs", (num_outputs,))[0]
        self.factorization = factorization
        self.rank = self._resolve_rank(rank)
        kw = {"device": device, "dtype": dtype}
        in_ranks = self.rank if factorization == "tucker" else (self.rank,) * len(self.input_shape)
        self.factors = nn.ParameterList(
            [
                nn.Parameter(torch.empty(size, r, **kw))
                for size, r in zip(self.input_shape, in_ranks)
            ]
        )
        out_rank = self.rank[-1] if factorization == "tucker" else self.rank
        self.out_factor = nn.Parameter(torch.empty(self.num_outputs, out_rank, **kw))
        if factorization == "cp":
            self.weights = nn.Parameter(torch.empty(self.rank, **kw))
        else:
            self.core = nn.Parameter(torch.empty(*self.rank, **kw))
        self.bias = nn.Parameter(torch.empty(self.num_outputs, **kw)) if bias else None
        self.reset_parameters()

    def _resolve_rank(self, rank: int | Sequence[int]) -> int | tuple[int, ...]:
        if self.factorization == "cp":
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                raise ValueError(f"rank of a CP TRL must be a positive int, got {rank!r}")
            return rank
        sizes = (*self.input_shape, self.num_outputs)
        if isinstance(rank, int) and not isinstance(rank, bool):
            rank = (rank,) * len(sizes)
        ranks = _check_positive_ints("rank", rank)
        if len(ranks) != len(sizes):
            raise ValueError(
                f"rank of a Tucker TRL needs {len(sizes)} entries (input modes + output), got {ranks}"
            )
        return tuple(min(r, s) for r, s in zip(ranks, sizes))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Gaussian factors giving full-weight entries of variance 1 / (3 * fan_in)."""
        for factor in self.factors:
            factor.normal_(0.0, factor.shape[0] ** -0.5)  # unit-norm columns on average
        self.out_factor.normal_(0.0, 1.0)
        if self.factorization == "cp":
            self.weights.fill_((3.0 * self.rank) ** -0.5)
        else:
            n_terms = 1
            for r in self.rank:
                n_terms *= r
            self.core.normal_(0.0, (3.0 * n_terms) ** -0.5)
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Regress ``x`` (B, *input_shape) to (B, num_outputs)."""
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"TRL input must have shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        if self.factorization == "cp":
            return trl_cp(x, self.weights, list(self.factors), self.out_factor, self.bias)
        return trl_tucker(x, self.core, list(self.factors), self.out_factor, self.bias)

    def full_weight(self) -> torch.Tensor:
        """The implied dense weight, (num_outputs, *input_shape) (for tests and inspection)."""
        if self.factorization == "cp":
            w = self.out_factor * self.weights  # (K, R)
            for factor in self.factors:
                w = w.unsqueeze(-2) * factor  # (K, I_1, ..., I_k, R)
            return w.sum(-1)  # (K, I_1, ..., I_N)
        w = self.core
        for mode, factor in enumerate(self.factors):
            w = torch.movedim(torch.tensordot(w, factor, dims=([mode], [1])), -1, mode)
        w = torch.tensordot(w, self.out_factor, dims=([w.dim() - 1], [1]))  # (I_1.., K)
        return torch.movedim(w, -1, 0)  # (K, I_1, ..., I_N)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"factorization={self.factorization!r}, rank={self.rank}"
        )


TEMPORAL_OUTPUTS = ("frames", "clip")
HEAD_KINDS = ("fc", "trl")
_POOLS = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


class OutputHead(nn.Module):
    """Pool the backbone features and regress them (FC or TRL), per image, frame or clip.

    Input features are ``(N, C, *space)`` with ``spatial_dims`` spatial axes (images), or
    ``(N, C, t, *space)`` with one extra leading axis = time (clips). For clips:

    * ``temporal_output="frames"``: pool over space only, regress each of the ``t`` frames, then
      linearly interpolate time (``align_corners=False``) back to ``out_frames`` (the input clip's
      T) -> ``(N, T, num_outputs)``. A 2-D model whose convolutions were transduced to 3-D
      therefore gives per-frame outputs with this head unchanged.
    * ``temporal_output="clip"``: pool time to 1 as well -> ``(N, num_outputs)``.

    Space is adaptively average-pooled to ``pool_size`` per spatial axis (1 for the usual
    global-pool + FC; the TRL keeps ``pool_size`` > 1 to preserve spatial structure).

    Args:
        in_channels: C.
        num_outputs: number of outputs (2 = valence/arousal, 10 = V/A + 8 expressions, classes).
        spatial_dims: number of spatial axes of the features (2 for H, W).
        kind: "fc" (flatten + [hidden FCs with ELU] + FC) or "trl" (one TRL on (C, *pool)).
        temporal_output: "frames" or "clip" (used only when the features have a time axis).
        pool_size: spatial size after adaptive pooling.
        hidden: widths of hidden FC layers ("fc" only; ELU between them).
        trl_rank: rank of the TRL ("trl" only).
        trl_factorization: "cp" or "tucker" ("trl" only).
        bound_va: pass the first two outputs (valence, arousal) through ``tanh`` so they lie in
            [-1, 1] like their targets; the others (expression logits) stay linear. Off by
            default so that models built before it existed (checkpoints without the key)
            behave as they did; ``hoconv train`` turns it on for new affect models.
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        *,
        spatial_dims: int = 2,
        kind: str = "fc",
        temporal_output: str = "frames",
        pool_size: int = 1,
        hidden: Sequence[int] = (),
        trl_rank: int | Sequence[int] = 16,
        trl_factorization: str = "cp",
        bound_va: bool = False,
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head must be one of {HEAD_KINDS}, got {kind!r}")
        if temporal_output not in TEMPORAL_OUTPUTS:
            raise ValueError(
                f"temporal_output must be one of {TEMPORAL_OUTPUTS}, got {temporal_output!r}"
            )
        if spatial_dims not in _POOLS:
            raise ValueError(f"spatial_dims must be one of {tuple(_POOLS)}, got {spatial_dims!r}")
        if not isinstance(num_outputs, int) or isinstance(num_outputs, bool) or num_outputs < 1:
            raise ValueError(f"num_outputs must be a positive int, got {num_outputs!r}")
        self.spatial_dims = spatial_dims
        self.kind = kind
        self.temporal_output = temporal_output
        self.pool_size = pool_size
        if bound_va and num_outputs < 2:
            raise ValueError(f"bound_va needs >= 2 outputs (valence, arousal), got {num_outputs}")
        self.bound_va = bool(bound_va)
        if kind == "trl":
            shape = (in_channels, *([pool_size] * spatial_dims))
            self.regressor: nn.Module = TRL(shape, num_outputs, trl_rank, trl_factorization)
        else:
            layers: list[nn.Module] = [nn.Flatten(1)]
            width = in_channels * pool_size**spatial_dims
            for h in hidden:
                layers += [nn.Linear(width, h), nn.ELU(inplace=True)]
                width = h
            layers.append(nn.Linear(width, num_outputs))
            self.regressor = nn.Sequential(*layers)

    def _pool_regress(self, x: torch.Tensor) -> torch.Tensor:
        size = [self.pool_size] * self.spatial_dims
        y = self.regressor(_POOLS[self.spatial_dims](x, size))  # (N, K)
        if not self.bound_va:
            return y
        return torch.cat([torch.tanh(y[:, :2]), y[:, 2:]], dim=1)  # V/A in [-1, 1]

    def forward(self, x: torch.Tensor, out_frames: int | None = None) -> torch.Tensor:
        """Regress features ``x``; ``out_frames`` is the input clip's T (clips only)."""
        extra = x.dim() - 2 - self.spatial_dims
        if extra == 0:
            return self._pool_regress(x)  # (N, K)
        if extra != 1:
            raise ValueError(
                f"head expects features (N, C, [T,] {self.spatial_dims} spatial axes), got {tuple(x.shape)}"
            )
        n, c, t = x.shape[:3]
        if self.temporal_output == "clip":
            x = x.mean(dim=2)  # (N, C, *space)
            return self._pool_regress(x)  # (N, K)
        frames = x.transpose(1, 2).reshape(n * t, c, *x.shape[3:])  # (N*t, C, *space)
        y = self._pool_regress(frames).reshape(n, t, -1)  # (N, t, K)
        target = t if out_frames is None else out_frames
        if target != t:
            y = F.interpolate(y.transpose(1, 2), size=target, mode="linear", align_corners=False)
            y = y.transpose(1, 2)  # (N, T, K)
        return y
