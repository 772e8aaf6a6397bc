"""`hoconv predict`: valence / arousal (and expression) per face and frame of images and videos.

Writes DIR/predictions.csv and DIR/predictions.json (one row per frame and face; frames
without a face are rows with a reason), per image a full-resolution annotated JPEG and one
captioned contact sheet, and per video a V/A plot over time and an annotated WebM video
(or contact sheet). Faces are found with MTCNN (weights shipped inside hoconv, offline):
5 landmarks, a similarity alignment to a canonical crop framed like the training crops
(margin as at training), and, on videos, a full detection every --detect-every frames
with landmark tracking in between. `--detector haar` is the OpenCV fallback.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` subcommand."""
    p = subparsers.add_parser("predict", help="predict on images / videos", description=__doc__)
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders, video files (mp4/avi/mkv/...) or a webcam index",
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint of hoconv train / transduce")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-detect", action="store_true", help="inputs are already face crops")
    p.add_argument("--all-faces", action="store_true", help="every face (tracked), not the largest")
    p.add_argument(
        "--detector",
        default="mtcnn",
        choices=("mtcnn", "haar"),
        help="face detector: MTCNN with aligned 5-point crops, or the Haar fallback",
    )
    p.add_argument(
        "--min-face",
        type=float,
        metavar="PX",
        help="MTCNN: smallest face side in pixels (default: 8%% of the frame's short side)",
    )
    p.add_argument(
        "--detect-every",
        type=int,
        default=10,
        metavar="K",
        help="videos, MTCNN: full detection every K frames, landmark tracking in between",
    )
    p.add_argument(
        "--cascade",
        default="alt2",
        choices=("alt2", "alt", "default"),
        help="OpenCV frontal-face Haar cascade",
    )
    p.add_argument(
        "--smooth",
        type=int,
        default=0,
        metavar="FRAMES",
        help="centred moving average over this many frames per face (0: off)",
    )
    p.add_argument(
        "--step",
        type=int,
        metavar="FRAMES",
        help="temporal models: frames between clip starts (default: half a clip)",
    )
    p.add_argument("--image-size", type=int, help="override the checkpoint's training image size")
    p.add_argument("--clip-length", type=int, help="override the checkpoint's clip length")
    p.add_argument("--margin", type=float, help="override the face-crop margin (default: training)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-frames", type=int, help="read at most this many frames per video/webcam")
    p.add_argument(
        "--annotate",
        default="video",
        choices=("video", "sheet", "none"),
        help="annotated WebM (VP8) per video, a contact sheet, or nothing",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    names = (
        "smooth",
        "step",
        "image_size",
        "clip_length",
        "batch_size",
        "max_frames",
        "detect_every",
    )
    for name in names:
        value = getattr(args, name)
        if value is not None and value < (0 if name == "smooth" else 1):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag}: expected a {'non-negative' if name == 'smooth' else 'positive'} "
                f"integer, got {value}"
            )
    if args.min_face is not None and args.min_face < 12:
        raise ValueError(f"--min-face: expected at least 12 pixels, got {args.min_face}")
    if args.margin is not None and args.margin < 0:
        raise ValueError(f"--margin: expected >= 0, got {args.margin}")


def run(args: argparse.Namespace) -> int:
    """Predict, print a summary and the warnings; exit 0 when any frame was scored."""
    from hoconv.app.predict import Options, predict

    _check(args)
    options = Options(
        detect=not args.no_detect, all_faces=args.all_faces, cascade=args.cascade, detector=args.detector,
        min_face=args.min_face, detect_every=args.detect_every,
        smooth=args.smooth, step=args.step, batch_size=args.batch_size,
        max_frames=args.max_frames, progress=False if args.no_progress else None,
    )  # fmt: skip
    summary = predict(
        args.inputs, args.checkpoint, args.out, options, annotate=args.annotate,
        image_size=args.image_size, clip_length=args.clip_length, margin=args.margin,
        device=args.device, webcam_frames=args.max_frames or 300,
    )  # fmt: skip
    for line in summary["warnings"]:
        print(f"hoconv predict: warning: {line}", file=sys.stderr)
    print(
        f"{summary['inputs']} input(s), {summary['frames']} frame(s): {summary['scored']} face(s) "
        f"scored, {summary['no_face']} frame(s) without a face; written to {args.out}"
    )
    return 0
