"""Predict outputs: clamped valence / arousal, annotated images, contact sheet, WebM video."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from hoconv.app.predict import Options, predict
from hoconv.app.predict.draw import place_label
from hoconv.app.predict.run import clamp_affect

PHOTO = Path(__file__).with_name("data") / "astronaut_face.jpg"


class Loud(nn.Module):
    """An unbounded head: valence / arousal = +-30 x the mean of a channel, 8 zero logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        nn.init.dirac_(self.conv.weight)

    def forward(self, x):
        m = self.conv(x).mean((2, 3))  # (N, 3), in [-1, 1]
        va = torch.stack([30 * m[:, 0], -30 * m[:, 1]], 1)
        return torch.cat([va, torch.zeros(len(x), 8)], 1)


def _meta() -> dict:
    return {"model": {"name": "loud"},
            "config": {"task": "affect", "mode": "static", "data": "affectnet",
                       "data_kwargs": {"image_size": 32}}}  # fmt: skip


def test_clamp_affect_counts_values_outside_the_range():
    out = np.array([[0.5, -1.5, 3.0], [2.0, 1.0, -4.0]])
    clamped, outside = clamp_affect(out)
    assert outside == 2  # -1.5 and 2.0; the third column (an expression) is left alone
    assert np.array_equal(clamped, [[0.5, -1.0, 3.0], [1.0, 1.0, -4.0]])


def test_unbounded_head_is_clamped_counted_and_reported(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # the photo with its colours shifted: different V/A per image
        img = cv2.imread(str(PHOTO)).astype(int) + rng.integers(-60, 60, 3)
        cv2.imwrite(str(frames / f"f{i}.png"), np.clip(img, 0, 255).astype(np.uint8))
    summary = predict([str(frames)], (Loud(), _meta()), tmp_path / "out",
                      Options(progress=False, detect=False))  # fmt: skip
    data = json.loads((tmp_path / "out" / "predictions.json").read_text())
    values = np.array([[r["valence"], r["arousal"]] for r in data["rows"]])
    assert np.abs(values).max() <= 1.0
    assert summary["clamped"] == data["clamped"] == sum(i["clamped"] for i in data["inputs"])
    assert summary["clamped"] == int((np.abs(values) == 1.0).sum()) > 0
    line = [w for w in summary["warnings"] if "clamped" in w]
    assert len(line) == 1 and f"{summary['clamped']} of 6 valence/arousal values" in line[0]


def test_every_image_gets_an_annotated_copy_and_a_captioned_sheet(tmp_path):
    from tests.test_predict import Static, meta

    summary = predict([str(PHOTO)], (Static(), meta()), tmp_path, Options(progress=False))
    drawn = cv2.imread(str(tmp_path / "00_astronaut_face_annotated.jpg"))
    assert drawn.shape[:2] == (360, 360)  # 288 px enlarged so that the labels stay legible
    original = cv2.resize(cv2.imread(str(PHOTO)), (360, 360), interpolation=cv2.INTER_CUBIC)
    changed = np.abs(drawn.astype(int) - original).max(axis=2) > 60
    assert 0.01 < changed.mean() < 0.3  # box, landmarks and label drawn; the rest untouched
    sheet = cv2.imread(str(tmp_path / "images_sheet.png"))
    assert sheet.shape[1] == 360 and sheet.shape[0] > 360  # a caption band under the tile
    assert str(tmp_path / "images_sheet.png") in summary["files"]


def test_labels_do_not_overlap():
    taken = [(100, 100, 160, 160), (150, 100, 210, 160)]  # two face boxes side by side
    first = place_label((400, 400), taken[0], (120, 30), taken)
    second = place_label((400, 400), taken[1], (120, 30), taken)
    a = (*first, first[0] + 120, first[1] + 30)
    b = (*second, second[0] + 120, second[1] + 30)
    assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert a[1] + 30 <= 100  # the first goes above its face


@pytest.fixture(scope="module")
def scored_video(tmp_path_factory):
    from tests.test_predict import face_frames, write_video

    root = tmp_path_factory.mktemp("video")
    write_video(root / "talk.avi", face_frames(10), fourcc="MJPG")
    return root


def test_annotated_video_is_webm_that_decodes(scored_video, tmp_path):
    from tests.test_predict import Static, meta

    summary = predict([str(scored_video / "talk.avi")], (Static(), meta()), tmp_path,
                      Options(detector="haar", progress=False))  # fmt: skip
    video = tmp_path / "00_talk_annotated.webm"
    assert str(video) in summary["files"] and not any("encoder" in w for w in summary["warnings"])
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    assert len(frames) == 10 and frames[0].shape == (120, 160, 3)


def test_missing_webm_encoder_falls_back_with_a_clear_line(scored_video, tmp_path, monkeypatch):
    from hoconv.app.predict import outputs
    from tests.test_predict import Static, meta

    monkeypatch.setattr(outputs, "VIDEO_CODECS", (("XXXX", ".webm"), ("mp4v", ".mp4")))
    summary = predict([str(scored_video / "talk.avi")], (Static(), meta()), tmp_path,
                      Options(detector="haar", progress=False))  # fmt: skip
    assert (tmp_path / "00_talk_annotated.mp4").exists()
    assert not (tmp_path / "00_talk_annotated.webm").exists()
    line = [w for w in summary["warnings"] if "encoder" in w]
    assert len(line) == 1 and "no XXXX .webm encoder" in line[0] and "not in browsers" in line[0]
