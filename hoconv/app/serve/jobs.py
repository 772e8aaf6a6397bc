"""Prediction jobs of ``hoconv serve``: checkpoints, one upload or webcam frame -> results.

A job runs :func:`hoconv.app.predict.predict` on the saved upload, writing its CSV, JSON, V/A
plot and (videos) annotated video into the job folder, then draws up to :data:`MAX_FRAMES_SHOWN` annotated frames
(JPEG, :func:`hoconv.app.predict.outputs.annotate`) beside them. The page gets one JSON
payload (:func:`job_payload`): the rows, the annotated frames' URLs, the files, warnings
and, when no frame held a face, a message saying so.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
from torch import nn

from hoconv.app.predict import NothingPredicted, Options, predict
from hoconv.app.predict.model import SYNTHETIC_WARNING, load_checkpoint, trained_on
from hoconv.app.predict.outputs import annotate
from hoconv.app.predict.video import Source, iter_frames, open_source
from hoconv.app.serve.uploads import Upload, UploadError

MAX_FRAMES_SHOWN = 12
MAX_SHOWN_WIDTH = 960
VIDEO_SUFFIXES = (".webm", ".mp4", ".m4v")  # an annotated video written by predict


class Checkpoints:
    """The checkpoints a server offers, by display name; each loaded once, on first use.

    Args:
        paths: display name -> checkpoint file.
        device: where to put the models.
    """

    def __init__(self, paths: dict[str, Path], device: str = "cpu") -> None:
        if not paths:
            raise ValueError("serve: no checkpoint given (--checkpoint FILE or --checkpoint-dir)")
        self.paths = dict(paths)
        self.device = device
        self._loaded: dict[str, tuple[nn.Module, dict]] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Display names, in the order given."""
        return list(self.paths)

    def get(self, name: str) -> tuple[nn.Module, dict]:
        """``(model, meta)`` of checkpoint ``name``.

        Raises:
            UploadError: 404 for an unknown name, 400 for a checkpoint that does not load.
        """
        if name not in self.paths:
            raise UploadError(f"unknown checkpoint {name!r}; choose one of {self.names}", 404)
        with self._lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = load_checkpoint(str(self.paths[name]), self.device)
                except (ValueError, OSError, RuntimeError) as err:
                    raise UploadError(f"checkpoint {name}: cannot be loaded ({err})") from err
            return self._loaded[name]


def find_checkpoints(files: list[str] | None, folder: str | None) -> dict[str, Path]:
    """Display name -> path for ``--checkpoint`` files and every ``*.pt`` under ``folder``.

    Raises:
        FileNotFoundError: a named file or the folder does not exist.
        ValueError: the folder holds no ``*.pt`` file.
    """
    found: dict[str, Path] = {}
    for item in files or []:
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"--checkpoint: no such file: {item}")
        found[item] = path
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"--checkpoint-dir: no such folder: {folder}")
        pts = sorted(p for p in root.rglob("*.pt") if p.is_file())
        if not pts:
            raise ValueError(f"--checkpoint-dir: no *.pt file under {folder}")
        found.update((str(p.relative_to(root)), p) for p in pts)
    return found


def _shown_frames(frames: int, rows: list[dict]) -> list[int]:
    """Up to :data:`MAX_FRAMES_SHOWN` frame indices, evenly spaced, preferring face frames."""
    with_face = sorted({r["frame"] for r in rows if r["valence"] is not None})
    pool = with_face or list(range(frames))
    if len(pool) <= MAX_FRAMES_SHOWN:
        return pool
    picks = np.linspace(0, len(pool) - 1, MAX_FRAMES_SHOWN).round().astype(int)
    return [pool[i] for i in picks]


def _as_csv_row(row: dict) -> dict:
    """A JSON row (``None`` for empty) in the form :func:`annotate` reads (``""``)."""
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_frames(source: Source, rows: list[dict], folder: Path, prefix: str = "frame") -> list:
    """Annotated JPEGs of the shown frames; ``[{"frame", "name"}]`` in frame order."""
    wanted = set(_shown_frames(source.frame_count or 1, rows))
    by_frame: dict[int, list[dict]] = {}
    for r in rows:
        by_frame.setdefault(r["frame"], []).append(_as_csv_row(r))
    written = []
    for index, _, image in iter_frames(source):
        if index > max(wanted, default=-1):
            break
        if index not in wanted:
            continue
        drawn = annotate(image, by_frame.get(index, []))
        h, w = drawn.shape[:2]
        if w > MAX_SHOWN_WIDTH:
            size = (MAX_SHOWN_WIDTH, max(1, round(h * MAX_SHOWN_WIDTH / w)))
            drawn = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
        name = f"{prefix}_{index:05d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        written.append({"frame": index, "name": name})
    return written


