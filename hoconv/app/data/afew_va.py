"""``afew_va``: AFEW-VA video clips (static or video mode).

Format::

    <root>/<clip>/<clip>.json
    <root>/<clip>/<key>.png          one PNG per annotated frame

The JSON is ``{"actor": str, "video_id": str, "frames": {"00000": {"valence": int,
"arousal": int, "landmarks": [[x, y] x 68]}, ...}}`` with valence / arousal integers in
[-10, 10] (divided by 10 here). Frame keys are 5-digit strings that may start at 00000 or
00001 and may have gaps: frames are identified by their JSON key (``frames`` holds
``int(key)``), never by position. Faces are cropped from the landmarks. The video-mode
sequence is the annotated frames in key order.

Filtering (counted): values outside [-10, 10]. Reported as corrupt (with path): an
unreadable JSON, a key without its PNG, a PNG that cannot be decoded.

Splits: AFEW-VA has no official partition. Clips are split by ``actor`` (subject
independent) with ``seed`` and ``fractions`` (train, val, test), default 0.7 / 0.15 / 0.15.
"""

from __future__ import annotations

import json
import os

import numpy as np

from hoconv.app.data import register
from hoconv.app.data.base import AffectDataset, VideoRecord, require_root, split_subjects
from hoconv.app.data.loading import (
    FRAME_KEY,
    check_options,
    checked_image,
    numbered,
    read_or_report,
    va_record,
)
from hoconv.app.data.report import LoadReport


def _read_json(path: str) -> dict:
    """The annotation object of one clip; ValueError (UnicodeDecodeError, JSONDecodeError) if bad."""
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"top level is a {type(data).__name__}, expected an object")
    if not isinstance(data.get("frames"), dict):
        raise ValueError("no 'frames' object")
    return data


def _clip_record(
    root: str, clip: str, data: dict, report: LoadReport, verify: str
) -> VideoRecord | None:
    rows = []
    json_path = f"{os.path.join(root, clip, clip)}.json"
    numeric = numbered(data["frames"], FRAME_KEY)
    for key in sorted(set(data["frames"]) - {k for _, k in numeric}):
        report.add_corrupt(f"{json_path}#{key}", "frame key is not a frame number")
    for _, key in numeric:
        entry = data["frames"][key]
        try:
            val, aro = float(entry["valence"]), float(entry["arousal"])
            lms = np.asarray(entry.get("landmarks", np.full((68, 2), np.nan)), dtype=np.float32)
            lms = lms.reshape(-1, 2)  # (68, 2)
        except (KeyError, TypeError, ValueError) as err:
            report.add_corrupt(f"{json_path}#{key}", f"bad frame entry ({err})")
            continue
        if not (-10 <= val <= 10 and -10 <= aro <= 10):
            report.filter("valence/arousal outside [-10, 10]")
            continue
        path = checked_image(os.path.join(root, clip, f"{key}.png"), verify, report)
        if path is None:
            continue
        rows.append((int(key), path, val / 10.0, aro / 10.0, lms))
    if not rows:
        return None
    frames, paths, val, aro, lms = zip(*rows)
    landmarks = np.stack(lms) if len({x.shape for x in lms}) == 1 else None
    subject = str(data.get("actor", clip))
    return va_record(clip, subject, frames, val, aro, list(paths), landmarks=landmarks)


@register("afew_va")
def afew_va(
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    verify: str = "exists",
    on_error: str = "skip",
    image_size: int = 112,
    **kwargs,
) -> AffectDataset:
    """AFEW-VA (see the module docstring).

    Args:
        root: folder holding the clip folders.
        split, mode: as in :func:`hoconv.app.data.create_dataset`.
        seed, fractions: the actor-level split.
        verify: upfront image check (``"exists"``, ``"header"``, ``"decode"``).
        on_error: ``"skip"`` or ``"raise"`` for unreadable files.
        image_size: output side in pixels.
        **kwargs: forwarded to :class:`hoconv.app.data.base.AffectDataset`.
    """
    check_options(split, mode, verify)
    root = require_root(root, "afew_va")
    report = LoadReport("afew_va", split, on_error)
    clips = {}
    for clip in sorted(os.listdir(root)):
        path = os.path.join(root, clip, f"{clip}.json")
        if os.path.isdir(os.path.join(root, clip)) and os.path.isfile(path):
            data = read_or_report(_read_json, path, report)
            if data is not None:
                clips[clip] = data
    if not clips:
        bad = report.corrupt
        raise FileNotFoundError(
            f"afew_va: no readable <clip>/<clip>.json under {root}"
            + (f" ({len(bad)} unreadable, e.g. {bad[0]['path']})" if bad else "")
        )
    actors = {c: str(d.get("actor", c)) for c, d in clips.items()}
    chosen = split_subjects(list(actors.values()), split, fractions, seed)
    records = []
    for clip, data in clips.items():
        if actors[clip] in chosen:
            rec = _clip_record(root, clip, data, report, verify)
            if rec is not None:
                records.append(rec)
    return AffectDataset(records, report, mode=mode, image_size=image_size, **kwargs)
