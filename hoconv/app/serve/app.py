"""The Flask application of ``hoconv serve``.

Routes:

* ``GET /``: the page (templates/index.html, static/app.js; nothing from a CDN).
* ``GET /api/checkpoints``: the checkpoint names offered.
* ``POST /api/predict``: multipart ``file`` (image or video) and ``checkpoint``; checks
  and saves the upload, queues the job and answers 202 ``{"job", "state"}`` (or
  ``{"error": ...}`` with a 4xx for a refused upload).
* ``GET /api/jobs/<job>``: ``{"state": "queued" | "running", "elapsed_s"}`` while it
  runs, then ``{"state": "done", "result": <payload of hoconv.app.serve.jobs.run_job>}`` or
  ``{"state": "error", "error": ...}``.
* ``POST /api/webcam``: multipart ``frame`` (a JPEG / PNG still from the browser's
  camera), ``checkpoint``, ``time_s`` and, after the first frame, ``session`` (the id the
  server returned); answers :func:`hoconv.app.serve.jobs.run_webcam_frame`'s payload.
* ``GET /results/<job>/<name>``: a file of a job, only from inside the upload folder.

Jobs run in background threads, one prediction at a time (a lock), so a shared CPU is not
oversubscribed and a long video does not hold an HTTP request open.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, jsonify, render_template, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from hoconv.app.predict import Options
from hoconv.app.serve.jobs import Checkpoints, run_job, run_webcam_frame
from hoconv.app.serve.uploads import (
    JOB_ID,
    Upload,
    UploadError,
    decode_image,
    new_job,
    result_path,
    save_upload,
)

MAX_WEBCAM_FRAMES = 3600
MAX_JOBS_KEPT = 200
CSP = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'"
LOG = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Settings of one server.

    Attributes:
        checkpoints: the checkpoints offered.
        upload_dir: where uploads and results are written (and the only place served).
        max_upload_mb: largest accepted request body, in MiB.
        options: prediction options (detector, all faces, max frames per video, ...).
    """

    checkpoints: Checkpoints
    upload_dir: Path
    max_upload_mb: float = 50.0
    options: Options = field(default_factory=lambda: Options(progress=False, max_frames=300))


class JobBoard:
    """Upload jobs run one at a time in background threads; their states, by job id.

    Args:
        lock: held while a prediction runs (shared with the webcam route).
        options: prediction options.
    """

    def __init__(self, lock: threading.Lock, options: Options) -> None:
        self.lock, self.options = lock, options
        self.states: dict[str, dict] = {}

    def submit(self, upload: Upload, checkpoint) -> dict:
        """Queue ``upload``; returns its first state."""
        state = {"job": upload.job, "state": "queued", "submitted": time.monotonic()}
        self.states[upload.job] = state
        for old in list(self.states)[:-MAX_JOBS_KEPT]:
            self.states.pop(old, None)
        threading.Thread(target=self._run, args=(upload, checkpoint, state), daemon=True).start()
        return {"job": upload.job, "state": "queued"}

    def _run(self, upload: Upload, checkpoint, state: dict) -> None:
        with self.lock:
            state["state"] = "running"
            try:
                state["result"] = run_job(upload, checkpoint, self.options)
                state["state"] = "done"
            except UploadError as err:
                state.update(state="error", error=str(err))
            except Exception as err:  # noqa: BLE001 - the page must hear of any failure
                LOG.exception("job %s failed", upload.job)
                state.update(
                    state="error", error=f"prediction failed ({type(err).__name__}: {err})"
                )
            finally:
                state["finished"] = time.monotonic()

    def get(self, job: str) -> dict:
        """The public state of ``job`` (404 if unknown)."""
        state = self.states.get(job) if JOB_ID.match(job) else None
        if state is None:
            raise UploadError("no such job", 404)
        public = {k: v for k, v in state.items() if k not in ("submitted", "finished")}
        end = state.get("finished", time.monotonic())
        public["elapsed_s"] = round(end - state["submitted"], 1)
        return public


def _error(message: str, status: int):
    return jsonify({"error": message}), status


def create_app(config: ServeConfig) -> Flask:
    """A Flask app serving the page and its API for ``config``."""
    if config.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb: expected > 0, got {config.max_upload_mb}")
    config.upload_dir.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(config.max_upload_mb * 1024 * 1024)
    app.config["HOCONV_SERVE"] = config
    lock = threading.Lock()
    sessions: dict[str, int] = {}  # webcam session -> next frame index
    board = JobBoard(lock, config.options)
    _add_error_handlers(app, config.max_upload_mb)

    @app.after_request
    def local_only(response):
        # Scripts, styles and images from this server only (no CDN), no content sniffing.
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.get("/")
    def index():
        return render_template("index.html", checkpoints=config.checkpoints.names,
                               max_upload_mb=config.max_upload_mb)  # fmt: skip

    @app.get("/api/checkpoints")
    def checkpoints():
        return jsonify({"checkpoints": config.checkpoints.names,
                        "max_upload_mb": config.max_upload_mb})  # fmt: skip

    @app.post("/api/predict")
    def predict_upload():
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise UploadError("no file in the upload: choose an image or a video")
        checkpoint = config.checkpoints.get(request.form.get("checkpoint", ""))
        saved = save_upload(upload.read(), upload.filename, config.upload_dir)
        return jsonify(board.submit(saved, checkpoint)), 202

    @app.get("/api/jobs/<job>")
    def job_state(job: str):
        return jsonify(board.get(job))

    @app.post("/api/webcam")
    def webcam_frame():
        frame = request.files.get("frame")
        if frame is None:
            raise UploadError("no frame in the request (field 'frame')")
        checkpoint = config.checkpoints.get(request.form.get("checkpoint", ""))
        image = decode_image(frame.read(), "webcam frame")
        time_s = _float_field("time_s")
        with lock:
            session = request.form.get("session") or ""
            if session not in sessions:
                if session:
                    raise UploadError("unknown webcam session; start the camera again", 404)
                session, _ = new_job(config.upload_dir)
                sessions[session] = 0
            index = sessions[session]
            if index >= MAX_WEBCAM_FRAMES:
                raise UploadError(f"webcam session full ({MAX_WEBCAM_FRAMES} frames); restart it")
            sessions[session] = index + 1
            folder = config.upload_dir / session
            return jsonify(
                run_webcam_frame(folder, index, time_s, image, checkpoint, config.options)
            )

    @app.get("/results/<job>/<name>")
    def result(job: str, name: str):
        if not JOB_ID.match(job):
            raise UploadError("no such result", 404)
        return send_file(result_path(config.upload_dir, job, name), max_age=0)

    return app


def _add_error_handlers(app: Flask, max_upload_mb: float) -> None:
    """Refusals as ``{"error": ...}`` JSON with their 4xx status (the page shows the line)."""

    @app.errorhandler(UploadError)
    def upload_error(err: UploadError):
        return _error(str(err), err.status)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err):
        return _error(f"file too large: the limit is {max_upload_mb:g} MB (--max-upload-mb)", 413)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if request.path.startswith(("/api/", "/results/")):
            return _error(f"{err.code} {err.name}: {err.description}", err.code or 500)
        return err


def _float_field(name: str) -> float:
    """A non-negative float form field (0 when absent)."""
    text = request.form.get(name, "0") or "0"
    try:
        value = float(text)
    except ValueError:
        raise UploadError(f"{name}: expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise UploadError(f"{name}: expected >= 0, got {text!r}")
    return value
