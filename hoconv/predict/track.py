"""Face tracker: one id per person through a shot (IoU + landmark distance, gap tolerance)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hoconv.predict.mtcnn import Face


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
        for tid, (last, missed) in list(self.tracks.items()):
            if tid not in ids:
                if missed >= self.max_missed:
                    del self.tracks[tid]
                else:
                    self.tracks[tid] = (last, missed + 1)
        for i, tid in enumerate(ids):
            self.tracks[tid] = (faces[i], 0)
        return [int(t) for t in ids]
