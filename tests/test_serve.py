"""hoconv serve: the Flask app through its test client (uploads, checks, results, webcam)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("flask")

from serve_fixtures import face_image, png_bytes, write_checkpoint, write_video  # noqa: E402

from hoconv.app.predict import Options  # noqa: E402
from hoconv.app.serve import ServeConfig, create_app  # noqa: E402
from hoconv.app.serve.jobs import Checkpoints, find_checkpoints  # noqa: E402
from hoconv.app.serve.uploads import result_path  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


@pytest.fixture
def server(ckpt, tmp_path):
    upload_dir = tmp_path / "uploads"
    config = ServeConfig(Checkpoints({"tiny": ckpt}), upload_dir, max_upload_mb=1.0,
                         options=Options(progress=False, max_frames=6))  # fmt: skip
    return create_app(config).test_client(), upload_dir


class Answer:
    """A refused upload's response, or a finished job's state (status 200 / 500)."""

    def __init__(self, status_code: int, payload: dict) -> None:
        self.status_code, self.payload = status_code, payload

    def get_json(self) -> dict:
        return self.payload


def post(client, data: bytes, name: str, checkpoint: str = "tiny", timeout: float = 60.0):
    """Upload, then poll the job until it is done; the job payload (or the refusal)."""
    form = {"file": (io.BytesIO(data), name), "checkpoint": checkpoint}
    res = client.post("/api/predict", data=form, content_type="multipart/form-data")
    if res.status_code != 202:
        return Answer(res.status_code, res.get_json())
    job = res.get_json()["job"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job}").get_json()
        assert state["job"] == job and state["elapsed_s"] >= 0
        if state["state"] == "done":
            return Answer(200, state["result"])
        if state["state"] == "error":
            return Answer(500, state)
        time.sleep(0.05)
    raise AssertionError(f"job {job} still {state['state']} after {timeout} s")


def saved_files(upload_dir):
    return sorted(p.relative_to(upload_dir) for p in upload_dir.rglob("*") if p.is_file())


def test_page_lists_checkpoints_and_uses_only_local_assets(server):
    client, _ = server
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<option value="tiny">' in html and "http" not in html.replace("http://www.w3", "")
    for asset in ("/static/app.js", "/static/plots.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/api/checkpoints").get_json()["checkpoints"] == ["tiny"]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert page.headers["X-Content-Type-Options"] == "nosniff"


def test_good_image_gives_rows_frames_and_files(server):
    client, upload_dir = server
    res = post(client, png_bytes(face_image(0)), "me.png")
    assert res.status_code == 200, res.get_json()
    job = res.get_json()
    assert job["kind"] == "image" and job["frames"] == 1 and job["scored"] == 1
    row = job["rows"][0]
    assert row["file"] == "me.png" and -1 <= row["valence"] <= 1 and row["box_w"] > 40
    assert job["message"] is None and job["trained_on"] == "synthetic"
    assert any("synthetic data set" in w for w in job["warnings"])
    assert len(job["images"]) == 1
    img = client.get("/" + job["images"][0]["url"])
    assert img.status_code == 200
    frame = cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_COLOR)
    assert frame.shape[:2] == face_image(0).shape[:2]
    names = {f["name"] for f in job["files"]}
    assert {"predictions.csv", "predictions.json"} <= names
    data = json.loads(client.get(f"/results/{job['job']}/predictions.json").data)
    assert data["rows"][0]["valence"] == pytest.approx(row["valence"])
    assert all(p.parts[0] == job["job"] for p in saved_files(upload_dir))


def test_image_without_a_face_says_so(server):
    client, _ = server
    job = post(client, png_bytes(face_image(blank=True)), "wall.png").get_json()
    assert (
        job["scored"] == 0
        and job["message"] == "no face found in any of the 1 frame(s) of wall.png"
    )
    assert job["rows"][0]["reason"] == "no face detected"


def test_video_rows_per_frame_and_max_frames(server, tmp_path):
    client, _ = server
    video = write_video(tmp_path / "clip.mp4", frames=8)
    res = post(client, video.read_bytes(), "clip.mp4")
    assert res.status_code == 200, res.get_json()
    job = res.get_json()
    assert job["kind"] == "video" and job["frames"] == 6  # the server's max_frames
    assert [r["frame"] for r in job["rows"]] == list(range(6))
    assert job["scored"] >= 4 and job["fps"] == pytest.approx(8.0)
    assert job["rows"][1]["time_s"] == pytest.approx(1 / 8, abs=1e-3)
    assert any("first 6 of 8 frames" in w for w in job["warnings"])
    assert 1 <= len(job["images"]) <= 6
    assert all(client.get("/" + i["url"]).status_code == 200 for i in job["images"])
    assert any(f["name"].endswith("_va.png") for f in job["files"])
    assert job["video"] in [f["url"] for f in job["files"]]  # the annotated video of predict
    data = client.get("/" + job["video"]).data
    (tmp_path / "annotated.bin").write_bytes(data)
    cap = cv2.VideoCapture(str(tmp_path / "annotated.bin"))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    assert decoded == 6


@pytest.mark.parametrize(
    "data, name, status, words",
    [
        (b"GIF89a not really", "anim.gif", 415, "unsupported file type '.gif'"),
        (b"#!/bin/sh\necho hi\n", "run.sh", 415, "unsupported file type '.sh'"),
        (b"", "noext", 415, "(no extension)"),
        (b"this is text, not a PNG", "fake.png", 400, "fake.png: not a readable image"),
        (os.urandom(3000), "noise.mp4", 400, "noise.mp4: not a readable video"),
        (b"", "empty.jpg", 400, "empty.jpg: the file is empty"),
    ],
)
def test_wrong_types_and_contents_are_refused(server, data, name, status, words):
    client, upload_dir = server
    res = post(client, data, name)
    assert res.status_code == status
    assert words in res.get_json()["error"]
    assert saved_files(upload_dir) == []  # nothing left behind


def test_too_large_upload_is_refused_with_413(server):
    client, upload_dir = server
    big = png_bytes(np.random.default_rng(0).integers(0, 255, (800, 800, 3), np.uint8))
    assert len(big) > 1024 * 1024
    res = post(client, big, "big.png")
    assert res.status_code == 413
    assert res.get_json()["error"] == "file too large: the limit is 1 MB (--max-upload-mb)"
    assert saved_files(upload_dir) == []


@pytest.mark.parametrize(
    "name", ["../../evil.png", "..\\..\\evil.png", "/etc/evil.png", "a/../../b.png"]
)
def test_traversal_file_names_stay_inside_the_upload_folder(server, tmp_path, name):
    client, upload_dir = server
    res = post(client, png_bytes(face_image(1)), name)
    assert res.status_code == 200, res.get_json()
    job = res.get_json()
    assert job["file"] in ("evil.png", "b.png")
    assert not list(tmp_path.glob("*.png")) and not (upload_dir.parent.parent / "evil.png").exists()
    files = saved_files(upload_dir)
    assert files and all(p.parts[0] == job["job"] and len(p.parts) == 2 for p in files)
    assert {p.name for p in files} >= {"input.png", "predictions.json"}


def test_results_only_from_the_upload_folder(server, tmp_path):
    client, upload_dir = server
    (tmp_path / "secret.txt").write_text("secret")
    job = post(client, png_bytes(face_image(2)), "a.png").get_json()["job"]
    for url in (f"/results/{job}/..%2F..%2Fsecret.txt", f"/results/{job}/../../secret.txt",
                "/results/..%2F/secret.txt", f"/results/{job}/nothing.json",
                "/results/0123/predictions.json", f"/results/{job}/.hidden"):  # fmt: skip
        res = client.get(url, follow_redirects=True)
        assert res.status_code == 404, url
        assert b"secret" not in res.data
    with pytest.raises(ValueError, match="no such result"):
        result_path(upload_dir, job, "../../secret.txt")


def test_unknown_checkpoint_and_missing_file(server):
    client, _ = server
    res = post(client, png_bytes(face_image(0)), "a.png", checkpoint="../tiny")
    assert res.status_code == 404 and "unknown checkpoint '../tiny'" in res.get_json()["error"]
    res = client.post(
        "/api/predict", data={"checkpoint": "tiny"}, content_type="multipart/form-data"
    )
    assert res.status_code == 400 and "no file in the upload" in res.get_json()["error"]


def test_webcam_frames_share_a_session(server):
    client, upload_dir = server
    sent = []
    session = None
    for i, t in enumerate((0.0, 0.4, 0.8)):
        form = {"frame": (io.BytesIO(png_bytes(face_image(i))), "f.jpg"), "checkpoint": "tiny",
                "time_s": str(t), **({"session": session} if session else {})}  # fmt: skip
        res = client.post("/api/webcam", data=form, content_type="multipart/form-data")
        assert res.status_code == 200, res.get_json()
        payload = res.get_json()
        session = payload["session"]
        sent.append(payload)
        assert client.get("/" + payload["image"]).status_code == 200
    assert [p["frame"] for p in sent] == [0, 1, 2]
    assert [p["rows"][0]["time_s"] for p in sent] == [0.0, 0.4, 0.8]
    assert all(p["rows"][0]["valence"] is not None for p in sent)
    assert len(list((upload_dir / session).glob("webcam_*.jpg"))) == 3
    form = {"frame": (io.BytesIO(b"junk"), "f.jpg"), "checkpoint": "tiny"}
    res = client.post("/api/webcam", data=form, content_type="multipart/form-data")
    assert (
        res.status_code == 400 and "webcam frame: not a readable image" in res.get_json()["error"]
    )
    form = {"frame": (io.BytesIO(png_bytes(face_image(0))), "f.jpg"), "checkpoint": "tiny",
            "session": "f" * 32}  # fmt: skip
    res = client.post("/api/webcam", data=form, content_type="multipart/form-data")
    assert res.status_code == 404 and "unknown webcam session" in res.get_json()["error"]


def test_find_checkpoints(tmp_path, ckpt):
    (tmp_path / "runs" / "img").mkdir(parents=True)
    (tmp_path / "runs" / "img" / "best.pt").write_bytes(ckpt.read_bytes())
    found = find_checkpoints([str(ckpt)], str(tmp_path / "runs"))
    assert list(found) == [str(ckpt), os.path.join("img", "best.pt")]
    with pytest.raises(FileNotFoundError, match="no such file"):
        find_checkpoints([str(tmp_path / "nope.pt")], None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.pt file"):
        find_checkpoints(None, str(tmp_path / "empty"))


def test_job_states_and_failures(server, monkeypatch):
    client, _ = server
    assert client.get("/api/jobs/" + "0" * 32).status_code == 404
    assert client.get("/api/jobs/not-a-job").status_code == 404

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("hoconv.app.serve.app.run_job", broken)
    state = post(client, png_bytes(face_image(0)), "a.png").get_json()
    assert state["state"] == "error"
    assert state["error"] == "prediction failed (RuntimeError: out of memory)"


def test_cli_refuses_bad_flags(capsys, tmp_path, ckpt):
    from hoconv.app import cli

    assert cli.main(["serve"]) == 2
    assert "expected --checkpoint FILE" in capsys.readouterr().err
    assert cli.main(["serve", "--checkpoint", str(tmp_path / "no.pt")]) == 2
    assert f"no such file: {tmp_path / 'no.pt'}" in capsys.readouterr().err
    assert cli.main(["serve", "--checkpoint", str(ckpt), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb: expected > 0" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter importing torch: 5-20 s on a loaded 2-core machine
def test_cli_serves_the_page_on_loopback(tmp_path, ckpt):
    """`hoconv serve --port 0` in a subprocess: the page answers on 127.0.0.1."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    argv = [sys.executable, "-m", "hoconv", "serve", "--checkpoint", str(ckpt), "--port", "0",
            "--upload-dir", str(tmp_path / "up")]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        url = None
        for line in proc.stderr:  # werkzeug says where it listens
            found = re.search(r"Running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the server never said where it listens"
        with urllib.request.urlopen(url + "/", timeout=10) as res:
            assert res.status == 200 and b"hoconv serve" in res.read()
        assert (tmp_path / "up").is_dir()
    finally:
        proc.terminate()
        proc.wait(10)
    assert "uploads in" in proc.stdout.read()
