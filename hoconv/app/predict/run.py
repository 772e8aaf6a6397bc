"""Score every frame of every input: detect faces, crop as at training, run the model.

A static (2-D) checkpoint scores each face crop on its own. A temporal (3-D) checkpoint
scores each face track with sliding clips of the training clip length (frames taken with
the training frame step), so every frame gets a prediction: windows overlap by
``clip_length - step`` frames and a frame's prediction is the mean over the windows that
hold it; a track shorter than one clip is padded by repeating its last frame. Tracks are
cut into segments at frames where the face is missing (no clip spans a gap).

MTCNN rows also hold ``landmarks`` (5 x, y points: eyes, nose, mouth corners), written to
the JSON and drawn on the annotated images, not to the CSV. Every frame yields at least
one row; a frame without a face is a row with empty values and a ``reason``; an input
that cannot be read is one row with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from hoconv.app.data.faces import crop_face
from hoconv.app.predict.detect import FaceDetector, IoUTracker
from hoconv.app.predict.model import Scorer
from hoconv.app.predict.mtcnn import MTCNN, Face, align_face
from hoconv.app.predict.track import FaceTracker, VideoFaces
from hoconv.app.predict.video import Source, SourceError, iter_frames, open_source

COLUMNS = (
    "file", "frame", "time_s", "face", "box_x", "box_y", "box_w", "box_h",
    "valence", "arousal", "expression", "expression_prob", "reason",
)  # fmt: skip
NO_FACE = "no face detected"


@dataclass
class Options:
    """How to predict.

    Attributes:
        detect: find faces (False: every frame is already a face crop).
        all_faces: every face of a frame (tracked), not only the largest.
        cascade: Haar cascade name (see :data:`hoconv.app.predict.detect.CASCADES`).
        detector: ``"mtcnn"`` (aligned 5-point crops, default) or ``"haar"`` (fallback).
        min_face: MTCNN's smallest face side in pixels (None: 8 % of the frame's short side,
            58 px at 720p); frames are downscaled so that it becomes P-Net's 12 px.
        detect_every: videos with MTCNN: a full detection every this many frames, O-Net
            tracking of the previous faces in between (1: full detection on every frame).
        smooth: centred moving average over this many frames per face track (<= 1: off).
        step: frames between the starts of consecutive clips (temporal models;
            None: half a clip).
        batch_size: crops (or clips) per forward pass.
        max_frames: read at most this many frames per video (None: all).
        progress: show a tqdm bar (None: only on a terminal).
    """

    detect: bool = True
    all_faces: bool = False
    cascade: str = "alt2"
    detector: str = "mtcnn"
    min_face: float | None = None
    detect_every: int = 10
    smooth: int = 0
    step: int | None = None
    batch_size: int = 32
    max_frames: int | None = None
    progress: bool | None = None


@dataclass
class SourceResult:
    """Rows of one input and what happened to it."""

    source: Source
    rows: list[dict] = field(default_factory=list)
    error: str | None = None
    frames: int = 0
    scored: int = 0
    clamped: int = 0  # valence / arousal values outside [-1, 1], clamped to it


def window_starts(n: int, length: int, step: int) -> list[int]:
    """Starts of clips of ``length`` covering ``n`` frames, ``step`` apart, last one flush."""
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, step))
    if starts[-1] + length < n:
        starts.append(n - length)
    return starts


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of ``(n, K)`` values over ``width`` frames (shrinks at the ends)."""
    if width <= 1 or len(values) < 2:
        return values
    kernel = np.ones(width)
    count = np.convolve(np.ones(len(values)), kernel, mode="same")  # (n,)
    cols = [np.convolve(values[:, k], kernel, mode="same") for k in range(values.shape[1])]
    return np.stack(cols, axis=1) / count[:, None]  # (n, K)


def _score_windows(scorer: Scorer, frames: np.ndarray, step: int, batch: int) -> np.ndarray:
    """Mean per-frame output of the sliding clips over ``(m, S, S, 3)`` frames -> ``(m, O)``."""
    m, length = len(frames), scorer.clip_length
    total = np.zeros((m, scorer.num_outputs))
    count = np.zeros(m)
    starts = window_starts(m, length, step)
    for b in range(0, len(starts), batch):
        clips = []
        for s in starts[b : b + batch]:
            clip = frames[s : s + length]
            pad = np.repeat(clip[-1:], length - len(clip), axis=0)  # repeat the last frame
            clips.append(np.concatenate([clip, pad]))
        out = scorer.score_clips(np.stack(clips))  # (B, T, O)
        for s, o in zip(starts[b : b + batch], out):
            k = min(length, m - s)
            total[s : s + k] += o[:k]
            count[s : s + k] += 1
    return total / count[:, None]


