"""Old (Haar) vs new (MTCNN) face detector, side by side, interleaved, in one process.

Usage: ``python benchmarks/faces.py [--video /tmp/realdata/Megamind.avi] [--step 2]``.
Reports, per data set, the share of frames / images with at least one face found and the
mean ms per frame, each detector at 1 torch / OpenCV thread. "Face frames" of a video are
here the frames where either detector found a face (a proxy: not checked by eye).

Measured 2026-12-03, 1 thread each, load average 6.8 (video, astronaut) and 16.9 (lfw):
    Megamind.avi, every 3rd frame (90, 720x528), 89 face frames by either detector:
        haar   84 found (94.4 %)   533 ms/frame     mtcnn  89 (100.0 %)   343 ms/frame
    frames 111-136 (tilted faces): haar 9/26, mtcnn 26/26; frame 120: haar no, mtcnn yes
    lfw_subset 100 faces (25 -> 100 px): haar 88, mtcnn 98; 100 non-faces: 0 false hits each
    astronaut: both find the face (haar 805 ms, mtcnn 376 ms)
Far from the 15 ms/frame target; timings are inflated by the shared machine's load.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch

from hoconv.predict.detect import FaceDetector
from hoconv.predict.mtcnn import MTCNN


def video_frames(path: str, step: int) -> list[np.ndarray]:
    cap, frames, k = cv2.VideoCapture(path), [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if k % step == 0:
            frames.append(np.ascontiguousarray(frame[:, :, ::-1]))
        k += 1
    return frames


def compare(name: str, images: list[np.ndarray], detectors: dict) -> None:
    found = {k: [] for k in detectors}
    ms = {k: 0.0 for k in detectors}
    for image in images:
        for key, det in detectors.items():
            t = time.perf_counter()
            found[key].append(len(det(image)) > 0)
            ms[key] += (time.perf_counter() - t) * 1e3
    either = np.logical_or.reduce([np.array(v) for v in found.values()])
    h, w = images[0].shape[:2]
    print(f"{name}: {len(images)} frames {w}x{h}, {either.sum()} with a face by either")
    for key in detectors:
        hit = np.array(found[key])
        print(
            f"  {key:6s} found {hit.sum():4d} ({100 * hit[either].mean():5.1f} % of face frames)"
            f"  {ms[key] / len(images):7.1f} ms/frame"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", default="/tmp/realdata/Megamind.avi")
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--min-face", type=float, default=0.08)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    detectors = {"haar": FaceDetector(), "mtcnn": MTCNN(min_face=args.min_face)}
    compare("video", video_frames(args.video, args.step), detectors)
    try:
        from skimage import data
    except ImportError:
        return
    lfw = [np.repeat(f[:, :, None] * 255, 3, 2).astype(np.uint8) for f in data.lfw_subset()]
    lfw = [cv2.resize(f, (100, 100), interpolation=cv2.INTER_CUBIC) for f in lfw]
    compare("lfw_subset faces (first 100; 25 px -> 100 px)", lfw[:100], detectors)
    compare("lfw_subset non-faces (last 100: any hit is a false positive)", lfw[100:], detectors)
    compare("astronaut", [data.astronaut()], detectors)


if __name__ == "__main__":
    main()
