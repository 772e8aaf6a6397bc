"""``sewa``: the SEWA subset of AVEC 2017-2019 (static or video mode).

Format::

    <root>/labels/<Train|Devel|Test>_<DE|HU|CN>_<NN>.csv
    <root>/frames/<Train|Devel|Test>_<DE|HU|CN>_<NN>/<n>.jpg   (or .png)

Label files are ``;``-separated with the header ``name;timestamp;arousal;valence;liking``,
one row per 0.1 s (``timestamp`` in seconds); columns are found by header name. The video
frames must be extracted beforehand (e.g. ``ffmpeg -i Train_DE_01.avi -start_number 0
frames/Train_DE_01/%05d.jpg``): ``n`` is the frame number (any zero padding), and frame n
is shown at time ``(n - first_frame) / fps``.

Alignment: frame n gets the label at time ``(n - first_frame) / fps + delay`` (the
annotators react ``delay`` seconds after the face; AVEC baselines use 2-4 s), linearly
interpolated between label rows. Frames whose shifted time falls outside the annotated
range are unlabelled ("outside annotated time range", counted; in video mode they stay in
the sequence with ``mask`` False). Values are used as given (about [-1, 1]).

Reported as corrupt (with path): an unreadable / malformed CSV, a label file without its
frames folder, an image that cannot be decoded.

Splits: the official, subject-independent AVEC partition: ``train`` = Train, ``val`` =
Devel, ``test`` = Test (test labels were not published with AVEC; the split is empty with
an error when no file exists). ``cultures`` restricts to some of DE / HU / CN.
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np

from hoconv.app.data import register
from hoconv.app.data.base import AffectDataset, VideoRecord, require_root
from hoconv.app.data.loading import (
    check_options,
    checked_image,
    numbered,
    read_or_report,
    va_record,
)
from hoconv.app.data.report import LoadReport

_PREFIX = {"train": "Train", "val": "Devel", "test": "Test"}
_NAME = re.compile(r"^(Train|Devel|Test)_([A-Z]{2})_(\d+)\.csv$")
_FRAME = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


def read_labels(path: str) -> np.ndarray:
    """``(R, 3)`` float64 rows ``(timestamp, valence, arousal)`` sorted by time."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    need = ("timestamp", "valence", "arousal")
    if any(c not in header for c in need):
        raise ValueError(f"header {header}, expected name;timestamp;arousal;valence;liking")
    cols = [header.index(c) for c in need]
    table = np.array([[float(r[c]) for c in cols] for r in rows[1:] if r], dtype=np.float64)
    if table.size == 0 or not np.isfinite(table).all():
        raise ValueError("no rows or non-finite values")
    return table[np.argsort(table[:, 0], kind="stable")]


def align(
    labels: np.ndarray, frame_numbers: np.ndarray, fps: float, delay: float, first_frame: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame ``(valence, arousal, labelled)`` at time ``(n - first_frame) / fps + delay``."""
    t = (frame_numbers - first_frame) / fps + delay
    inside = (t >= labels[0, 0] - 1e-9) & (t <= labels[-1, 0] + 1e-9)
    val = np.interp(t, labels[:, 0], labels[:, 1])
    aro = np.interp(t, labels[:, 0], labels[:, 2])
    return np.where(inside, val, 0.0), np.where(inside, aro, 0.0), inside


def _record(
    root: str, name: str, labels: np.ndarray, report: LoadReport, opts: dict
) -> VideoRecord | None:
    folder = os.path.join(root, opts["frames_dir"], name)
    if not os.path.isdir(folder):
        report.add_corrupt(folder, "no frames folder for this label file")
        return None
    files = numbered(sorted(os.listdir(folder)), _FRAME)
    if not files:
        report.add_corrupt(folder, "no frame images")
        return None
    numbers = np.array([n for n, _ in files], dtype=np.int64)
    paths: list[str | None] = [os.path.join(folder, f) for _, f in files]
    val, aro, labelled = align(labels, numbers, opts["fps"], opts["delay"], opts["first_frame"])
    report.filter("outside annotated time range", int((~labelled).sum()))
    if opts["verify"] != "exists":
        for i, path in enumerate(paths):
            if checked_image(path, opts["verify"], report) is None:
                paths[i], labelled[i] = None, False
    return va_record(name, name, numbers, val, aro, paths, labelled)


@register("sewa")
def sewa(
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    *,
    fps: float = 50.0,
    delay: float = 0.0,
    first_frame: int = 0,
    cultures: tuple[str, ...] | None = None,
    frames_dir: str = "frames",
    verify: str = "exists",
    on_error: str = "skip",
    image_size: int = 112,
    **kwargs,
) -> AffectDataset:
    """SEWA / AVEC (see the module docstring).

    Args:
        root: folder holding ``labels/`` and ``frames/``.
        split, mode: as in :func:`hoconv.app.data.create_dataset`.
        fps: video frame rate.
        delay: annotation delay in seconds (frame at t gets the label at t + delay).
        first_frame: number of the frame shown at t = 0.
        cultures: keep only these culture codes (e.g. ``("DE", "HU")``); None = all.
        frames_dir: frames folder relative to root.
        verify: upfront image check (``"exists"``, ``"header"``, ``"decode"``).
        on_error: ``"skip"`` or ``"raise"`` for unreadable files.
        image_size: output side in pixels.
        **kwargs: forwarded to :class:`hoconv.app.data.base.AffectDataset`.
    """
    check_options(split, mode, verify)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    root = require_root(root, "sewa")
    label_dir = os.path.join(root, "labels")
    if not os.path.isdir(label_dir):
        raise FileNotFoundError(f"sewa: no labels/ folder under {root}")
    report = LoadReport("sewa", split, on_error)
    opts = dict(
        fps=float(fps),
        delay=float(delay),
        first_frame=int(first_frame),
        frames_dir=frames_dir,
        verify=verify,
    )
    records = []
    for fname in sorted(os.listdir(label_dir)):
        m = _NAME.match(fname)
        if not m or m.group(1) != _PREFIX[split] or (cultures and m.group(2) not in cultures):
            continue
        path = os.path.join(label_dir, fname)
        labels = read_or_report(
            read_labels, path, report, "labels", (OSError, ValueError, IndexError)
        )
        if labels is None:
            continue
        rec = _record(root, fname[:-4], labels, report, opts)
        if rec is not None:
            records.append(rec)
    if not records and not report.corrupt:
        raise FileNotFoundError(f"sewa: no labels/{_PREFIX[split]}_*.csv under {root}")
    return AffectDataset(records, report, mode=mode, image_size=image_size, **kwargs)
