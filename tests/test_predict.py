"""hoconv predict: synthetic faces drawn into videos / images, scored end to end.

The faces come from the procedural generator (hoconv.app.data.synth_render), drawn frontal
with a light skin tone onto a larger background: OpenCV's Haar cascade (alt2) finds every
one of them (checked below), while it misses many dark-skinned or rotated cartoon faces.
Models are tiny stand-ins with the zoo's output contract; the oracle is the model applied
directly to crops made with hoconv.app.data.faces.crop_face from the decoded frames.
"""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from serve_fixtures import frontal_face, write_checkpoint
from torch import nn

from hoconv.app.data.faces import crop_face
from hoconv.app.data.synth_render import render_face
from hoconv.app.data.transforms import frames_to_tensor, to_tensor
from hoconv.app.predict import NothingPredicted, Options, predict
from hoconv.app.predict.detect import FaceDetector, IoUTracker, iou
from hoconv.app.predict.run import moving_average, window_starts

W, H, FACE = 160, 120, 80
SIZE = 32  # training image size of the stand-in checkpoints


def face_frames(n: int, seed: int = 3, blank=(), two: bool = False) -> list[np.ndarray]:
    """``n`` RGB frames: a face moving left-right, V/A on a circle; ``blank`` frames empty."""
    ident, view, rng = frontal_face(seed)
    size = FACE // 2 if two else FACE
    out = []
    for t in range(n):
        img = np.full((H, W, 3), (90, 90, 140), np.uint8)
        if t not in blank:
            v, a = 0.6 * np.sin(2 * np.pi * t / n), 0.5 * np.cos(2 * np.pi * t / n)
            face = render_face(size, ident, view, v, a, 0.0, rng)
            x0 = (8 if two else 30) + int(10 * np.sin(t / 4))
            img[20 : 20 + size, x0 : x0 + size] = face
            if two:
                img[50 : 50 + size, x0 + 80 : x0 + 80 + size] = face
        out.append(img)
    return out


def write_video(path, frames, fourcc: str = "mp4v", fps: float = 12.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))


class Static(nn.Module):
    """(N, 3, H, W) -> (N, 10): valence, arousal, 8 expression logits."""

    def __init__(self, outputs: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, outputs)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


