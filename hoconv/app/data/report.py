"""Loading report: what a data set loaded, filtered (per reason) and skipped as corrupt.

Data is never silently lost: every loader counts each sample it drops under a named
reason (``filtered``) and records every unreadable image / frame / annotation file with
its path (``corrupt``). With ``on_error="raise"`` the first corrupt file stops loading
with an error naming the path; with ``on_error="skip"`` it is recorded, warned about and
skipped.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

from torch.utils.data import Dataset

ON_ERROR_CHOICES = ("skip", "raise")


class CorruptDataError(RuntimeError):
    """An image, frame or annotation file could not be read (``on_error="raise"``)."""


class LoadReport:
    """Counts of loaded / filtered / corrupt items for one data set split.

    Args:
        name: data set name (for messages).
        split: split name.
        on_error: ``"skip"`` (record, warn, continue) or ``"raise"`` (stop at the first
            corrupt file).
    """

    def __init__(self, name: str, split: str, on_error: str = "skip") -> None:
        check_on_error(on_error)
        self.name = name
        self.split = split
        self.on_error = on_error
        self.loaded = 0
        self.videos = 0
        self.filtered: Counter[str] = Counter()
        self.corrupt: list[dict[str, str]] = []

    def filter(self, reason: str, count: int = 1) -> None:
        """Count ``count`` items dropped (or relabelled) for ``reason``."""
        if count:
            self.filtered[reason] += int(count)

    def add_corrupt(self, path: str, reason: str) -> None:
        """Record an unreadable file; raise :class:`CorruptDataError` if ``on_error="raise"``."""
        message = f"{self.name}/{self.split}: unreadable file {path!s} ({reason})"
        if self.on_error == "raise":
            raise CorruptDataError(message + "; pass on_error='skip' to skip it")
        self.corrupt.append({"path": str(path), "reason": reason})
        warnings.warn(message + "; skipped", RuntimeWarning, stacklevel=2)

    def summary(self) -> dict[str, Any]:
        """Plain-dict summary (JSON serialisable)."""
        return {
            "dataset": self.name,
            "split": self.split,
            "loaded": int(self.loaded),
            "videos": int(self.videos),
            "filtered": dict(sorted(self.filtered.items())),
            "num_corrupt": len(self.corrupt),
            "corrupt": list(self.corrupt),
            "on_error": self.on_error,
        }

    def format(self) -> str:
        """One human-readable paragraph."""
        lines = [
            f"{self.name} [{self.split}]: loaded {self.loaded} samples from {self.videos} videos"
        ]
        for reason, count in sorted(self.filtered.items()):
            lines.append(f"  filtered {count:>8d}  {reason}")
        lines.append(f"  corrupt  {len(self.corrupt):>8d}  ({self.on_error})")
        for item in self.corrupt[:20]:
            lines.append(f"    {item['path']}: {item['reason']}")
        if len(self.corrupt) > 20:
            lines.append(f"    ... {len(self.corrupt) - 20} more")
        return "\n".join(lines)


def check_on_error(on_error: str) -> str:
    """Validate the ``on_error`` option."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error


class ReportedDataset(Dataset):
    """A data set that keeps its :class:`LoadReport` in ``report`` (subclasses set it)."""

    report: LoadReport

    @property
    def summary(self) -> dict:
        """Loaded / filtered / corrupt counts (see :class:`LoadReport`)."""
        return self.report.summary()


class EpochSeededDataset(ReportedDataset):
    """A :class:`ReportedDataset` whose random draws depend on ``(seed, epoch, index)`` only.

    Subclasses set ``seed``; the trainer calls :meth:`set_epoch` (``epoch`` starts at 0). Data
    sets without it (e.g. :class:`hoconv.app.data.base.AffectDataset`) are reseeded instead.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the random draws a function of ``(seed, epoch, index)``."""
        self.epoch = int(epoch)
