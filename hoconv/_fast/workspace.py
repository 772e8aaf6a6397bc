"""Reusable buffers for the fast path's large tensors, independent of the process's allocator.

With glibc's default allocator settings, a block of a few MB freed at the end of one call is
often returned to the kernel (``munmap`` or a heap trim) and the next call's block of the
same size is page-faulted and zeroed afresh: measured on CPConv fwd+bwd, input
(4, 64, 16, 32, 32), rank 64, interleaved with a dense ``nn.Conv3d``, 4,000-8,200 minor faults
per CP call with the defaults against 0 after :func:`hoconv.app.runtime.tune_allocator`. The fast
path instead takes its large outputs and temporaries from this pool, as oneDNN keeps its own
(then 0-4,064 faults per call: the rest are the depthwise outputs oneDNN allocates).

Safety: the pool holds each buffer's storage; a buffer is handed out again only when the
pool's reference is the storage's only one (:func:`torch._C._storage_Use_Count`): an output
the caller still holds, a view of it, a tensor autograd saved for the backward, a NumPy
array on it, all keep it out of reuse. So outputs may escape: they are never aliased by a
later call while anything refers to them. Free buffers beyond ``FREE_BYTES`` are dropped
(oldest first); :func:`clear` drops every free one; ``HOCONV_WORKSPACE=0`` turns the pool off.

The cost: memory the pool holds is not returned to glibc, whose other large allocations
(e.g. a dense conv's) can then fault more (measured below and in docs/performance.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import torch

MIN_BYTES = 1 << 20  # smaller blocks stay with the allocator (heap, no page faults)
FREE_BYTES = 1 << 30  # free bytes the pool keeps at most

_LOCK = threading.Lock()
_BUFFERS: dict[tuple, list[torch.UntypedStorage]] = {}  # (nbytes, device) -> storages


def _free(storage: torch.UntypedStorage) -> bool:
    """Whether nothing but the pool refers to ``storage``."""
    return torch._C._storage_Use_Count(storage._cdata) == 1


def empty(
    shape: Sequence[int],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    stride: Sequence[int] | None = None,
) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` (contiguous, or with ``stride``), pooled if large.

    Small tensors, non-CPU devices and traced code get a plain ``torch.empty``.
    """
    shape = tuple(int(s) for s in shape)
    numel = 1
    for s in shape:
        numel *= s
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    device = torch.device(device)
    off = os.environ.get("HOCONV_WORKSPACE", "") == "0"
    if off or nbytes < MIN_BYTES or device.type != "cpu" or torch.compiler.is_compiling():
        if stride is None:
            return torch.empty(shape, dtype=dtype, device=device)
        return torch.empty_strided(shape, tuple(stride), dtype=dtype, device=device)
    if stride is None:
        stride = _contiguous_strides(shape)
    return _take(nbytes, device, dtype, shape, tuple(stride))


def _take(nbytes, device, dtype, shape, stride) -> torch.Tensor:
    """A tensor on a free pooled storage of exactly ``nbytes``, or on a new pooled one.

    The tensor is made under the lock: once it exists the storage is no longer free.
    """
    key = (nbytes, device)
    with _LOCK:
        bucket = _BUFFERS.setdefault(key, [])
        found = next((i for i, s in enumerate(bucket) if _free(s)), None)
        if found is None:
            _trim(FREE_BYTES)
            # glibc raises its mmap threshold when a mapped block is freed (our blocks never
            # are): free one first, so this block comes from the heap; measured with glibc's
            # defaults, fwd+bwd at rank 64 beside a dense conv: 1-4,064 faults per call (varies
            # run to run with glibc's state) against 4,064 without this
            probe = torch.UntypedStorage(nbytes, device=device)
            del probe
            storage = torch.UntypedStorage(nbytes, device=device)
        else:
            storage = bucket.pop(found)
        _BUFFERS.setdefault(key, []).append(storage)  # most recently used last
        return torch.empty((0,), dtype=dtype, device=device).set_(storage, 0, shape, stride)


def _trim(limit: int) -> None:
    """Drop free buffers, least recently used first, until at most ``limit`` bytes are free."""
    free = [(key, s) for key, bucket in _BUFFERS.items() for s in bucket if _free(s)]
    total = sum(key[0] for key, _ in free)
    for key, storage in free:
        if total <= limit:
            break
        _BUFFERS[key].remove(storage)
        total -= key[0]
    for key in [k for k, bucket in _BUFFERS.items() if not bucket]:
        del _BUFFERS[key]


def clear() -> None:
    """Drop every free buffer (those still in use stay with their holders)."""
    with _LOCK:
        _trim(0)


def pooled_bytes() -> tuple[int, int]:
    """``(in use, free)`` bytes of the pool's buffers."""
    with _LOCK:
        sizes = [(key[0], _free(s)) for key, bucket in _BUFFERS.items() for s in bucket]
    return sum(n for n, free in sizes if not free), sum(n for n, free in sizes if free)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


__all__ = ["clear", "empty", "pooled_bytes"]