class Temporal(nn.Module):
    """(N, 3, T, H, W) -> (N, T, 10), temporal kernel 3: a frame's output sees its neighbours."""

    def __init__(self, clip: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv3d(3, 6, (3, 3, 3), padding=(1, 0, 0))
        self.fc = nn.Linear(6, 10)
        self.clip = clip

    def forward(self, x):
        h = torch.tanh(self.conv(x)).mean((3, 4)).transpose(1, 2)  # (N, T, 6)
        out = self.fc(h)
        return out.mean(1) if self.clip else out


def meta(mode: str = "static", task: str = "affect", clip_length: int = 8) -> dict:
    return {"model": {"name": f"standin_{mode}"},
            "config": {"task": task, "mode": mode, "data": "synthetic",
                       "data_kwargs": {"image_size": SIZE, "clip_length": clip_length}}}  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    frames = face_frames(24, blank=(20, 21, 22, 23))
    write_video(root / "talk.mp4", frames)
    write_video(root / "short.avi", face_frames(5, seed=5), fourcc="MJPG")
    write_video(root / "blank.avi", face_frames(6, blank=range(6)), fourcc="MJPG")
    (root / "empty.mp4").write_bytes(b"")
    (root / "corrupt.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "notes.xyz").write_text("not a video")
    (root / "bad.png").write_text("not an image")
    pics = root / "pics"
    pics.mkdir()
    for i, f in enumerate(face_frames(8, seed=7, blank=(5,))[3:6]):
        cv2.imwrite(str(pics / f"p{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return root


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_haar_cascade_finds_the_drawn_faces(media):
    det = FaceDetector()
    frames = decode(media / "talk.mp4")
    assert len(frames) == 24
    for t, frame in enumerate(frames):
        boxes = det(frame)
        if t >= 20:
            assert boxes == [], f"false face in blank frame {t}"
            continue
        assert len(boxes) == 1, f"frame {t}: {boxes}"
        x0 = 30 + int(10 * np.sin(t / 4))
        truth = (x0 + 0.1 * FACE, 20 + 0.1 * FACE, 0.8 * FACE, 0.8 * FACE)  # the skin ellipse
        assert iou(boxes[0], truth) > 0.5, (t, boxes[0])


def test_static_video_end_to_end_matches_direct_model(media, tmp_path):
    model = Static()
    summary = predict(
        [str(media / "talk.mp4")],
        (model, meta()),
        tmp_path,
        Options(detector="haar", progress=False),
    )
    rows = read_csv(tmp_path / "predictions.csv")
    assert [int(r["frame"]) for r in rows] == list(range(24))  # one row per frame
    assert summary["scored"] == 20 and summary["no_face"] == 4
    frames = decode(media / "talk.mp4")
    for r in rows:
        t = int(r["frame"])
        assert float(r["time_s"]) == pytest.approx(t / 12.0, abs=1e-3)
        if t >= 20:
            assert r["reason"] == "no face detected" and r["valence"] == r["box_x"] == ""
            continue
        box = [float(r[k]) for k in ("box_x", "box_y", "box_w", "box_h")]
        crop = crop_face(frames[t], box=box, margin=0.2, size=SIZE)
        with torch.no_grad():
            out = model(to_tensor(crop)[None])[0].numpy()
        probs = torch.softmax(torch.from_numpy(out[2:]), 0).numpy()
        assert float(r["valence"]) == pytest.approx(out[0], abs=1e-5)
        assert float(r["arousal"]) == pytest.approx(out[1], abs=1e-5)
        assert r["expression"] == ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust",
                                   "Anger", "Contempt")[probs.argmax()]  # fmt: skip
        assert float(r["expression_prob"]) == pytest.approx(probs.max(), abs=1e-5)
    data = json.loads((tmp_path / "predictions.json").read_text())
    assert len(data["rows"]) == 24 and data["rows"][23]["valence"] is None
    assert data["inputs"][0]["frames_read"] == 24 and data["settings"]["image_size"] == SIZE
    plot = tmp_path / "00_talk_va.png"
    assert plot.stat().st_size > 5000 and cv2.imread(str(plot)) is not None
    assert len(decode(tmp_path / "00_talk_annotated.webm")) == 24  # VP8 WebM


def test_temporal_sliding_clips_cover_every_frame(media, tmp_path):
    model = Temporal()
    predict([str(media / "talk.mp4"), str(media / "short.avi")], (model, meta("video")), tmp_path,
            Options(detector="haar", progress=False, step=4), annotate="none")  # fmt: skip
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 24 + 5
    det = FaceDetector()

    def crops(path, n):
        return np.stack(
            [crop_face(f, box=det(f)[0], margin=0.2, size=SIZE) for f in decode(path)[:n]]
        )

    # talk.mp4: 20 face frames, clip 8, step 4 -> clips at 0, 4, 8, 12; mean over the clips.
    c = crops(media / "talk.mp4", 20)
    total, count = np.zeros((20, 10)), np.zeros(20)
    with torch.no_grad():
        for s in (0, 4, 8, 12):
            total[s : s + 8] += model(frames_to_tensor(c[s : s + 8])[None])[0].numpy()
            count[s : s + 8] += 1
    expected = total / count[:, None]
    got = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows[:20]])
    np.testing.assert_allclose(got, expected[:, :2], atol=1e-5)
    # short.avi: 5 frames < one clip: padded with the last frame.
    c = crops(media / "short.avi", 5)
    clip = np.concatenate([c, np.repeat(c[-1:], 3, axis=0)])
    with torch.no_grad():
        expected = model(frames_to_tensor(clip)[None])[0, :5].numpy()
    got = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows[24:]])
    np.testing.assert_allclose(got, expected[:, :2], atol=1e-5)


