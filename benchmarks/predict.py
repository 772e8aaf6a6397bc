"""Frames per second of `hoconv predict` on a 720p video, on CPU.

Writes a 1280x720 mp4 with a synthetic face (hoconv.app.data.synth_render, drawn frontal, about
300 px, moving), then runs the whole prediction path (decode, Haar detection on the frame
downscaled to 640 px, crop, model, CSV/JSON/plot; no annotated video) with untrained zoo
models (weights do not change the speed) and reports frames/s, plus the stages alone:
decode only, decode + detection, and the model alone on the crops.

Usage::

    PYTHONPATH=. python benchmarks/predict.py --frames 48 --width 16 --image-size 64
    PYTHONPATH=. python benchmarks/predict.py --width 64 --image-size 112   # paper width

Measured on the project's 2-core CPU shared with other jobs (load average ~7), torch
2.13, 1 thread (2 threads were ~6x slower under that load: OpenMP oversubscription),
untrained weights, zoo from the ``models`` branch:

=============================  ==========  =========  ============  ===========
model                          width/size  params     end to end    model alone
=============================  ==========  =========  ============  ===========
(decode only / + Haar detect)  -           -          404 / 33 fps  -
cp_resnet18_2d                 64 / 112    11.2 M     10.0 fps      20.4 fps
cp_resnet18_3d (clip 16, 8)    64 / 112    11.2 M     3.6 fps       3.9 fps
cp_resnet18_2d                 16 / 64     0.70 M     35.4 fps      199 fps
cp_resnet18_3d (clip 16, 8)    16 / 64     0.72 M     18.0 fps      31.8 fps
=============================  ==========  =========  ============  ===========

A 3-D model scores clips of ``--clip-length`` frames every ``--step`` frames (default half a
clip), so each frame goes through the network ``clip_length / step`` times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from hoconv.app.data.synth_render import render_face, sample_identity, sample_view
from hoconv.app.predict import Options, predict
from hoconv.app.predict.detect import FaceDetector
from hoconv.app.predict.model import Scorer
from hoconv.app.predict.video import Source, iter_frames, open_source


def write_720p(path: Path, frames: int, fps: float = 30.0) -> None:
    """A 1280x720 video of one moving synthetic face."""
    rng = np.random.default_rng(0)
    ident = sample_identity(rng)
    ident["skin"] = np.array([225.0, 190.0, 160.0])
    view = sample_view(rng)
    view.update(roll=0.0, yaw=0.0, dx=0.0, dy=0.0, clutter=0, light=0.1, noise=2.0, scale=0.36)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1280, 720))
    for t in range(frames):
        img = np.full((720, 1280, 3), (90, 100, 140), np.uint8)
        v, a = 0.6 * np.sin(t / 10), 0.5 * np.cos(t / 13)
        face = render_face(320, ident, view, v, a, 0.0, rng)
        x0 = 400 + int(120 * np.sin(t / 15))
        img[200:520, x0 : x0 + 320] = face
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()


def stage_rates(path: Path, frames: int) -> dict:
    """frames/s of decoding alone and of decoding + detection."""
    src = open_source(Source(str(path), "video"))
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_frames(src))
    decode = n / (time.perf_counter() - t0)
    det = FaceDetector()
    t0 = time.perf_counter()
    found = sum(len(det(img)) > 0 for _, _, img in iter_frames(src))
    detect = n / (time.perf_counter() - t0)
    return {"decode_fps": decode, "decode_detect_fps": detect, "detected": f"{found}/{n}"}


def bench_model(name: str, args: argparse.Namespace, video: Path, out: Path) -> dict:
    """End-to-end frames/s of one zoo model, and the model alone on crops."""
    from hoconv.models import create_model  # the zoo (its own block: first-party once merged)

    model = create_model(name, width=args.width, num_outputs=10).eval()
    kwargs = {"image_size": args.image_size, "clip_length": args.clip_length}
    meta = {"model": {"name": name}, "config": {"task": "affect", "data_kwargs": kwargs}}
    opts = Options(progress=False, step=args.step, batch_size=args.batch_size)
    t0 = time.perf_counter()
    summary = predict([str(video)], (model, meta), out / name, opts, annotate="none")
    total = time.perf_counter() - t0
    scorer = Scorer(model, meta)
    s = args.image_size
    if scorer.temporal:
        x = np.zeros((1, args.clip_length, s, s, 3), np.uint8)
        per_call, fn = args.clip_length, scorer.score_clips
    else:
        x = np.zeros((args.batch_size, s, s, 3), np.uint8)
        per_call, fn = args.batch_size, scorer.score_images
    fn(x)  # warm up
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        fn(x)
    model_fps = reps * per_call / (time.perf_counter() - t0)
    if scorer.temporal:  # each frame is in clip_length / step clips
        model_fps /= args.clip_length / (args.step or max(1, args.clip_length // 2))
    params = sum(p.numel() for p in model.parameters())
    return {"model": name, "params": params, "frames": summary["frames"],
            "scored": summary["scored"], "end_to_end_fps": summary["frames"] / total,
            "model_only_fps": model_fps}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--models", nargs="+", default=["cp_resnet18_2d", "cp_resnet18_3d"])
    p.add_argument("--width", type=int, default=16, help="ResNet width (paper: 64)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--clip-length", type=int, default=16)
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, width {args.width}, "
          f"image {args.image_size}px, clip {args.clip_length}, {args.frames} frames 1280x720")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "face720p.mp4"
        write_720p(video, args.frames)
        rates = stage_rates(video, args.frames)
        print(f"decode only {rates['decode_fps']:.1f} fps; decode + Haar detection "
              f"{rates['decode_detect_fps']:.1f} fps (face found in {rates['detected']} frames)")  # fmt: skip
        for name in args.models:
            r = bench_model(name, args, video, Path(tmp))
            print(f"{r['model']:>16}: {r['params'] / 1e6:.2f} M params, end to end "
                  f"{r['end_to_end_fps']:.1f} fps ({r['scored']}/{r['frames']} frames scored), "
                  f"model alone {r['model_only_fps']:.1f} fps")  # fmt: skip


if __name__ == "__main__":
    main()
