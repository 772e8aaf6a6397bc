"""Write predictions: CSV, JSON, valence/arousal plots and annotated videos / contact sheets.

Files in the output folder:

* ``predictions.csv``: one row per frame and face (columns :data:`~hoconv.app.predict.run.COLUMNS`);
  a frame without a face and an unreadable input are rows with empty values and a reason.
* ``predictions.json``: the run's settings, one entry per input (kind, fps, frames read,
  frames scored, error) and the same rows.
* per video ``NN_<name>_va.png`` (valence and arousal over time, per face) and
  ``NN_<name>_annotated.webm`` (VP8: face boxes, landmarks and values drawn on the frames;
  plays in browsers; ``.mp4`` / mp4v with a warning where OpenCV has no VP8 encoder) or
  ``NN_<name>_sheet.png`` (a contact sheet of evenly spaced annotated frames);
* per still image ``NN_<name>_annotated.jpg`` (full resolution) and one
  ``images_sheet.png`` (all images, captioned with the file name and the values).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from hoconv.app.predict.draw import annotate, caption, contact_sheet, enlarge
from hoconv.app.predict.run import COLUMNS, SourceResult
from hoconv.app.predict.video import iter_frames

ANNOTATE = ("video", "sheet", "none")


def write_csv(results: list[SourceResult], path: Path) -> None:
    """All rows of all inputs, in input and frame order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for res in results:
            writer.writerows(res.rows)


def write_json(results: list[SourceResult], settings: dict, path: Path) -> None:
    """Settings, per-input summaries and rows (empty values as ``null``)."""

    def clean(row: dict) -> dict:
        return {k: (None if v == "" else v) for k, v in row.items()}

    inputs = [
        {"file": r.source.path, "kind": r.source.kind, "fps": r.source.fps,
         "width": r.source.width, "height": r.source.height, "frames_read": r.frames,
         "rows_scored": r.scored, "clamped": r.clamped, "error": r.error}
        for r in results
    ]  # fmt: skip
    rows = [clean(row) for r in results for row in r.rows]
    clamped = sum(r.clamped for r in results)
    payload = {"settings": settings, "inputs": inputs, "clamped": clamped, "rows": rows}
    path.write_text(json.dumps(payload, indent=1, allow_nan=False))