def test_windows_and_smoothing():
    assert window_starts(5, 8, 4) == [0]
    assert window_starts(20, 8, 4) == [0, 4, 8, 12]
    assert window_starts(21, 8, 4) == [0, 4, 8, 12, 13]
    x = np.array([[0.0], [3.0], [6.0], [3.0]])
    np.testing.assert_allclose(moving_average(x, 3)[:, 0], [1.5, 3.0, 4.0, 4.5])


def test_smoothing_averages_neighbouring_frames(media, tmp_path):
    path = [str(media / "talk.mp4")]
    predict(
        path,
        (Static(), meta()),
        tmp_path / "raw",
        Options(detector="haar", progress=False),
        annotate="none",
    )
    predict(
        path,
        (Static(), meta()),
        tmp_path / "s",
        Options(detector="haar", progress=False, smooth=3),
        annotate="none",
    )
    raw = [float(r["valence"]) for r in read_csv(tmp_path / "raw" / "predictions.csv")[:20]]
    smooth = [float(r["valence"]) for r in read_csv(tmp_path / "s" / "predictions.csv")[:20]]
    assert smooth[10] == pytest.approx(np.mean(raw[9:12]), abs=1e-6)
    assert smooth[19] == pytest.approx(np.mean(raw[18:20]), abs=1e-6)  # no face after 19


def test_all_faces_are_tracked(tmp_path):
    frames = face_frames(6, two=True)
    write_video(tmp_path / "two.mp4", frames)
    predict([str(tmp_path / "two.mp4")], (Static(), meta()), tmp_path / "o",
            Options(detector="haar", progress=False, all_faces=True, cascade="alt2"), annotate="sheet")  # fmt: skip
    rows = read_csv(tmp_path / "o" / "predictions.csv")
    assert len(rows) == 12
    left_ids, right_ids = set(), set()
    for t in range(6):
        pair = sorted((r for r in rows if int(r["frame"]) == t), key=lambda r: int(r["box_x"]))
        assert len(pair) == 2, f"frame {t}: {pair}"
        left_ids.add(pair[0]["face"])
        right_ids.add(pair[1]["face"])
    assert len(left_ids) == len(right_ids) == 1 and left_ids != right_ids  # ids follow the faces
    assert (tmp_path / "o" / "00_two_sheet.png").exists()
    tracker = IoUTracker()
    assert tracker.update([(0, 0, 10, 10), (50, 50, 10, 10)]) == [0, 1]
    assert tracker.update([(51, 50, 10, 10), (1, 0, 10, 10)]) == [1, 0]
    assert tracker.update([(100, 100, 5, 5)]) == [2]


