"""Write predictions: CSV, JSON, valence/arousal plots and annotated videos / contact sheets.

Files in the output folder:

* ``predictions.csv``: one row per frame and face (columns :data:`~hoconv.predict.run.COLUMNS`);
  a frame without a face and an unreadable input are rows with empty values and a reason.
* ``predictions.json``: the run's settings, one entry per input (kind, fps, frames read,
  frames scored, error) and the same rows.
* per video ``NN_<name>_va.png`` (valence and arousal over time, per face) and
  ``NN_<name>_annotated.mp4`` (face boxes and values drawn on the frames) or
  ``NN_<name>_sheet.png`` (a contact sheet of evenly spaced annotated frames);
  for still images one ``images_sheet.png``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure

from hoconv.predict.run import COLUMNS, SourceResult
from hoconv.predict.video import iter_frames

ANNOTATE = ("video", "sheet", "none")


def write_csv(results: list[SourceResult], path: Path) -> None:
    """All rows of all inputs, in input and frame order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
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
         "rows_scored": r.scored, "error": r.error}
        for r in results
    ]  # fmt: skip
    rows = [clean(row) for r in results for row in r.rows]
    payload = {"settings": settings, "inputs": inputs, "rows": rows}
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
    if outside:  # never clip silently: old (unbounded) checkpoints can leave [-1, 1]
        title += f"  ({outside} of {total} values outside [-1, 1], cut at the axis)"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ncol = 1 + (len(faces) > 4) + (len(faces) > 8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def annotate(image: np.ndarray, rows: list[dict]) -> np.ndarray:
    """A copy of an RGB frame with each face's box and values drawn on it."""
    out = image.copy()
    scale = max(0.35, min(out.shape[:2]) / 720)
    thick = max(1, round(2 * scale))
    for r in rows:
        if r["valence"] == "":
            cv2.putText(
                out,
                r["reason"] or "no value",
                (5, int(20 * scale) + 5),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.6 * scale,
                (255, 60, 60),
                thick,
                cv2.LINE_AA,
            )
            continue
        x, y, w, h = (int(r[k]) for k in ("box_x", "box_y", "box_w", "box_h"))
        cv2.rectangle(out, (x, y), (x + w, y + h), (40, 220, 40), thick)
        text = f"V{r['valence']:+.2f} A{r['arousal']:+.2f}"
        if r["expression"]:
            text += f" {r['expression']}"
        org = (x, max(int(14 * scale) + 2, y - 4))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0),
                    thick + 2, cv2.LINE_AA)  # fmt: skip
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255),
                    thick, cv2.LINE_AA)  # fmt: skip
    return out


def _by_frame(result: SourceResult) -> dict[int, list[dict]]:
    frames: dict[int, list[dict]] = {}
    for r in result.rows:
        if r["frame"] != "":
            frames.setdefault(r["frame"], []).append(r)
    return frames


def write_annotated_video(result: SourceResult, path: Path) -> bool:
    """Re-read the video and write it annotated (mp4v); False if no writer could open."""
    src = result.source
    size = (src.width, src.height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), src.fps or 30.0, size)
    if not writer.isOpened():
        return False
    rows = _by_frame(result)
    try:
        for index, _, image in iter_frames(src):
            if index >= result.frames:
                break
            frame = annotate(image, rows.get(index, []))
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return True


def contact_sheet(tiles: list[np.ndarray], path: Path, thumb: int = 200, cols: int = 4) -> None:
    """Write RGB images as a grid of ``thumb``-pixel tiles (aspect kept, black padding)."""
    cols = max(1, min(cols, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.zeros((rows * thumb, cols * thumb, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        h, w = tile.shape[:2]
        s = thumb / max(h, w)
        small = cv2.resize(
            tile, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA
        )
        r, c = divmod(i, cols)
        y0, x0 = r * thumb, c * thumb
        sheet[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def video_sheet(result: SourceResult, path: Path, count: int = 16) -> None:
    """Contact sheet of ``count`` evenly spaced annotated frames of a video."""
    wanted = set(
        np.linspace(0, max(result.frames - 1, 0), min(count, result.frames)).round().astype(int)
    )
    rows = _by_frame(result)
    tiles = [
        annotate(img, rows.get(i, [])) for i, _, img in iter_frames(result.source) if i in wanted
    ]
    if tiles:
        contact_sheet(tiles, path)


def write_outputs(
    results: list[SourceResult],
    settings: dict,
    out_dir: Path,
    annotate_as: str = "video",
    max_sheet_images: int = 64,
) -> list[Path]:
    """Write every output file (see the module docstring); returns their paths."""
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
        if res.source.kind == "image":
            if len(stills) < max_sheet_images:
                stills.append(annotate(next(iter_frames(res.source))[2], res.rows))
            continue
        prefix = out_dir / stem(i, res.source.path)
        plot = prefix.with_name(prefix.name + "_va.png")
        plot_va(res, plot)
        written.append(plot)
        if res.source.kind == "webcam":  # a live stream cannot be read a second time
            continue
        if annotate_as == "video" and res.source.kind == "video":
            video = prefix.with_name(prefix.name + "_annotated.mp4")
            if write_annotated_video(res, video):
                written.append(video)
                continue
        if annotate_as != "none":
            sheet = prefix.with_name(prefix.name + "_sheet.png")
            video_sheet(res, sheet)
            written.append(sheet)
    if stills and annotate_as != "none":
        contact_sheet(stills, out_dir / "images_sheet.png")
        written.append(out_dir / "images_sheet.png")
    return written
