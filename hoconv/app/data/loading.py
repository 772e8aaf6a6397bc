"""Steps every loader repeats: option checks, numbered frames, checked reads, splits, records.

Each function here is one rule the loaders share, so that a message, a count or a sort order
is defined once: the affect loaders (``aff_wild2``, ``sewa``, ``afew_va``, ``affectnet``) and
the classification ones (``cifar10``, ``jester``) call these instead of repeating them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

from hoconv.app.data.base import (
    MODES,
    SPLITS,
    VERIFY_CHOICES,
    VideoRecord,
    check_choice,
    image_problem,
)
from hoconv.app.data.report import LoadReport

T = TypeVar("T")

_MODE_WORDS = {"static": "still images", "video": "clips"}
FRAME_KEY = re.compile(r"^([0-9]+)\Z")  # a frame number written as ASCII digits


def check_options(split: str, mode: str | None = None, verify: str | None = None) -> None:
    """Raise ValueError unless ``split`` (and ``mode`` / ``verify`` when given) are known."""
    check_choice("split", split, SPLITS)
    if mode is not None:
        check_choice("mode", mode, MODES)
    if verify is not None:
        check_choice("verify", verify, VERIFY_CHOICES)


def require_mode(dataset: str, mode: str, only: str) -> None:
    """Raise ValueError unless ``mode`` is ``only``, the one mode ``dataset`` has."""
    if mode != only:
        raise ValueError(
            f"{dataset} has {_MODE_WORDS[only]} only: mode must be {only!r}, got {mode!r}"
        )


def numbered(names: Iterable[str], pattern: re.Pattern) -> list[tuple[int, str]]:
    """``(number, name)`` of the names ``pattern`` matches, sorted by number.

    The number is the pattern's first group read as an integer, so ``"2.jpg"`` comes before
    ``"10.jpg"`` and any zero padding is accepted; names with the same number keep their input
    order (pass sorted names for a fixed order); names that do not match are left out.
    """
    found = [(int(m.group(1)), name) for name in names if (m := pattern.match(str(name)))]
    return sorted(found, key=lambda item: item[0])


def read_or_report(
    read: Callable[[str], T],
    path: str,
    report: LoadReport,
    what: str = "annotation",
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
) -> T | None:
    """``read(path)``, or None after recording ``path`` as corrupt when it raises ``errors``.

    The corrupt entry reads ``unreadable <what> (<error>)``; with ``on_error="raise"`` the
    report raises :class:`hoconv.app.data.report.CorruptDataError` naming the path instead.
    """
    try:
        return read(path)
    except errors as err:
        report.add_corrupt(path, f"unreadable {what} ({err})")
        return None


def checked_image(path: str, verify: str, report: LoadReport) -> str | None:
    """``path`` when the image passes the ``verify`` check, else None (recorded as corrupt)."""
    problem = image_problem(path, verify)
    if problem:
        report.add_corrupt(path, problem)
        return None
    return path


def split_mask(held: np.ndarray, split: str) -> np.ndarray:
    """Boolean mask of ``split``'s items given the held-out (validation) mask ``held``.

    ``"val"`` is the held-out items and ``"train"`` the rest (``held`` itself is not copied).
    """
    return held if split == "val" else ~held


def finish_report(report: LoadReport, loaded: int, videos: int, verbose: bool) -> None:
    """Set the report's final ``loaded`` / ``videos`` counts and print it when ``verbose``."""
    report.loaded, report.videos = int(loaded), int(videos)
    if verbose:
        print(report.format(), file=sys.stderr)


def va_record(
    name: str,
    subject: str,
    frames: Iterable[int],
    valence: Iterable[float],
    arousal: Iterable[float],
    paths: list[str | None],
    labelled: np.ndarray | None = None,
    expression: Iterable[int] | None = None,
    **extra: np.ndarray | None,
) -> VideoRecord:
    """A :class:`VideoRecord` with the loaders' dtypes and defaults.

    Args:
        name, subject: video and subject ids.
        frames, valence, arousal: per-frame numbers and targets (cast to int64 / float32).
        paths: image path per frame (None = no image).
        labelled: bool (F,); default every frame labelled.
        expression: class per frame; default -1 (missing) everywhere.
        **extra: ``boxes`` / ``landmarks`` arrays, passed through.
    """
    frames = np.asarray(frames, dtype=np.int64)
    n = len(frames)
    return VideoRecord(
        name=name,
        subject=subject,
        frames=frames,
        valence=np.asarray(valence, dtype=np.float32),
        arousal=np.asarray(arousal, dtype=np.float32),
        expression=(
            np.full(n, -1, dtype=np.int64)
            if expression is None
            else np.asarray(expression, dtype=np.int64)
        ),
        labelled=np.ones(n, dtype=bool) if labelled is None else labelled,
        paths=paths,
        **extra,
    )
