"""``affectnet``: AffectNet still images (both releases), static mode only.

Original release (``release="original"``)::

    <root>/Manually_Annotated_file_lists/training.csv, validation.csv
    <root>/Manually_Annotated_Images/<subDirectory_filePath>

CSV header ``subDirectory_filePath,face_x,face_y,face_width,face_height,
facial_landmarks,expression,valence,arousal``; ``facial_landmarks`` is 136 floats joined
by ``;`` (x0;y0;x1;y1;...); valence / arousal in [-1, 1] with -2 = not annotated;
expression 0-7 = Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt and
8 / 9 / 10 = None / Uncertain / No-face. Faces are cropped from the given box (or from the
landmarks with ``crop="landmarks"``).

Newer release (``release="new"``)::

    <root>/{train_set,val_set}/images/<id>.jpg
    <root>/{train_set,val_set}/annotations/<id>_exp.npy, <id>_val.npy, <id>_aro.npy, <id>_lnd.npy

each ``.npy`` holding one value (the class, valence, arousal; possibly as strings) or the
136 landmark values. Images are already face crops: they are resized (or cropped from the
landmarks with ``crop="landmarks"``).

Label filtering (every case counted in ``summary["filtered"]``): expression 10 (No-face)
drops the image; valence or arousal == -2 drops it; values outside [-1, 1] drop it;
expression 8 / 9 (None / Uncertain) keep the image with ``expression = -1``.

Splits: AffectNet has no subject ids and no public test set. ``test`` is the official
validation set (``validation.csv`` / ``val_set``); ``train`` and ``val`` are a seeded
image-level partition of the training set (``val_fraction`` held out). A missing or
unreadable image / annotation file is reported with its path (``on_error``).
Samples: ``video`` is the image's sub-directory (original) or ``"train_set"`` /
``"val_set"`` (new); ``frame`` is the row number in the CSV (0-based, header excluded) or
the numeric image id.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict

import numpy as np

from hoconv.app.data import register
from hoconv.app.data.base import AffectDataset, VideoRecord, check_choice, require_root
from hoconv.app.data.loading import (
    check_options,
    checked_image,
    require_mode,
    split_mask,
    va_record,
)
from hoconv.app.data.report import LoadReport

COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
_EXPR_DROP = {10: "expression 10 (No-face)"}
_EXPR_MISSING = {8: "expression 8 (None) -> -1", 9: "expression 9 (Uncertain) -> -1"}


def _label(report: LoadReport, expr: int, val: float, aro: float) -> int | None:
    """Expression to keep (-1 = missing) or None when the sample is dropped (counted)."""
    if expr in _EXPR_DROP:
        report.filter(_EXPR_DROP[expr])
        return None
    if val == -2 or aro == -2:
        report.filter("valence/arousal -2 (not annotated)")
        return None
    if not (-1 <= val <= 1 and -1 <= aro <= 1):
        report.filter("valence/arousal outside [-1, 1]")
        return None
    if expr in _EXPR_MISSING:
        report.filter(_EXPR_MISSING[expr])
        return -1
    if not 0 <= expr <= 7:
        report.filter(f"expression {expr} (unknown code) -> -1")
        return -1
    return expr


def _holdout(n: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    if split == "test":
        return np.ones(n, dtype=bool)
    val = np.zeros(n, dtype=bool)
    val[np.random.default_rng(seed).permutation(n)[: round(n * val_fraction)]] = True
    return split_mask(val, split)


def _original(root: str, split: str, report: LoadReport, opts: dict) -> list[VideoRecord]:
    csv_name = "validation.csv" if split == "test" else "training.csv"
    csv_path = os.path.join(root, "Manually_Annotated_file_lists", csv_name)
    images = os.path.join(root, opts["images_dir"])
    rows = _read_csv(csv_path)
    header, rows = rows[0], rows[1:]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{csv_path}: missing columns {missing}; expected {COLUMNS}")
    col = {c: header.index(c) for c in COLUMNS}
    keep = _holdout(len(rows), split, opts["val_fraction"], opts["seed"])
    groups: dict[str, list] = defaultdict(list)
    for i, row in enumerate(rows):
        if not keep[i]:
            continue
        try:
            expr = int(float(row[col["expression"]]))
            val, aro = float(row[col["valence"]]), float(row[col["arousal"]])
            box = [float(row[col[c]]) for c in ("face_x", "face_y", "face_width", "face_height")]
            lms = None
            if opts["crop"] == "landmarks":
                lms = np.array(row[col["facial_landmarks"]].split(";"), dtype=np.float32).reshape(
                    -1, 2
                )
        except (ValueError, IndexError) as err:
            report.add_corrupt(f"{csv_path}:{i + 2}", f"bad annotation row ({err})")
            continue
        expr = _label(report, expr, val, aro)
        if expr is None:
            continue
        rel = row[col["subDirectory_filePath"]]
        path = checked_image(os.path.join(images, rel), opts["verify"], report)
        if path is None:
            continue
        groups[os.path.dirname(rel) or "."].append((i, path, val, aro, expr, box, lms))
    return [_group_record(name, items, opts["crop"]) for name, items in sorted(groups.items())]


def _read_csv(csv_path: str) -> list[list[str]]:
    """The rows of an annotation CSV (header first); one-line errors naming the file."""
    try:
        with open(csv_path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (csv.Error, UnicodeDecodeError) as err:
        raise ValueError(f"{csv_path}: not a readable CSV file ({err})") from err
    if not rows:
        raise ValueError(f"{csv_path}: empty file; expected a header row {','.join(COLUMNS)}")
    return rows


def _group_record(name: str, items: list, crop: str) -> VideoRecord:
    idx, paths, val, aro, expr, boxes, lms = zip(*items)
    return va_record(
        name,
        name,
        idx,
        val,
        aro,
        list(paths),
        expression=expr,
        boxes=None if crop != "box" or boxes[0] is None else np.array(boxes, dtype=np.float32),
        landmarks=None if crop != "landmarks" else np.stack(lms).astype(np.float32),
    )


def _npy_value(path: str) -> np.ndarray:
    return np.asarray(np.load(path, allow_pickle=False))


def _new(root: str, split: str, report: LoadReport, opts: dict) -> list[VideoRecord]:
    folder = "val_set" if split == "test" else "train_set"
    img_dir = os.path.join(root, folder, "images")
    ann_dir = os.path.join(root, folder, "annotations")
    ids = sorted(os.path.splitext(f)[0] for f in os.listdir(img_dir) if f.lower().endswith(".jpg"))
    keep = _holdout(len(ids), split, opts["val_fraction"], opts["seed"])
    items = []
    for j, image_id in enumerate(ids):
        if not keep[j]:
            continue
        try:
            files = {
                k: os.path.join(ann_dir, f"{image_id}_{k}.npy")
                for k in ("exp", "val", "aro", "lnd")
            }
            expr = int(float(_npy_value(files["exp"]).item()))
            val = float(_npy_value(files["val"]).item())
            aro = float(_npy_value(files["aro"]).item())
            lms = None
            if opts["crop"] == "landmarks":
                lms = _npy_value(files["lnd"]).astype(np.float32).reshape(-1, 2)
        except (OSError, ValueError) as err:
            report.add_corrupt(
                os.path.join(ann_dir, f"{image_id}_*.npy"), f"bad annotation ({err})"
            )
            continue
        expr = _label(report, expr, val, aro)
        if expr is None:
            continue
        path = checked_image(os.path.join(img_dir, f"{image_id}.jpg"), opts["verify"], report)
        if path is None:
            continue
        frame = int(image_id) if image_id.isdigit() else j
        items.append((frame, path, val, aro, expr, None, lms))
    return [_group_record(folder, items, opts["crop"])] if items else []


@register("affectnet")
def affectnet(
    root: str | None = None,
    split: str = "train",
    mode: str = "static",
    *,
    release: str = "auto",
    crop: str = "box",
    images_dir: str = "Manually_Annotated_Images",
    val_fraction: float = 0.05,
    seed: int = 0,
    verify: str = "exists",
    on_error: str = "skip",
    image_size: int = 112,
    **kwargs,
) -> AffectDataset:
    """AffectNet (see the module docstring for the formats and the filtering).

    Args:
        root: the AffectNet folder.
        split: ``train`` / ``val`` (seeded hold-out of the training set) / ``test``
            (the official validation set).
        mode: ``"static"`` only (AffectNet has no videos).
        release: ``"original"``, ``"new"`` or ``"auto"`` (detected from the folders).
        crop: ``"box"`` (original release), ``"landmarks"`` or ``"none"``.
        images_dir: image folder of the original release, relative to root.
        val_fraction: fraction of the training set held out as ``val``.
        seed: hold-out seed.
        verify: upfront image check: ``"exists"``, ``"header"`` (magic bytes) or
            ``"decode"`` (full ``cv2.imread``); images failing later are still reported.
        on_error: ``"skip"`` or ``"raise"`` for unreadable files.
        image_size: output side in pixels.
        **kwargs: forwarded to :class:`hoconv.app.data.base.AffectDataset`.
    """
    check_options(split)
    require_mode("affectnet", mode, "static")
    check_choice("release", release, ("auto", "original", "new"))
    check_choice("crop", crop, ("box", "landmarks", "none"))
    check_options(split, verify=verify)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = require_root(root, "affectnet")
    if release == "auto":
        release = "new" if os.path.isdir(os.path.join(root, "train_set")) else "original"
    if release == "new" and crop == "box":
        crop = "none"  # the new release has no boxes: its images are face crops
    report = LoadReport(f"affectnet({release})", split, on_error)
    opts = dict(
        images_dir=images_dir, val_fraction=val_fraction, seed=seed, verify=verify, crop=crop
    )
    records = (_original if release == "original" else _new)(root, split, report, opts)
    return AffectDataset(records, report, mode="static", image_size=image_size, **kwargs)
