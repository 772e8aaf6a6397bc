"""``aff_wild2``: Aff-Wild2 valence-arousal track (static or video mode).

Format::

    <root>/[Annotations/]VA_Estimation_Challenge/{Train_Set,Validation_Set,Test_Set}/<video>.txt
    <root>/cropped_aligned/<video>/<i + 1:05d>.jpg

Each ``.txt`` has the header ``valence,arousal`` then one line per video frame; line i
(0-based after the header) belongs to ``cropped_aligned/<video>/<i+1:05d>.jpg`` and
``frames`` holds ``i + 1``. The value -5 marks an unannotated frame; a missing jpg means
no face was detected on that frame. Frames are already aligned face crops (resized only).

Filtering (counted): ``-5`` frames ("-5 (unannotated)"), annotated frames without a jpg
("missing jpg (no face)"), values outside [-1, 1]. In video mode these frames stay in the
sequence (timeline preserved) with ``mask`` False (a missing jpg gives a black frame).
Reported as corrupt (with path): an unreadable ``.txt``, a jpg that cannot be decoded.

Splits: the official, subject-independent partition: ``train`` = Train_Set, ``val`` =
Validation_Set, ``test`` = Test_Set (its labels were released to challenge participants
only; an error says so when the folder is absent).
"""

from __future__ import annotations

import os

import numpy as np

from hoconv.app.data import register
from hoconv.app.data.base import AffectDataset, VideoRecord, require_root
from hoconv.app.data.loading import check_options, checked_image, read_or_report, va_record
from hoconv.app.data.report import LoadReport

_FOLDERS = {"train": "Train_Set", "val": "Validation_Set", "test": "Test_Set"}


def _annotation_dir(root: str, split: str) -> str:
    for base in (root, os.path.join(root, "Annotations")):
        path = os.path.join(base, "VA_Estimation_Challenge", _FOLDERS[split])
        if os.path.isdir(path):
            return path
    hint = " (Test_Set labels are not public)" if split == "test" else ""
    raise FileNotFoundError(
        f"aff_wild2: no [Annotations/]VA_Estimation_Challenge/{_FOLDERS[split]} under {root}{hint}"
    )


def _read_txt(path: str) -> np.ndarray:
    """``(F, 2)`` float64 (valence, arousal) rows of one annotation file; ValueError if malformed."""
    with open(path) as fh:
        header = fh.readline().strip().replace(" ", "").lower()
        if header != "valence,arousal":
            raise ValueError(f"header {header!r}, expected 'valence,arousal'")
        values = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
    if values.size and values.shape[1] != 2:
        raise ValueError(f"{values.shape[1]} columns, expected 2")
    return values.reshape(-1, 2)  # (F, 2)


def _video_record(
    root: str, video: str, values: np.ndarray, report: LoadReport, verify: str
) -> VideoRecord:
    folder = os.path.join(root, "cropped_aligned", video)
    present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    n = len(values)
    unannotated = (values == -5).any(axis=1)
    out_of_range = ~unannotated & (np.abs(values) > 1).any(axis=1)
    report.filter("-5 (unannotated)", int(unannotated.sum()))
    report.filter("valence/arousal outside [-1, 1]", int(out_of_range.sum()))
    labelled = ~(unannotated | out_of_range)
    paths: list[str | None] = []
    for i in range(n):
        name = f"{i + 1:05d}.jpg"
        path = os.path.join(folder, name) if name in present else None
        if path is not None and verify != "exists":
            path = checked_image(path, verify, report)
        elif path is None and labelled[i]:
            report.filter("missing jpg (no face)")
        if path is None:
            labelled[i] = False
        paths.append(path)
    vals = np.where(labelled[:, None], values, 0.0).astype(np.float32)  # (F, 2)
    return va_record(video, video, np.arange(1, n + 1), vals[:, 0], vals[:, 1], paths, labelled)


@register("aff_wild2")
def aff_wild2(
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    *,
    verify: str = "exists",
    on_error: str = "skip",
    image_size: int = 112,
    **kwargs,
) -> AffectDataset:
    """Aff-Wild2 VA track (see the module docstring).

    Args:
        root: the Aff-Wild2 folder.
        split, mode: as in :func:`hoconv.app.data.create_dataset`.
        verify: upfront image check (``"exists"``, ``"header"``, ``"decode"``).
        on_error: ``"skip"`` or ``"raise"`` for unreadable files.
        image_size: output side in pixels.
        **kwargs: forwarded to :class:`hoconv.app.data.base.AffectDataset`.
    """
    check_options(split, mode, verify)
    root = require_root(root, "aff_wild2")
    ann_dir = _annotation_dir(root, split)
    report = LoadReport("aff_wild2", split, on_error)
    records = []
    for name in sorted(os.listdir(ann_dir)):
        if name.endswith(".txt"):
            values = read_or_report(_read_txt, os.path.join(ann_dir, name), report)
            if values is not None and len(values):
                records.append(_video_record(root, name[:-4], values, report, verify))
    return AffectDataset(records, report, mode=mode, image_size=image_size, **kwargs)
