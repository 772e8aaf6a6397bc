"""BatchNorm with batch statistics all-reduced over the processes, for DDP on CPU (gloo).

``torch.nn.SyncBatchNorm`` runs on CUDA only. Under DDP on CPU each process would
normalise with the statistics of its own share of the global batch, so a BatchNorm model
trained with N processes would differ from one process with the same global batch.
:class:`AllReduceBatchNorm` computes the mean and the (biased) variance of the *global*
batch with two differentiable all-reduces (sums and counts, then squared deviations:
the two-pass formula a single process uses), normalises with them and updates the
running statistics exactly as ``nn.BatchNorm`` would on the whole batch. In eval mode,
or without a process group, it is plain BatchNorm.

The backward of an all-reduce sum is an all-reduce sum of the gradients: with the
trainer's gathered loss (every rank computes the loss of the global batch) and DDP's
gradient averaging, the update equals that of one process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """``sum over ranks of x``; backward: the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in for ``nn.BatchNorm{1,2,3}d`` whose training statistics span every process."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"AllReduceBatchNorm expects (N, C, ...) input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and _distributed()):
            return super().forward(x)
        axes = [0, *range(2, x.dim())]  # every axis but the channels
        shape = (1, -1) + (1,) * (x.dim() - 2)  # (1, C, 1, ...) for broadcasting
        count = x.new_tensor([x.numel() // x.shape[1]], dtype=x.dtype)
        first = _AllReduceSum.apply(torch.cat([x.sum(axes), count]))  # (C + 1,)
        n = first[-1]
        mean = first[:-1] / n  # (C,)
        centred = x - mean.reshape(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(axes)) / n  # (C,) biased, as BN
        self._update_running_stats(mean.detach(), var.detach(), float(n))
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: float) -> None:
        """The update ``F.batch_norm`` makes in training mode, from the global statistics."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        unbiased = var * (n / max(n - 1.0, 1.0))
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm{1,2,3}d`` under ``module`` by :class:`AllReduceBatchNorm`.

    Parameters and buffers are shared with the originals (same names, so state dicts are
    unchanged). Returns ``module`` (or the replacement when it is itself a BatchNorm).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (AllReduceBatchNorm, nn.SyncBatchNorm)
    ):
        new = AllReduceBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        new.training = module.training
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new
    for name, child in module.named_children():
        replaced = convert_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


__all__ = ["AllReduceBatchNorm", "convert_batchnorm"]
