"""Face tracks through a video: one id per person (IoU + landmark distance, gap tolerance).

:class:`FaceTracker` links the faces of consecutive frames; :class:`VideoFaces` finds them
cheaply: a full MTCNN detection every ``detect_every`` frames and, in between, O-Net alone
on each face's previous box (:meth:`~hoconv.app.predict.mtcnn.MTCNN.track`). A face O-Net loses
triggers a full detection of that same frame, so tracking never drops a face that the
full detector would find in it; a face that *enters* beside tracked ones waits for the
next full detection, and while no face is tracked every frame gets a full detection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hoconv.app.predict.mtcnn import MTCNN, Face, nms


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_cost(track: Face, face: Face) -> float:
    """``1 - IoU`` plus the mean landmark distance in units of the track's box side."""
    side = max(track.box[2] - track.box[0], track.box[3] - track.box[1], 1e-6)
    dist = float(np.linalg.norm(track.landmarks - face.landmarks, axis=1).mean()) / side
    return (1.0 - box_iou(track.box, face.box)) + dist


class FaceTracker:
    """Greedy lowest-cost matching of each frame's faces to live tracks.

    Args:
        max_cost: largest :func:`match_cost` that links a face to a track.
        max_missed: frames a person may be unseen and keep the id.
    """

    def __init__(self, max_cost: float = 1.2, max_missed: int = 15) -> None:
        if max_cost <= 0:
            raise ValueError(f"max_cost must be > 0, got {max_cost}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.max_cost, self.max_missed = max_cost, max_missed
        self.tracks: dict[int, tuple[Face, int]] = {}  # id -> (last face, frames missed)
        self.next_id = 0

    def update(self, faces: Sequence[Face]) -> list[int]:
        """Track ids for ``faces`` of the next frame (same order)."""
        pairs = sorted(
            (match_cost(last, face), i, tid)
            for i, face in enumerate(faces)
            for tid, (last, _) in self.tracks.items()
        )
        ids: list[int | None] = [None] * len(faces)
        for cost, i, tid in pairs:
            if cost > self.max_cost:
                break
            if ids[i] is None and tid not in ids:
                ids[i] = tid
        for i in range(len(faces)):
            if ids[i] is None:
                ids[i] = self.next_id
                self.next_id += 1
        self._age_unseen(ids)
        for i, tid in enumerate(ids):
            self.tracks[tid] = (faces[i], 0)
        return [int(t) for t in ids]

    def _age_unseen(self, ids: Sequence) -> None:
        """Tracks not in ``ids`` miss one more frame; those past ``max_missed`` are dropped."""
        for tid, (last, missed) in list(self.tracks.items()):
            if tid not in ids:
                if missed >= self.max_missed:
                    del self.tracks[tid]
                else:
                    self.tracks[tid] = (last, missed + 1)

    def carry(self, ids: Sequence[int], faces: Sequence[Face]) -> None:
        """Record ``faces`` as the new positions of tracks ``ids`` (the others miss a frame)."""
        self._age_unseen(ids)
        for tid, face in zip(ids, faces):
            self.tracks[tid] = (face, 0)


class VideoFaces:
    """Faces and track ids of consecutive frames of one video.

    Args:
        detector: the MTCNN detector.
        detect_every: frames between full detections (1: every frame).
        max_faces: keep at most this many faces (largest first; None: all).
        tracker: links faces to ids (default :class:`FaceTracker`).
    """

    def __init__(
        self,
        detector: MTCNN,
        detect_every: int = 10,
        max_faces: int | None = None,
        tracker: FaceTracker | None = None,
    ) -> None:
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detector, self.detect_every, self.max_faces = detector, detect_every, max_faces
        self.tracker = tracker or FaceTracker()
        self.live: list[tuple[int, Face]] = []  # (id, face) seen in the previous frame
        self.frame = 0
        self.full_detections = 0

    def _detect(self, image: np.ndarray) -> list[tuple[int, Face]]:
        self.full_detections += 1
        faces = self.detector(image)[: self.max_faces]
        return list(zip(self.tracker.update(faces), faces))

    def _track(self, image: np.ndarray) -> list[tuple[int, Face]] | None:
        """The live faces, moved by O-Net; None when one is lost."""
        moved = self.detector.track(image, [f for _, f in self.live])
        if any(f is None for f in moved):
            return None
        boxes = np.array([f.box for f in moved])  # (n, 4)
        keep = sorted(nms(boxes, np.array([f.score for f in moved]), 0.5))
        found = [(self.live[i][0], moved[i]) for i in keep]  # two tracks on one face: one
        self.tracker.carry([t for t, _ in found], [f for _, f in found])
        return found

    def __call__(self, image: np.ndarray) -> list[tuple[int, Face]]:
        """``(track id, face)`` of the next frame, largest face first."""
        found = None
        if self.live and self.frame % self.detect_every:
            found = self._track(image)
        if found is None:
            found = self._detect(image)
        self.frame += 1
        self.live = found
        return sorted(
            found, key=lambda p: -(p[1].box[2] - p[1].box[0]) * (p[1].box[3] - p[1].box[1])
        )
