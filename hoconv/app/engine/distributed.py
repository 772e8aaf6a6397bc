"""DistributedDataParallel plumbing for `torchrun`: process group, samplers, gathers.

Launched with ``torchrun --nproc_per_node=N -m hoconv train ...`` the environment holds
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then starts a process group
(NCCL on GPU, gloo on CPU). Without those variables everything runs in one process and
the helpers below reduce to no-ops, so the training loop has a single code path.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 in a single-process run).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a device, checking it exists.

    Args:
        name: requested device; ``None`` or ``"auto"`` picks CUDA when available.
        local_rank: rank on the node, used to pick the GPU for ``"auto"`` / ``"cuda"``.
    """
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f"--device: unknown device {name!r}; expected auto, cpu or cuda[:N]"
        ) from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device: {name!r} requested but CUDA is not available; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def setup(device: str | None = None) -> DistInfo:
    """Start the process group when launched by torchrun; pick this process's device.

    Args:
        device: requested device (see :func:`resolve_device`).

    Returns:
        The process's :class:`DistInfo`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup(info: DistInfo) -> None:
    """Tear down the process group started by :func:`setup`."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single-process run)."""
    if info.enabled:
        dist.barrier()


def all_true(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` holds on every process (one all-reduce)."""
    if not info.enabled:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=_comm_device(info))
    dist.all_reduce(t)
    return bool(t.item() == 0.0)


def gather_objects(obj: object, info: DistInfo) -> list:
    """All-gather one picklable object per process, in rank order."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _comm_device(info: DistInfo) -> torch.device:
    return info.device if dist.get_backend() == "nccl" else torch.device("cpu")


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 (ragged sizes) whose backward sums gradients over ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        longest = max(sizes)
        padded = x.new_zeros((longest, *x.shape[1:]))  # (max_n, ...)
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss depends on every slice
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` (rows may differ per rank) from every rank, differentiably.

    Every rank then computes the loss of the whole global batch. The backward sums the
    gradient of every rank's copy of that loss into the local rows; since DDP averages
    parameter gradients over ranks, the update equals a single process's update on the
    global batch (batch-level terms such as PCC and CCC included).
    """
    if not info.enabled:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    return _GatherWithGrad.apply(x, tuple(int(s.item()) for s in sizes), info.rank)


class ShardSampler(Sampler[int]):
    """Seeded, epoch-aware sampler that splits a data set over ranks.

    For training (``shuffle=True``) indices are permuted with a generator seeded by
    ``seed + epoch`` and rank ``r`` takes positions ``r::world_size`` of the permutation,
    truncated to a common length (``drop_last``), so global batch ``b`` of an N-process run
    holds the same samples as batch ``b`` of a one-process run with the same global batch.
    For evaluation (``shuffle=False``) each rank takes ``r::world_size`` with no padding
    and no duplicate: every sample is predicted exactly once over the job.
    """

    def __init__(self, length: int, info: DistInfo, *, shuffle: bool, seed: int = 0) -> None:
        self.length, self.info, self.shuffle, self.seed = length, info, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
            usable = self.length - self.length % self.info.world_size
            order = order[:usable]
        else:
            order = list(range(self.length))
        return order[self.info.rank :: self.info.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())
