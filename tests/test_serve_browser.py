"""hoconv serve end to end in a real headless browser (Debian's chromium + chromedriver).

The server runs in a thread on a free port; Selenium uploads a video, waits for the
results and checks that the curves, the circumplex and the table are drawn; then a fake
camera (chromium's test pattern, no face) streams webcam frames. Skips only when chromium,
chromedriver or selenium is missing. ``HOCONV_SCREENSHOTS=DIR`` keeps the screenshots.
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("flask")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip(
        "needs chromium and chromedriver on PATH (Debian: apt-get install chromium "
        "chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="needs selenium (pip install selenium)"
)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
from serve_fixtures import face_image, png_bytes, write_checkpoint, write_video  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from hoconv.app.predict import Options  # noqa: E402
from hoconv.app.serve import ServeConfig, create_app  # noqa: E402
from hoconv.app.serve.jobs import Checkpoints  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    config = ServeConfig(Checkpoints({"tiny.pt": write_checkpoint(root / "tiny.pt")}),
                         root / "uploads", max_upload_mb=5.0,
                         options=Options(progress=False, max_frames=8))  # fmt: skip
    server = make_server("127.0.0.1", 0, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join(5)


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1300,1500", "--use-fake-device-for-media-stream",
                 "--use-fake-ui-for-media-stream"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _screenshot(driver, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("HOCONV_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    return path


def _wait_text(driver, element_id: str, words: str, timeout: float = 40.0) -> None:
    WebDriverWait(driver, timeout).until(
        lambda d: words in d.find_element(By.ID, element_id).text,
        message=f"#{element_id} never said {words!r}",
    )


def test_upload_video_shows_curves_circumplex_and_table(browser, url, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=8)
    browser.get(url)
    assert "hoconv serve" in browser.title
    browser.find_element(By.ID, "file").send_keys(str(video))
    browser.find_element(By.ID, "submit").click()
    _wait_text(browser, "status", "done:")
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
    assert len(rows) == 8  # one row per frame
    cells = rows[0].find_elements(By.TAG_NAME, "td")
    assert cells[0].text == "0" and cells[1].text == "0.000"
    scored = [r for r in rows if r.find_elements(By.TAG_NAME, "td")[4].text]
    assert len(scored) >= 5
    assert all(-1 <= float(r.find_elements(By.TAG_NAME, "td")[4].text) <= 1 for r in scored)
    paths = browser.find_elements(By.CSS_SELECTOR, "#curves path.curve-valence")
    assert paths and paths[0].get_attribute("d").count("L") >= 3  # a drawn line, not a dot
    assert browser.find_elements(By.CSS_SELECTOR, "#curves path.curve-arousal")
    assert browser.find_element(By.ID, "curves").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#circumplex circle.va-point")) == len(scored)
    frame = browser.find_element(By.ID, "frame")
    assert browser.execute_script("return arguments[0].naturalWidth", frame) == 240
    assert len(browser.find_elements(By.CSS_SELECTOR, "#thumbs img")) >= 5
    assert "synthetic data set" in browser.find_element(By.ID, "warnings").text
    _check_video_or_still(browser)
    _screenshot(browser, tmp_path, "serve_video.png")
    errors = [e["message"] for e in browser.get_log("browser")
              if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]  # fmt: skip
    assert errors == []  # no script error, nothing blocked by the page's CSP


def _check_video_or_still(driver) -> None:
    """The annotated video if this browser plays its codec (the curves' cursor follows it),
    else the annotated still; never neither."""
    video = driver.find_element(By.ID, "annotated-video")
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script(
            "return arguments[0].readyState >= 2 || !!arguments[0].error", video
        ),  # fmt: skip
        message="the annotated video neither loaded nor failed",
    )
    if driver.execute_script("return !!arguments[0].error", video):
        assert not video.is_displayed() and driver.find_element(By.ID, "frame").is_displayed()
        return
    assert video.is_displayed() and not driver.find_element(By.ID, "frame").is_displayed()
    driver.execute_script("arguments[0].currentTime = 0.3", video)
    cursor = "#curves line.cursor"
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, cursor).get_attribute("visibility") == "visible"
    )


def test_playable_annotated_video_moves_the_cursor(browser, url, tmp_path, monkeypatch):
    """A WebM beside predict's outputs (as a browser-playable annotated video) is played."""
    from hoconv.app.serve import jobs

    real_predict = jobs.predict

    def predict_and_webm(inputs, *args, **kwargs):
        summary = real_predict(inputs, *args, **kwargs)
        cap = cv2.VideoCapture(inputs[0])
        out = cv2.VideoWriter(str(Path(args[1]) / "00_input_annotated.webm"),
                              cv2.VideoWriter_fourcc(*"VP80"), 8.0, (240, 180))  # fmt: skip
        ok, frame = cap.read()
        while ok:
            out.write(frame)
            ok, frame = cap.read()
        out.release()
        return summary

    monkeypatch.setattr(jobs, "predict", predict_and_webm)
    video = write_video(tmp_path / "clip.mp4", frames=8)
    browser.get(url)
    browser.find_element(By.ID, "file").send_keys(str(video))
    browser.find_element(By.ID, "submit").click()
    _wait_text(browser, "status", "done:")
    player = browser.find_element(By.ID, "annotated-video")
    assert player.get_attribute("src").endswith("00_input_annotated.webm")
    WebDriverWait(browser, 10).until(lambda d: player.is_displayed(), message="video not shown")
    _check_video_or_still(browser)
    browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")[4].click()  # seeks to frame 4
    WebDriverWait(browser, 10).until(
        lambda d: abs(d.execute_script("return arguments[0].currentTime", player) - 4.5 / 8) < 0.01
    )
    _screenshot(browser, tmp_path, "serve_video_player.png")


def test_bad_file_gets_a_message_then_an_image_its_results(browser, url, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    browser.get(url)
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.ID, "submit").click()
    _wait_text(browser, "status", "not a readable image")
    assert "notes.png" in browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "results").is_displayed()
    good = tmp_path / "face.png"
    good.write_bytes(png_bytes(face_image(0)))
    browser.find_element(By.ID, "file").send_keys(str(good))
    browser.find_element(By.ID, "submit").click()
    _wait_text(browser, "status", "done: 1 face(s) scored in 1 frame(s) of face.png")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "#circumplex circle.va-point")) == 1
    assert not browser.find_element(By.ID, "curves").is_displayed()  # a still: no time axis


def test_fake_webcam_streams_frames(browser, url, tmp_path):
    browser.get(url)
    browser.find_element(By.ID, "webcam-start").click()
    WebDriverWait(browser, 40).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tbody tr")) >= 2,
        message="no webcam rows arrived",
    )
    first = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")[0].text
    assert first.startswith("0 ")  # frame 0 at time 0.xxx
    assert "webcam frame" in browser.find_element(By.ID, "frame-caption").text
    src = browser.find_element(By.ID, "frame").get_attribute("src")
    with urllib.request.urlopen(src, timeout=5) as res:
        drawn = cv2.imdecode(np.frombuffer(res.read(), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape[:2] == (480, 640) and drawn[..., 1].mean() > 60  # the green test pattern
    _screenshot(browser, tmp_path, "serve_webcam.png")
    browser.find_element(By.ID, "webcam-stop").click()
    _wait_text(browser, "status", "webcam stopped")