def score_segment(scorer: Scorer, crops: np.ndarray, step: int, batch: int) -> np.ndarray:
    """``(n, S, S, 3)`` consecutive crops of one face -> ``(n, O)`` (temporal models).

    With a training frame step ``k > 1`` the frames are split into ``k`` interleaved
    sequences (``i = r mod k``), each scored with contiguous clips.
    """
    out = np.zeros((len(crops), scorer.num_outputs))
    k = scorer.clip_stride
    for r in range(min(k, len(crops))):
        idx = np.arange(r, len(crops), k)
        out[idx] = _score_windows(scorer, crops[idx], step, batch)
    return out


def _box_row(source: Source, frame: int, time_s: float | None) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    row.update(file=source.path, frame=frame, time_s="" if time_s is None else round(time_s, 4))
    return row


def _face_finder(source: Source, detector, options: Options):
    """``image -> [(track id, (x, y, w, h), Face or None)]`` for the frames of ``source``.

    MTCNN on a video or webcam: :class:`VideoFaces` (tracking between full detections);
    otherwise a detection per frame, linked by a tracker with ``all_faces``.
    """
    keep = None if options.all_faces else 1
    if detector is None:
        return lambda image: [(0, (0.0, 0.0, float(image.shape[1]), float(image.shape[0])), None)]
    if isinstance(detector, MTCNN) and source.kind != "image":
        stream = VideoFaces(detector, options.detect_every, max_faces=keep)
        return lambda image: [(tid if keep is None else 0, f.xywh, f) for tid, f in stream(image)]
    if isinstance(detector, MTCNN):
        tracker = FaceTracker()

        def still(image: np.ndarray) -> list:
            faces = detector(image)[:keep]
            ids = tracker.update(faces) if options.all_faces else [0] * len(faces)
            return [(tid, f.xywh, f) for tid, f in zip(ids, faces)]

        return still
    boxes_tracker = IoUTracker()

    def haar(image: np.ndarray) -> list:
        boxes = detector(image)[:keep]
        ids = boxes_tracker.update(boxes) if options.all_faces else [0] * len(boxes)
        return [(tid, box, None) for tid, box in zip(ids, boxes)]

    return haar