def test_images_folder_and_no_detect(media, tmp_path):
    predict(
        [str(media / "pics")],
        (Static(), meta()),
        tmp_path / "a",
        Options(detector="haar", progress=False),
    )
    rows = read_csv(tmp_path / "a" / "predictions.csv")
    assert [r["file"].rsplit("/", 1)[-1] for r in rows] == ["p0.png", "p1.png", "p2.png"]
    assert [r["reason"] for r in rows] == ["", "", "no face detected"]
    assert rows[0]["time_s"] == "" and (tmp_path / "a" / "images_sheet.png").exists()
    # --no-detect: the whole image is the crop (resized, as the data sets do).
    model = Static()
    predict([str(media / "pics" / "p2.png")], (model, meta()), tmp_path / "b",
            Options(detector="haar", progress=False, detect=False))  # fmt: skip
    row = read_csv(tmp_path / "b" / "predictions.csv")[0]
    image = cv2.cvtColor(cv2.imread(str(media / "pics" / "p2.png")), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        out = model(to_tensor(crop_face(image, size=SIZE))[None])[0]
    assert float(row["valence"]) == pytest.approx(float(out[0]), abs=1e-5)
    assert (row["box_w"], row["box_h"]) == (str(W), str(H))


def test_bad_inputs_are_reported_and_good_ones_kept(media, tmp_path):
    names = ("missing.mp4", "empty.mp4", "corrupt.avi", "notes.xyz", "bad.png", "short.avi")
    inputs = [str(media / n) for n in names]
    summary = predict(
        inputs, (Static(), meta()), tmp_path, Options(detector="haar", progress=False)
    )
    rows = read_csv(tmp_path / "predictions.csv")
    by_file = {}
    for r in rows:
        by_file.setdefault(r["file"].rsplit("/", 1)[-1], []).append(r)
    assert "zero-length" in by_file["empty.mp4"][0]["reason"]
    assert "corrupt" in by_file["corrupt.avi"][0]["reason"] or "unreadable" in by_file[
        "corrupt.avi"][0]["reason"]  # fmt: skip
    assert "unsupported format '.xyz'" in by_file["notes.xyz"][0]["reason"]
    assert "no such file" in by_file["missing.mp4"][0]["reason"]
    assert len(by_file["short.avi"]) == 5 and summary["scored"] == 5
    assert "unreadable image" in by_file["bad.png"][0]["reason"]
    assert len(summary["warnings"]) == 6 and all("\n" not in w for w in summary["warnings"])
    assert f"no such file: {media / 'missing.mp4'}" in summary["warnings"]


def test_synthetic_checkpoint_warns_once_and_real_data_does_not(media, tmp_path):
    from hoconv.app.predict.model import SYNTHETIC_WARNING

    path, opts = [str(media / "short.avi")], Options(progress=False)
    warned = predict(path, (Static(), meta()), tmp_path / "a", opts)["warnings"]
    assert warned.count(SYNTHETIC_WARNING) == 1
    assert "AffectNet" in SYNTHETIC_WARNING and "AFEW-VA" in SYNTHETIC_WARNING
    real = meta()
    real["config"]["data"] = "affectnet"
    assert (
        SYNTHETIC_WARNING not in predict(path, (Static(), real), tmp_path / "b", opts)["warnings"]
    )


def test_missing_input_alone_says_no_such_file(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(NothingPredicted, match=f"^no such file: {missing}$"):
        predict([missing], (Static(), meta()), tmp_path / "out", Options(progress=False))


def test_webcam_without_camera_is_one_line_without_opencv_warnings(tmp_path, capfd):
    with pytest.raises(NothingPredicted):
        predict(["57"], (Static(), meta()), tmp_path, Options(progress=False), webcam_frames=2)
    captured = capfd.readouterr()
    (row,) = read_csv(tmp_path / "predictions.csv")
    assert row["reason"] == "webcam:57: unreadable webcam (OpenCV cannot open it)"
    assert "WARN" not in captured.err and "VIDEOIO" not in captured.err


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ({"name": "cp_resnet18_2d"}, "cp_resnet18_2d"),
        ({"name": "cp_resnet18_2d", "transductions": [{"dims": 1}]}, "cp_resnet18_2d->3d"),
        ({"name": "net", "transductions": [{"dims": 1}, {"dims": 1}]}, "net+2d"),
    ],
)
def test_transduced_model_has_its_own_display_name(spec, name):
    from hoconv.app.predict.model import model_display_name

    assert model_display_name(spec) == name


def test_nothing_scored_is_an_error_with_outputs_kept(media, tmp_path):
    with pytest.raises(NothingPredicted, match="--no-detect"):
        predict(
            [str(media / "blank.avi")],
            (Static(), meta()),
            tmp_path,
            Options(detector="haar", progress=False),
        )
    rows = read_csv(tmp_path / "predictions.csv")
    assert len(rows) == 6 and {r["reason"] for r in rows} == {"no face detected"}
    with pytest.raises(NothingPredicted):
        predict([str(media / "empty.mp4")], (Static(), meta()), tmp_path / "b")


@pytest.mark.parametrize(
    ("model", "info", "match"),
    [
        (Static(), meta(task="classify"), "affect"),
        (Static(outputs=1), meta(), "1 output"),
        (Temporal(clip=True), meta("video"), "clip-level"),
        (nn.Sequential(nn.Conv1d(3, 2, 1)), meta(), "1-D"),
    ],
)
def test_wrong_kind_of_checkpoint(media, tmp_path, model, info, match):
    with pytest.raises(ValueError, match=match):
        predict([str(media / "short.avi")], (model, info), tmp_path)


