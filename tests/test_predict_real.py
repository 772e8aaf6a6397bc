"""The default detector (MTCNN) end to end on a real face: tests/data/astronaut_face.jpg.

A NASA public-domain photograph (see tests/data/PROVENANCE.md). Detection, landmarks,
alignment, the video tracker (a moving, rotating copy of the photo) and `hoconv predict`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hoconv.app.predict import Options, predict
from hoconv.app.predict.mtcnn import MTCNN, alignment_matrix, template_points
from hoconv.app.predict.track import VideoFaces, box_iou

PHOTO = Path(__file__).with_name("data") / "astronaut_face.jpg"
FACE_BOX = (93, 61, 181, 174)  # x0, y0, x1, y1 of the face, checked by eye


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)


def moving(photo: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` frames: the photo shifted right 2 px a frame and rotated by up to 8 degrees."""
    frames = []
    for t in range(n):
        m = cv2.getRotationMatrix2D((144, 144), 8 * np.sin(t / 4), 1.0)
        m[:, 2] += (2 * t - 20, t % 5)
        frames.append(cv2.warpAffine(photo, m, (288, 288), borderMode=cv2.BORDER_REPLICATE))
    return frames


def test_photo_is_small_and_documented():
    assert PHOTO.stat().st_size < 60_000
    assert "public domain" in (PHOTO.parent / "PROVENANCE.md").read_text()


def test_face_and_landmarks_found(photo):
    faces = MTCNN()(photo)
    assert len(faces) == 1 and faces[0].score > 0.95
    assert box_iou(faces[0].box, FACE_BOX) > 0.8
    eyes, nose, mouth = faces[0].landmarks[:2], faces[0].landmarks[2], faces[0].landmarks[3:]
    assert eyes[0, 0] < nose[0] < eyes[1, 0]  # left eye, nose, right eye from left to right
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()
    assert 35 < eyes[1, 0] - eyes[0, 0] < 55  # the eyes are about 44 px apart


def test_alignment_puts_real_landmarks_near_the_template(photo):
    face = MTCNN()(photo)[0]
    matrix = alignment_matrix(face.landmarks, 112, margin=0.2)
    mapped = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    error = np.abs(mapped - template_points(112, margin=0.2)).max()
    assert error < 0.06 * 112  # a similarity fits a real face's 5 points to a few pixels
    eyes = template_points(112, margin=0.2)[:2]
    expected = np.ptp(eyes[:, 0]) / np.ptp(face.landmarks[:2, 0])  # eye distance ratio
    assert abs(np.hypot(*matrix[:, 0]) / expected - 1) < 0.1
    assert abs(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))) < 5  # she holds it upright


def test_video_tracking_follows_the_face_between_full_detections(photo):
    frames = moving(photo, 16)
    stream = VideoFaces(MTCNN(), detect_every=6, max_faces=1)
    full = MTCNN()
    for frame in frames:
        found = stream(frame)
        assert len(found) == 1 and found[0][0] == 0  # one person, one id
        assert box_iou(found[0][1].box, full(frame)[0].box) > 0.75
    assert stream.full_detections == 3  # frames 0, 6, 12: no track was lost


def test_tracking_a_face_that_leaves_triggers_a_full_detection(photo):
    stream = VideoFaces(MTCNN(), detect_every=100)
    assert len(stream(photo)) == 1
    assert stream(np.full_like(photo, 128)) == []  # O-Net loses it, full detection agrees
    assert stream.full_detections == 2


def test_predict_end_to_end_with_the_default_detector(photo, tmp_path):
    from tests.test_predict import Static, meta

    video = tmp_path / "moving.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (288, 288))
    for frame in moving(photo, 12):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    summary = predict([str(PHOTO), str(video)], (Static(), meta()), out,
                      Options(progress=False, detect_every=5), annotate="video")  # fmt: skip
    assert summary["frames"] == 13 and summary["scored"] == 13
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    still = rows[0]
    box = [float(still[k]) for k in ("box_x", "box_y", "box_w", "box_h")]
    assert box_iou((box[0], box[1], box[0] + box[2], box[1] + box[3]), FACE_BOX) > 0.8
    settings = json.loads((out / "predictions.json").read_text())["settings"]
    assert settings["detector"] == "mtcnn" and settings["detect_every"] == 5


def test_aligned_crop_is_framed_like_the_loaders_box_crop(photo):
    from hoconv.app.data.faces import square_box

    face = MTCNN()(photo)[0]
    cx, cy, side = square_box(face.xywh, 0.2)  # crop_face(box, margin=0.2), as the loaders
    in_box_crop = (face.landmarks - [cx - side / 2, cy - side / 2]) / side
    in_aligned = template_points(1, margin=0.2)
    eye_ratio = np.ptp(in_box_crop[:2, 0]) / np.ptp(in_aligned[:2, 0])
    assert abs(eye_ratio - 1) < 0.1
    for part in (slice(0, 2), slice(3, 5)):  # eye line, mouth line: within 2 std of 124 faces
        assert abs(in_box_crop[part, 1].mean() - in_aligned[part, 1].mean()) < 0.06


def test_synthetic_checkpoints_align_with_the_renders_margin():
    from hoconv.app.predict.model import SYNTHETIC_MARGIN, Scorer
    from tests.test_predict import Static, meta

    assert Scorer(Static(), meta()).align_margin == SYNTHETIC_MARGIN
    assert Scorer(Static(), meta(), margin=0.3).align_margin == 0.3
    real = meta()
    real["config"]["data"] = "affectnet"
    assert Scorer(Static(), real).align_margin == Scorer(Static(), real).margin == 0.2
