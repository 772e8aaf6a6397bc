"""Uploads of ``hoconv serve``: type and content checks, server-made names, safe paths.

An upload is accepted only when its extension is a known image or video extension AND its
content is one: images must decode (OpenCV), videos must open and yield a frame. The
client's file name is never used as a path: each upload gets a folder named by a random
hex job id inside the upload folder, holding ``input<ext>`` (the extension lower-cased from
the allow-list); the name is kept for display only, stripped to safe characters.
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hoconv.app.predict.video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Source,
    SourceError,
    open_source,
)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
RESULT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,120}$")
MAX_PIXELS = 40_000_000  # refuse decoded images above 40 megapixels


class UploadError(ValueError):
    """A refused upload; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """A checked upload saved in its own job folder.

    Attributes:
        job: random hex job id (the folder name under the upload folder).
        folder: the job folder.
        path: the saved input file (``folder / "input<ext>"``).
        kind: ``"image"`` or ``"video"``.
        display_name: the client's file name, reduced to safe characters (display only).
    """

    job: str
    folder: Path
    path: Path
    kind: str
    display_name: str


def display_name(filename: str | None) -> str:
    """The last component of a client file name, reduced to ``[A-Za-z0-9_.-]`` (<= 80)."""
    last = re.split(r"[\\/]", filename or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", last).lstrip(".")
    return cleaned[:80] or "upload"


def kind_of(filename: str | None) -> tuple[str, str]:
    """``(kind, ext)`` from a client file name's extension.

    Raises:
        UploadError: 415 for an extension that is neither an image nor a video one.
    """
    ext = Path(display_name(filename)).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image", ext
    if ext in VIDEO_EXTENSIONS:
        return "video", ext
    known = ", ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
    raise UploadError(
        f"unsupported file type {ext or '(no extension)'!r}: expected an image or a video "
        f"({known})",
        415,
    )


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes to ``(H, W, 3)`` BGR, refusing non-images and huge images."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None or image.size == 0:
        raise UploadError(f"{name}: not a readable image (the content does not decode)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise UploadError(
            f"{name}: image of {image.shape[1]}x{image.shape[0]} pixels is above the "
            f"{MAX_PIXELS // 1_000_000} megapixel limit"
        )
    return image


def new_job(upload_dir: Path) -> tuple[str, Path]:
    """A fresh random job id and its (created) folder inside ``upload_dir``."""
    job = secrets.token_hex(16)
    folder = upload_dir / job
    folder.mkdir(parents=True, exist_ok=False)
    return job, folder


def save_upload(data: bytes, filename: str | None, upload_dir: Path) -> Upload:
    """Check ``data`` (type from the name, content sniffed) and save it under a new job.

    Raises:
        UploadError: empty file, unsupported extension (415), content that is not an
            image / video of that kind (400).
    """
    name = display_name(filename)
    kind, ext = kind_of(filename)
    if not data:
        raise UploadError(f"{name}: the file is empty")
    if kind == "image":
        decode_image(data, name)
    job, folder = new_job(upload_dir)
    path = folder / f"input{ext}"
    path.write_bytes(data)
    if kind == "video":
        try:
            open_source(Source(str(path), "video"))
        except (SourceError, OSError) as err:
            shutil.rmtree(folder, ignore_errors=True)
            reason = str(err).split(": ", 1)[-1]
            raise UploadError(f"{name}: not a readable video ({reason})") from err
    return Upload(job, folder, path, kind, name)


def result_path(upload_dir: Path, job: str, name: str) -> Path:
    """The path of result ``name`` of ``job``, only if it is a file inside the upload folder.

    Raises:
        UploadError: 404 for a malformed job id or name, or a path outside the folder.
    """
    if not JOB_ID.match(job) or not RESULT_NAME.match(name):
        raise UploadError("no such result", 404)
    root = upload_dir.resolve()
    path = (root / job / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise UploadError("no such result", 404)
    return path