def test_predict_command(media, tmp_path, monkeypatch, capsys):
    import hoconv.app.predict as hp
    from hoconv.app import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("predict", "export"))
    monkeypatch.setattr(hp, "load_checkpoint", lambda path, device="cpu": (Static(), meta()))
    out = tmp_path / "o"
    argv = ["predict", "--detector", "haar", str(media / "talk.mp4"), str(media / "missing.avi"), "--checkpoint",
            "ck.pt", "--out", str(out), "--no-progress", "--smooth", "3"]  # fmt: skip
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "20 face(s) scored, 4 frame(s) without a face" in captured.out
    assert (
        "warning: " in captured.err
        and f"warning: no such file: {media / 'missing.avi'}" in captured.err
    )
    assert len(read_csv(out / "predictions.csv")) == 24 + 1
    assert cli.main(["predict", "--detector", "haar", str(media / "blank.avi"), "--checkpoint", "ck.pt", "--out",
                     str(tmp_path / "b")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("hoconv predict: error: nothing could be scored") and "\n" not in err
    assert cli.main([*argv, "--smooth", "-1"]) == 2
    assert "--smooth" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cp_resnet18_2d", "cp_resnet18_3d"])
def test_zoo_checkpoint_through_the_cli(media, tmp_path, capsys, name):
    """A real checkpoint file (engine format) of a zoo model, predicted through `hoconv`."""
    from hoconv.app import cli

    write_checkpoint(tmp_path / "ck.pt", name, image_size=SIZE)
    mode = "video" if name.endswith("3d") else "static"
    out = tmp_path / "o"
    argv = ["predict", "--detector", "haar", str(media / "talk.mp4"), "--checkpoint", str(tmp_path / "ck.pt"),
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == 24 and sum(r["valence"] != "" for r in rows) == 20
    settings = json.loads((out / "predictions.json").read_text())["settings"]
    assert settings["mode"] == mode and settings["model"] == name
    assert settings["image_size"] == SIZE and settings["num_outputs"] == 10


def test_truncated_video_keeps_the_frames_it_has(media, tmp_path):
    write_video(tmp_path / "long.avi", face_frames(12), fourcc="MJPG")
    data = (tmp_path / "long.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: int(len(data) * 0.6)])
    summary = predict([str(tmp_path / "cut.avi")], (Static(), meta()), tmp_path / "o",
                      Options(detector="haar", progress=False), annotate="none")  # fmt: skip
    rows = read_csv(tmp_path / "o" / "predictions.csv")
    assert 0 < len(rows) < 12 and summary["scored"] == len(rows)
    assert any(f"read {len(rows)} of the 12 frames" in w for w in summary["warnings"])


def test_transduced_model_predicts_the_image_model_frame_by_frame(media, tmp_path):
    """A 2-D zoo model transduced with the delta ("center") init is frame-wise: its sliding
    clips must give exactly the 2-D model's per-frame predictions."""
    models = pytest.importorskip("hoconv.models")
    import hoconv

    image_model = models.create_model("cp_resnet18_2d", width=4, num_outputs=10).eval()
    video_model = hoconv.transduce(image_model, dims=1, kernel_size=3, init="center").eval()
    video_model.data_dim = 3  # as hoconv.app.engine's align_data_dim does after transduce
    path = [str(media / "talk.mp4")]
    opts = Options(detector="haar", progress=False)
    predict(path, (image_model, meta()), tmp_path / "a", opts, annotate="none")
    predict(
        path, (video_model, meta("video", clip_length=6)), tmp_path / "b", opts, annotate="none"
    )
    a, b = (
        read_csv(tmp_path / "a" / "predictions.csv"),
        read_csv(tmp_path / "b" / "predictions.csv"),
    )
    for ra, rb in zip(a[:20], b[:20]):
        assert float(rb["valence"]) == pytest.approx(float(ra["valence"]), abs=1e-5)
        assert float(rb["arousal"]) == pytest.approx(float(ra["arousal"]), abs=1e-5)
        assert rb["expression"] == ra["expression"]
