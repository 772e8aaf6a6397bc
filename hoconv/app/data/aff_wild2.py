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
from hoconv.app.data.base import (
    MODES,
    SPLITS,
    VERIFY_CHOICES,
    AffectDataset,
    VideoRecord,
    check_choice,
    image_problem,
    require_root,
)
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


def _read_txt(path: str, report: LoadReport) -> np.ndarray | None:
    try:
        with open(path) as fh:
            header = fh.readline().strip().replace(" ", "").lower()
            if header != "valence,arousal":
                raise ValueError(f"header {header!r}, expected 'valence,arousal'")
            values = np.loadtxt(fh, delimiter=",", dtype=np.float64, ndmin=2)
        if values.size and values.shape[1] != 2:
            raise ValueError(f"{values.shape[1]} columns, expected 2")
        return values.reshape(-1, 2)  # (F, 2)
    except (OSError, ValueError) as err:
        report.add_corrupt(path, f"unreadable annotation ({err})")
        return None


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
            problem = image_problem(path, verify)
            if problem:
                report.add_corrupt(path, problem)
                path = None
        elif path is None and labelled[i]:
            report.filter("missing jpg (no face)")
        if path is None:
            labelled[i] = False
        paths.append(path)
    vals = np.where(labelled[:, None], values, 0.0).astype(np.float32)  # (F, 2)
    return VideoRecord(
        name=video,
        subject=video,
        frames=np.arange(1, n + 1, dtype=np.int64),
        valence=vals[:, 0],
        arousal=vals[:, 1],
        expression=np.full(n, -1, dtype=np.int64),
        labelled=labelled,
        paths=paths,
    )


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
    check_choice("split", split, SPLITS)
    check_choice("mode", mode, MODES)
    check_choice("verify", verify, VERIFY_CHOICES)
    root = require_root(root, "aff_wild2")
    ann_dir = _annotation_dir(root, split)
    report = LoadReport("aff_wild2", split, on_error)
    records = []
    for name in sorted(os.listdir(ann_dir)):
        if name.endswith(".txt"):
            values = _read_txt(os.path.join(ann_dir, name), report)
            if values is not None and len(values):
                records.append(_video_record(root, name[:-4], values, report, verify))
    return AffectDataset(records, report, mode=mode, image_size=image_size, **kwargs)