def run_job(upload: Upload, checkpoint: tuple[nn.Module, dict], options: Options) -> dict:
    """Predict on a saved upload; the page's payload (see :func:`job_payload`)."""
    model, meta = checkpoint
    warnings: list[str] = []
    message = None
    try:
        annotate_as = "video" if upload.kind == "video" else "none"
        summary = predict([str(upload.path)], (model, meta), upload.folder, options,
                          annotate=annotate_as)  # fmt: skip
        warnings = summary["warnings"]
    except NothingPredicted:
        if trained_on(meta) == "synthetic":
            warnings = [SYNTHETIC_WARNING]
    data = json.loads((upload.folder / "predictions.json").read_text())
    info = data["inputs"][0]
    rows = data["rows"]
    for row in rows:
        row["file"] = upload.display_name
    if info["error"]:
        raise UploadError(f"{upload.display_name}: {info['error'].split(': ', 1)[-1]}")
    if not any(r["valence"] is not None for r in rows):
        message = (
            f"no face found in any of the {info['frames_read']} frame(s) of {upload.display_name}"
        )
    source = open_source(Source(str(upload.path), upload.kind, max_frames=options.max_frames))
    announced = source.frame_count or 0
    if upload.kind == "video" and options.max_frames and announced > options.max_frames:
        warnings.append(
            f"{upload.display_name}: only the first {options.max_frames} of {announced} frames "
            "were scored (the server's --max-frames)"
        )
    source.frame_count = info["frames_read"]
    frames = write_frames(source, rows, upload.folder)
    settings = data["settings"]
    model_info = {"model": settings["model"], "mode": settings["mode"],
                  "trained_on": trained_on(meta), "expressions": settings["expressions"]}  # fmt: skip
    warnings = [w.replace(str(upload.path), upload.display_name) for w in warnings]
    return job_payload(upload, info, rows, frames, warnings, message, model_info)


def _playable_video(files: list[str], url: str) -> str | None:
    """URL of the annotated video, WebM first (every browser plays VP8/VP9), else MP4."""
    for suffix in VIDEO_SUFFIXES:
        for name in files:
            if name.endswith(suffix):
                return url + name
    return None


def job_payload(upload, info, rows, frames, warnings, message, model_info) -> dict:
    """The JSON the page draws: rows, annotated frames and files by URL, warnings, message."""
    files = sorted(p.name for p in upload.folder.iterdir()
                   if p.is_file() and not p.name.startswith(("input", "frame_")))  # fmt: skip
    url = f"results/{upload.job}/"
    return {
        "job": upload.job,
        "file": upload.display_name,
        "kind": upload.kind,
        "fps": info["fps"],
        "width": info["width"],
        "height": info["height"],
        "frames": info["frames_read"],
        "scored": sum(r["valence"] is not None for r in rows),
        "rows": rows,
        "images": [{"frame": f["frame"], "url": url + f["name"]} for f in frames],
        "files": [{"name": name, "url": url + name} for name in files],
        "video": _playable_video(files, url),
        "warnings": warnings,
        "message": message,
        **model_info,
    }


def run_webcam_frame(
    folder: Path, index: int, time_s: float, image: np.ndarray, checkpoint, options: Options
) -> dict:
    """Score one webcam frame (BGR) of a session folder; rows carry ``index`` and ``time_s``.

    Only the last three annotated frames are kept on disk (the page shows the latest).
    """
    model, meta = checkpoint
    still = folder / "webcam_input.png"
    cv2.imwrite(str(still), image)
    try:
        predict([str(still)], (model, meta), folder, options, annotate="none")
    except NothingPredicted:
        pass
    rows = json.loads((folder / "predictions.json").read_text())["rows"]
    for row in rows:
        row.update(file="webcam", frame=index, time_s=round(time_s, 3))
    drawn = annotate(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), [_as_csv_row(r) for r in rows])
    name = f"webcam_{index:05d}.jpg"
    cv2.imwrite(str(folder / name), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    (folder / f"webcam_{index - 3:05d}.jpg").unlink(missing_ok=True)
    found = any(r["valence"] is not None for r in rows)
    return {
        "session": folder.name,
        "frame": index,
        "time_s": round(time_s, 3),
        "rows": rows,
        "image": f"results/{folder.name}/{name}",
        "message": None if found else f"no face found in webcam frame {index}",
        "trained_on": trained_on(meta),
    }
