"""Forward latency of a layer at its real input shape, measured here and cached on disk."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


def machine_key(dtype: torch.dtype, layout: str = "contiguous") -> str:
    """What a measurement depends on besides the layer: torch, threads, CPU, dtype, layout."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"torch={torch.__version__}|threads={torch.get_num_threads()}|cpu={cpu}|{dtype}|{layout}"


def default_path() -> Path:
    """``$HOCONV_CACHE/compress-latency.json`` (default ``~/.cache/hoconv``)."""
    root = os.environ.get("HOCONV_CACHE") or os.path.expanduser("~/.cache/hoconv")
    return Path(root) / "compress-latency.json"


def median_ms(
    fn: Callable[[], object], repeats: int = 5, warmup: int = 1, statistic: str = "median"
) -> float:
    """Median (or ``statistic="min"``) wall time of ``fn()`` in ms over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times) if statistic == "min" else statistics.median(times)


class LatencyTable:
    """A per-shape table of forward ms, persisted as JSON; ``measured`` counts fresh timings.

    A layer's entry is the fastest of ``repeats`` runs: on a shared machine the median of a
    few runs swings with the load, the minimum is what the layer itself costs. The whole model
    is timed separately, interleaved with the original (``measure.interleaved_ms``), and the
    solver re-solves while that measurement misses the budget.
    """

    def __init__(self, path: str | os.PathLike | None = None, repeats: int = 5) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.repeats = repeats
        self.measured = 0
        try:
            self.entries: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def forward_ms(self, key: str, layer: nn.Module, input_shape: tuple[int, ...]) -> float:
        """Cached forward ms of ``layer`` on a random input of ``input_shape`` (no grad)."""
        full = f"{machine_key(torch.get_default_dtype())}|min|{key}|{tuple(input_shape)}"
        if full not in self.entries:
            x = torch.randn(*input_shape)
            layer = layer.eval()
            with torch.no_grad():
                self.entries[full] = median_ms(lambda: layer(x), self.repeats, statistic="min")
            self.measured += 1
            self.save()
        return self.entries[full]

    def save(self) -> None:
        """Write the table (temp file + rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
