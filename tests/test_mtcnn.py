"""MTCNN weights, NMS, alignment, tracker (the real photo: tests/test_predict_real.py)."""

import numpy as np
import pytest

from hoconv.app.predict.mtcnn import (
    MTCNN,
    Face,
    align_face,
    alignment_matrix,
    load_weights,
    nms,
    nms_reference,
    template_points,
)
from hoconv.app.predict.track import FaceTracker


def test_weights_shapes():
    w = load_weights()
    assert w["pnet.conv1.weight"].shape == (10, 3, 3, 3)
    assert w["rnet.dense4.weight"].shape == (128, 576)
    assert w["onet.dense5.weight"].shape == (256, 1152)
    assert w["onet.dense6_3.weight"].shape == (10, 256)
    assert len(w) == 13 + 16 + 21


def test_blank_image_has_no_face():
    assert MTCNN()(np.full((120, 160, 3), 128, np.uint8)) == []


def test_bad_options_and_input():
    with pytest.raises(ValueError, match="min_face"):
        MTCNN(min_face=2)
    with pytest.raises(ValueError, match="RGB"):
        MTCNN()(np.zeros((20, 20), np.uint8))


def test_nms_drops_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert sorted(nms(boxes, np.array([0.9, 0.8, 0.7]), 0.5)) == [0, 2]


def test_opencv_nms_matches_the_numpy_reference():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 200, (300, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(10, 60, (300, 2))], axis=1)
    scores = rng.uniform(0.5, 1.0, 300)
    for thresh in (0.3, 0.5, 0.7):
        kept = nms(boxes, scores, thresh)
        assert 10 < len(kept) < 300
        assert sorted(kept) == sorted(nms_reference(boxes, scores, thresh))


def test_alignment_maps_landmarks_to_template():
    rng = np.random.default_rng(0)
    size, angle, scale, shift = 96, 0.4, 2.3, np.array([40.0, 25.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = template_points(size, margin=0.2)
    src = (dst - shift) @ np.linalg.inv(rot).T  # template = rot @ src + shift
    matrix = alignment_matrix(src, size, margin=0.2)
    mapped = src @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - dst).max() < 1e-6
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    crop = align_face(image, Face((0, 0, 1, 1), 1.0, src), size)
    assert crop.shape == (size, size, 3)


def _face(x, y, side=40.0):
    marks = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]]) * side
    return Face((x, y, x + side, y + side), 0.99, marks + [x, y])


def test_tracker_keeps_id_through_gap_and_splits_two_people():
    tracker = FaceTracker(max_missed=3)
    first = tracker.update([_face(10, 10), _face(200, 10)])
    assert first == [0, 1]
    assert tracker.update([_face(205, 12), _face(13, 11)]) == [1, 0]
    for _ in range(3):  # person 1 leaves for 3 frames
        assert tracker.update([_face(15, 12)]) == [0]
    assert tracker.update([_face(16, 12), _face(208, 14)]) == [0, 1]
    for _ in range(4):
        tracker.update([_face(16, 12)])
    assert tracker.update([_face(16, 12), _face(208, 14)]) == [0, 2]  # gap too long


def test_haar_fallback_says_cascades_missing(monkeypatch):
    import cv2

    from hoconv.app.predict.detect import FaceDetector

    monkeypatch.delattr(cv2, "data", raising=False)
    with pytest.raises(FileNotFoundError, match="ships no cascades"):
        FaceDetector()


def test_unknown_detector_is_refused():
    from hoconv.app.predict.run import Options, make_detector

    with pytest.raises(ValueError, match="expected one of"):
        make_detector(Options(detector="yolo"))
    assert isinstance(make_detector(Options()), MTCNN)


def test_tracker_carry_ages_unseen_tracks_like_update():
    """``carry`` (O-Net tracking between detections) ages and drops tracks as ``update`` does."""
    tracker = FaceTracker(max_missed=1)
    assert tracker.update([_face(10, 10), _face(200, 10)]) == [0, 1]
    tracker.carry([0], [_face(12, 10)])  # track 1 unseen once: kept, missed = 1
    assert tracker.tracks[1][1] == 1 and tracker.tracks[0][1] == 0
    assert tracker.tracks[0][0].box[0] == 12  # the carried face is the new position
    tracker.carry([0], [_face(14, 10)])  # unseen a second time: past max_missed, dropped
    assert sorted(tracker.tracks) == [0]
    assert tracker.update([_face(15, 10), _face(200, 10)]) == [0, 2]
