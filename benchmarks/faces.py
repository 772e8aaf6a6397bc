"""Face detection for video predict: old vs new configuration, interleaved, in one process.

Usage::

    python benchmarks/faces.py [--video /tmp/realdata/Megamind.avi] [--threads 1]
    python benchmarks/faces.py --tracks /tmp/realdata/Megamind.avi /tmp/realdata/vtest.avi

Compared on every frame, in turn, on the same frames (each frame made 1280 x 720 by
resizing Megamind's 720 x 528 to 982 x 720 and padding it left and right with black):

* ``haar``: OpenCV's Haar cascade on every frame (the fallback detector);
* ``old``: full MTCNN on every frame, smallest face 8 % of the short side (58 px at 720p),
  the configuration of the previous session;
* ``new``: :class:`~hoconv.app.predict.track.VideoFaces` (what ``hoconv predict`` runs on
  videos): full MTCNN every ``--detect-every`` frames with the smallest face ``--min-face``
  pixels, O-Net alone on the previous boxes in between, a full detection when a face is lost.

"Face frames" are the frames where ``old`` finds a face (checked by eye on frames 0, 60,
120, 200: right). Reported: faces found, % of face frames, the tilted frames 111-136, ms per
frame (wall clock, and CPU time of this process: the machine is shared, so the CPU time is
the better estimate of the cost on idle cores), and the IoU of the largest face's box with
``old``'s. ``--tracks`` counts the track ids ``--all-faces`` gives on whole videos.

Measured 2026-12-03 14:00-14:17 UTC, 1 thread, load average 23-31 on the 2 shared cores
(``old`` runs on the current code: one-downscale pyramid and OpenCV NMS):
    270 frames 1280x720, 269 face frames (old finds a face)
      haar  252 ( 93.7 %)  tilted 13/26  1454.9 ms/frame wall  97.7 ms/frame cpu
      old   269 (100.0 %)  tilted 26/26   948.8 ms/frame wall  64.7 ms/frame cpu
      new   269 (100.0 %)  tilted 26/26   169.3 ms/frame wall  12.6 ms/frame cpu
            (IoU of new's largest box vs old's: mean 0.88, min 0.56; 38 full detections)
    --tracks, default settings: Megamind.avi 4 ids (3 people, 3 shots: one id per person
    per shot); vtest.avi (150 frames, --min-face 16): 5 faces, 3 ids (its faces are ~10 px)
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import torch

from hoconv.app.predict.detect import FaceDetector
from hoconv.app.predict.mtcnn import MTCNN
from hoconv.app.predict.track import VideoFaces, box_iou


def to_720p(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(720, 1280, 3)``: resized to 720 px high, padded to 1280 wide."""
    h, w = frame.shape[:2]
    width = min(1280, round(w * 720 / h))
    small = cv2.resize(frame, (width, 720), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((720, 1280, 3), np.uint8)
    x0 = (1280 - width) // 2
    out[:, x0 : x0 + width] = small
    return out


def video_frames(path: str, hd: bool = True) -> list[np.ndarray]:
    """Every frame of a video as RGB (made 720p when ``hd``)."""
    if not os.path.exists(path):
        raise SystemExit(f"no such file: {path}")
    cap, frames = cv2.VideoCapture(path), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        frames.append(to_720p(rgb) if hd else rgb)
    return frames


def _largest(found) -> tuple | None:
    if not len(found):
        return None
    first = found[0]
    if isinstance(first, tuple) and len(first) == 2:  # VideoFaces: (id, face)
        first = first[1]
    if hasattr(first, "box"):
        return first.box
    x, y, w, h = first  # Haar: (x, y, w, h)
    return (x, y, x + w, y + h)


def run_interleaved(frames: list[np.ndarray], configs: dict) -> dict:
    """Each config on each frame in turn: largest boxes, wall and CPU seconds."""
    boxes = {k: [] for k in configs}
    wall = dict.fromkeys(configs, 0.0)
    cpu = dict.fromkeys(configs, 0.0)
    for frame in frames:
        for key, det in configs.items():
            t, c = time.perf_counter(), time.process_time()
            found = det(frame)
            wall[key] += time.perf_counter() - t
            cpu[key] += time.process_time() - c
            boxes[key].append(_largest(found))
    return {"boxes": boxes, "wall": wall, "cpu": cpu}


def report(frames: list[np.ndarray], res: dict, configs: dict, tilted: range) -> None:
    ref = np.array([b is not None for b in res["boxes"]["old"]])
    h, w = frames[0].shape[:2]
    print(f"{len(frames)} frames {w}x{h}, {ref.sum()} face frames (old finds a face)")
    for key in configs:
        hit = np.array([b is not None for b in res["boxes"][key]])
        pairs = zip(res["boxes"][key], res["boxes"]["old"])
        ious = [box_iou(a, b) for a, b in pairs if a is not None and b is not None]
        tilt = hit[tilted.start : tilted.stop].sum()
        full = getattr(configs[key], "full_detections", len(frames))
        print(
            f"  {key:5s} {hit[ref].sum():4d} ({100 * hit[ref].mean():5.1f} %)"
            f"  tilted {tilt}/{len(tilted)}"
            f"  {1e3 * res['wall'][key] / len(frames):6.1f} ms/frame wall"
            f"  {1e3 * res['cpu'][key] / len(frames):6.1f} ms/frame cpu"
            f"  IoU vs old {np.mean(ious):.2f} (min {np.min(ious):.2f})  full detections {full}"
        )
    for key in configs:
        if key != "old":
            print(f"  old / {key} time: wall {res['wall']['old'] / res['wall'][key]:.1f}x,"
                  f" cpu {res['cpu']['old'] / res['cpu'][key]:.1f}x")  # fmt: skip


def count_tracks(path: str, min_face: float | None, detect_every: int, n: int | None) -> None:
    """Track ids and their lengths with ``--all-faces`` settings on a video (``n`` frames)."""
    frames = video_frames(path, hd=False)[:n]
    stream = VideoFaces(MTCNN(min_face_px=min_face), detect_every=detect_every)
    lengths: dict[int, int] = {}
    faces = 0
    for frame in frames:
        for tid, _ in stream(frame):
            lengths[tid] = lengths.get(tid, 0) + 1
            faces += 1
    long = sorted((n for n in lengths.values()), reverse=True)
    print(f"{path}: {len(frames)} frames, {faces} faces, {len(lengths)} track ids;"
          f" frames per track {long}")  # fmt: skip


def stills() -> None:
    """Haar vs MTCNN on scikit-image's lfw_subset and astronaut (the previous comparison)."""
    from skimage import data

    detectors = {"haar": FaceDetector(), "mtcnn": MTCNN()}
    lfw = [np.repeat(f[:, :, None] * 255, 3, 2).astype(np.uint8) for f in data.lfw_subset()]
    lfw = [cv2.resize(f, (100, 100), interpolation=cv2.INTER_CUBIC) for f in lfw]
    sets = {"lfw faces (first 100, 25 -> 100 px)": lfw[:100],
            "lfw non-faces (last 100: hits are false)": lfw[100:], "astronaut": [data.astronaut()]}  # fmt: skip
    for name, images in sets.items():
        hits = {k: sum(len(d(im)) > 0 for im in images) for k, d in detectors.items()}
        print(
            f"{name}: {len(images)} images, found " + ", ".join(f"{k} {v}" for k, v in hits.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", default="/tmp/realdata/Megamind.avi")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-face", type=float, help="pixels (default: predict's, 8 %%)")
    parser.add_argument("--detect-every", type=int, default=10)
    parser.add_argument("--frames", type=int, help="only the first N frames")
    parser.add_argument("--no-haar", action="store_true")
    parser.add_argument("--tracks", nargs="*", help="count track ids on these videos instead")
    parser.add_argument("--stills", action="store_true", help="lfw_subset and astronaut instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(f"load average {os.getloadavg()}, {args.threads} thread(s)")
    if args.stills:
        return stills()
    if args.tracks:
        for path in args.tracks:
            count_tracks(path, args.min_face, args.detect_every, args.frames)
        return
    frames = video_frames(args.video)[: args.frames]
    configs = {} if args.no_haar else {"haar": FaceDetector()}
    configs["old"] = MTCNN(min_face_px=0.08 * 720)
    configs["new"] = VideoFaces(MTCNN(min_face_px=args.min_face), args.detect_every)
    report(frames, run_interleaved(frames, configs), configs, range(111, 137))
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
