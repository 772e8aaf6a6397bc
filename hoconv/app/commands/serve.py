"""`hoconv serve`: a local web page for predictions (upload an image / video, or a webcam).

The page shows the annotated frames, valence / arousal over time per face track, the
circumplex (V/A on the unit circle) and a table of per-frame rows, from a checkpoint chosen
on the page. Uploads are checked (extension, size, content that decodes) and saved under
server-made names inside --upload-dir, the only folder results are served from. Binds to
127.0.0.1 (this machine only) unless --host says otherwise. Needs Flask:
`pip install -e ".[serve]"`.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` subcommand."""
    p = subparsers.add_parser("serve", help="a local web page for predictions", description=__doc__)
    p.add_argument("--checkpoint", nargs="+", metavar="FILE", help="checkpoint(s) to offer")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="offer every *.pt under DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument(
        "--upload-dir",
        metavar="DIR",
        help="folder for uploads and results (default: a new temporary folder, printed)",
    )
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest upload, in MB")
    p.add_argument("--max-frames", type=int, default=300, help="frames scored per video")
    p.add_argument("--detector", default="mtcnn", choices=("mtcnn", "haar"), help="face detector")
    p.add_argument("--all-faces", action="store_true", help="every face (tracked), not the largest")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`~hoconv.app.serve.ServeConfig` of the parsed flags (checks them)."""
    from hoconv.app.predict import Options
    from hoconv.app.serve import ServeConfig
    from hoconv.app.serve.jobs import Checkpoints, find_checkpoints

    if not args.checkpoint and not args.checkpoint_dir:
        raise ValueError("expected --checkpoint FILE [FILE ...] and/or --checkpoint-dir DIR")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: expected 0 .. 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb: expected > 0, got {args.max_upload_mb}")
    if args.max_frames < 1:
        raise ValueError(f"--max-frames: expected a positive integer, got {args.max_frames}")
    paths = find_checkpoints(args.checkpoint, args.checkpoint_dir)
    upload_dir = Path(args.upload_dir or tempfile.mkdtemp(prefix="hoconv-serve-"))
    options = Options(detector=args.detector, all_faces=args.all_faces, progress=False,
                      max_frames=args.max_frames)  # fmt: skip
    return ServeConfig(Checkpoints(paths, args.device), upload_dir, args.max_upload_mb, options)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    try:
        from hoconv.app.serve import create_app
    except ImportError as err:
        raise ValueError(f'serve needs Flask ({err}); pip install -e ".[serve]"') from err
    config = build_config(args)
    app = create_app(config)
    if not _is_loopback(args.host):
        print(f"hoconv serve: warning: listening on {args.host}: other machines can reach the "
              "page and upload files", file=sys.stderr)  # fmt: skip
    where = f"open http://{args.host}:{args.port}/" if args.port else "the address is below"
    print(f"hoconv serve: {len(config.checkpoints.names)} checkpoint(s); uploads in "
          f"{config.upload_dir}; {where} (Ctrl-C to stop)", flush=True)  # fmt: skip
    app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
    return 0