class _Collector:
    """Face crops of one source; static crops are scored as soon as a batch is full."""

    def __init__(self, scorer: Scorer, batch: int) -> None:
        self.scorer, self.batch = scorer, batch
        self.tracks: dict[int, list[tuple[int, int]]] = {}  # track -> [(frame, row)]
        self.crops: dict[int, np.ndarray] = {}  # row -> (S, S, 3), until scored
        self.outputs: dict[int, np.ndarray] = {}  # row -> (O,)

    def add(self, track: int, frame: int, row: int, crop: np.ndarray) -> None:
        self.tracks.setdefault(track, []).append((frame, row))
        self.crops[row] = crop
        if not self.scorer.temporal and len(self.crops) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Score the pending crops of a static model."""
        if self.crops:
            rows = list(self.crops)
            out = self.scorer.score_images(np.stack([self.crops[r] for r in rows]))
            self.outputs.update(zip(rows, out))
            self.crops.clear()

    def segments(self) -> list[list[int]]:
        """Row indices of each run of consecutive frames of each track."""
        out = []
        for items in self.tracks.values():
            run = [items[0][1]]
            for (f0, _), (f1, r1) in zip(items, items[1:]):
                if f1 != f0 + 1:
                    out.append(run)
                    run = []
                run.append(r1)
            out.append(run)
        return out


def _fill(row: dict, out: np.ndarray, scorer: Scorer) -> None:
    row["valence"], row["arousal"] = float(out[0]), float(out[1])
    if scorer.num_outputs > 2:
        k = int(np.argmax(out[2:]))
        row["expression"] = scorer.expressions[k]
        row["expression_prob"] = float(out[2 + k])


def clamp_affect(out: np.ndarray) -> tuple[np.ndarray, int]:
    """Valence / arousal (columns 0, 1 of ``(n, O)``) clamped to [-1, 1], and how many were not.

    A tanh-bounded head never leaves the range (count 0); older, unbounded heads can.
    """
    va = out[:, :2]
    outside = int((np.abs(va) > 1.0).sum())
    return np.concatenate([np.clip(va, -1.0, 1.0), out[:, 2:]], axis=1), outside


def _finish(col: _Collector, result: SourceResult, scorer: Scorer, options: Options) -> None:
    """Temporal scoring, softmax, clamping, smoothing, and the values written into the rows."""
    if not scorer.temporal:
        col.flush()
    step = options.step or max(1, scorer.clip_length // 2)
    for seg in col.segments():
        if scorer.temporal:
            out = score_segment(
                scorer, np.stack([col.crops[r] for r in seg]), step, options.batch_size
            )
        else:
            out = np.stack([col.outputs[r] for r in seg])  # (n, O)
        if scorer.num_outputs > 2:
            logits = out[:, 2:] - out[:, 2:].max(axis=1, keepdims=True)
            probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            out = np.concatenate([out[:, :2], probs], axis=1)  # (n, 2 + K) V, A, probs
        out, outside = clamp_affect(out)
        result.clamped += outside
        out = moving_average(out, options.smooth)
        for r, o in zip(seg, out):
            _fill(result.rows[r], o, scorer)
            result.scored += 1


def predict_source(
    source: Source, scorer: Scorer, detector: FaceDetector | None, options: Options
) -> SourceResult:
    """Rows of one input (see the module docstring); never raises for a bad input."""
    result = SourceResult(source)
    if options.max_frames is not None and source.kind == "video":
        source.max_frames = options.max_frames
    try:
        open_source(source)
    except (SourceError, OSError) as err:
        result.error = str(err)
        row = dict.fromkeys(COLUMNS, "")
        row.update(file=source.path, reason=str(err))
        result.rows.append(row)
        return result
    col = _Collector(scorer, options.batch_size)
    find = _face_finder(source, detector, options)
    total = source.frame_count if source.kind != "image" else None
    frames = iter_frames(source)
    bar = tqdm(
        frames,
        total=total,
        desc=source.path[-40:],
        unit="frame",
        leave=False,
        disable=(not options.progress) if options.progress is not None else None,
    )
    for index, time_s, image in bar:
        result.frames += 1
        found = find(image)
        if not found:
            result.rows.append({**_box_row(source, index, time_s), "reason": NO_FACE})
            continue
        for track, box, face in found:
            row = _box_row(source, index, time_s)
            row.update(face=track, box_x=round(box[0]), box_y=round(box[1]),
                       box_w=round(box[2]), box_h=round(box[3]))  # fmt: skip
            if face is not None:  # JSON only (the CSV keeps COLUMNS)
                row["landmarks"] = np.round(face.landmarks, 1).tolist()
            result.rows.append(row)
            crop_box = box if detector is not None else None
            crop = _crop(image, crop_box, face, scorer)
            col.add(track, index, len(result.rows) - 1, crop)
    bar.close()
    _finish(col, result, scorer, options)
    return result


def predict_sources(sources: list[Source], scorer: Scorer, options: Options) -> list[SourceResult]:
    """:func:`predict_source` over every input with one shared detector."""
    detector = make_detector(options) if options.detect else None
    return [predict_source(s, scorer, detector, options) for s in sources]


DETECTORS = ("mtcnn", "haar")


def make_detector(options: Options) -> MTCNN | FaceDetector:
    """The face detector ``options.detector`` names (see :data:`DETECTORS`)."""
    if options.detect_every < 1:
        raise ValueError(f"detect_every: expected a positive integer, got {options.detect_every}")
    if options.detector == "mtcnn":
        return MTCNN(min_face_px=options.min_face)
    if options.detector == "haar":
        return FaceDetector(options.cascade)
    raise ValueError(f"detector: unknown {options.detector!r}; expected one of {DETECTORS}")


def _crop(image: np.ndarray, box, face: Face | None, scorer: Scorer) -> np.ndarray:
    """Aligned crop for an MTCNN face, else the training-style square box crop."""
    if face is not None:
        return align_face(image, face, scorer.image_size, margin=scorer.align_margin)
    return crop_face(image, box=box, margin=scorer.margin, size=scorer.image_size)