def stem(index: int, path: str) -> str:
    """A file-name-safe, unique prefix for one input's files: ``NN_<name>``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "input"
    return f"{index:02d}_{name[:60]}"


def _track_colour(index: int) -> tuple:
    """A distinct colour per face track (tab20, cycling past 20 tracks)."""
    from matplotlib import colormaps

    return colormaps["tab20"](index % 20)


def plot_va(result: SourceResult, path: Path) -> None:
    """Valence and arousal over time (seconds), one line per face track, gaps left open."""
    faces = sorted({r["face"] for r in result.rows if r["face"] != ""})
    fig = Figure(figsize=(9 + 1.6 * (len(faces) > 4) + 1.6 * (len(faces) > 8), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    fps = result.source.fps or 30.0
    times = np.arange(result.frames) / fps
    outside = total = 0
    for i, face in enumerate(faces):
        v = np.full(result.frames, np.nan)
        a = np.full(result.frames, np.nan)
        for r in result.rows:
            if r["face"] == face and r["valence"] != "":
                v[r["frame"]], a[r["frame"]] = r["valence"], r["arousal"]
        tag = f" (face {face})" if len(faces) > 1 else ""
        colour = _track_colour(i) if len(faces) > 1 else None
        ax.plot(times, v, "-", color=colour or "C0", label=f"valence{tag}")
        ax.plot(times, a, "--", color=colour or "C1", label=f"arousal{tag}")
        both = np.concatenate([v, a])
        total += int(np.isfinite(both).sum())
        outside += int((np.abs(both[np.isfinite(both)]) > 1.0).sum())
    missing = [r["frame"] for r in result.rows if r["reason"]]
    if missing:
        ax.plot(np.asarray(missing) / fps, np.full(len(missing), -1.05), "|", color="grey",
                label="no face")  # fmt: skip
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("value")
    title = Path(result.source.path).name
    if outside:  # never clip silently (values are clamped before; this is a safeguard)
        title += f"  ({outside} of {total} values outside [-1, 1], cut at the axis)"
    if result.clamped:  # unbounded (older) heads: predict clamps V/A to [-1, 1]
        title += f"  ({result.clamped} of {total} values clamped to [-1, 1])"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ncol = 1 + (len(faces) > 4) + (len(faces) > 8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _by_frame(result: SourceResult) -> dict[int, list[dict]]:
    frames: dict[int, list[dict]] = {}
    for r in result.rows:
        if r["frame"] != "":
            frames.setdefault(r["frame"], []).append(r)
    return frames


VIDEO_CODECS = (("VP80", ".webm"), ("mp4v", ".mp4"))  # browser-playable first, then fallback


def _quiet_writer(path: Path, fourcc: str, fps: float, size: tuple[int, int]):
    """``cv2.VideoWriter`` opened with file descriptor 2 muted (FFmpeg's tag warnings)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        return cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_annotated_video(
    result: SourceResult, prefix: Path, codecs: tuple | None = None
) -> tuple[Path | None, str | None]:
    """Re-read the video and write it annotated: VP8 WebM (plays in browsers), else mp4v.

    Returns:
        ``(path or None, warning or None)``: the file written and a line when the
        browser-playable codec was missing.
    """
    src = result.source
    size = (src.width, src.height)
    codecs = codecs or VIDEO_CODECS
    for fourcc, ext in codecs:
        path = prefix.with_name(prefix.name + "_annotated" + ext)
        writer = _quiet_writer(path, fourcc, src.fps or 30.0, size)
        if writer.isOpened():
            break
        path.unlink(missing_ok=True)
    else:
        return None, f"{src.path}: no video encoder could open ({', '.join(c for c, _ in codecs)})"
    rows = _by_frame(result)
    try:
        for index, _, image in iter_frames(src):
            if index >= result.frames:
                break
            writer.write(cv2.cvtColor(annotate(image, rows.get(index, [])), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if (fourcc, ext) == codecs[0]:
        return path, None
    return path, (
        f"{src.path}: this OpenCV has no {codecs[0][0]} {codecs[0][1]} encoder; wrote "
        f"{path.name} ({fourcc}: plays in VLC / ffplay, not in browsers)"
    )


def video_sheet(result: SourceResult, path: Path, count: int = 16) -> None:
    """Contact sheet of ``count`` evenly spaced annotated frames of a video, with times."""
    wanted = set(
        np.linspace(0, max(result.frames - 1, 0), min(count, result.frames)).round().astype(int)
    )
    rows = _by_frame(result)
    tiles = [
        (annotate(img, rows.get(i, [])), [f"frame {i}  {t:.2f} s", caption(rows.get(i, []))])
        for i, t, img in iter_frames(result.source)
        if i in wanted
    ]
    if tiles:
        contact_sheet(tiles, path)


def write_image(result: SourceResult, path: Path) -> np.ndarray:
    """The annotated image of a still input (JPEG), full resolution (a short side under
    360 px is enlarged to 360 so that the labels stay legible); returns it."""
    drawn = annotate(*enlarge(next(iter_frames(result.source))[2], result.rows))
    cv2.imwrite(str(path), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return drawn


def write_outputs(
    results: list[SourceResult],
    settings: dict,
    out_dir: Path,
    annotate_as: str = "video",
    max_sheet_images: int = 64,
    *,
    warnings: list[str] | None = None,
) -> list[Path]:
    """Write every output file (see the module docstring); returns their paths.

    Lines about what could not be written as asked are appended to ``warnings``.
    """
    if annotate_as not in ANNOTATE:
        raise ValueError(f"annotate: expected one of {ANNOTATE}, got {annotate_as!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "predictions.csv", out_dir / "predictions.json"]
    write_csv(results, written[0])
    write_json(results, settings, written[1])
    stills = []
    for i, res in enumerate(results):
        if res.error or res.frames == 0:
            continue
        prefix = out_dir / stem(i, res.source.path)
        if res.source.kind == "image":
            if annotate_as != "none":
                drawn = write_image(res, prefix.with_name(prefix.name + "_annotated.jpg"))
                written.append(prefix.with_name(prefix.name + "_annotated.jpg"))
                if len(stills) < max_sheet_images:
                    stills.append((drawn, [Path(res.source.path).name, caption(res.rows)]))
            continue
        plot = prefix.with_name(prefix.name + "_va.png")
        plot_va(res, plot)
        written.append(plot)
        if res.source.kind == "webcam":  # a live stream cannot be read a second time
            continue
        if annotate_as == "video" and res.source.kind == "video":
            video, note = write_annotated_video(res, prefix)
            if note is not None and warnings is not None:
                warnings.append(note)
            if video is not None:
                written.append(video)
                continue
        if annotate_as != "none":
            sheet = prefix.with_name(prefix.name + "_sheet.png")
            video_sheet(res, sheet)
            written.append(sheet)
    if stills:
        contact_sheet(stills, out_dir / "images_sheet.png")
        written.append(out_dir / "images_sheet.png")
    return written
