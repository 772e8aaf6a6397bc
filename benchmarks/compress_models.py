"""Train the three small models that `benchmarks/compress.py` compresses (minutes on 2 CPU cores).

* ``resnet18``: ResNet-18 (width 32) on the embedded synthetic affect data, 48x48 faces.
* ``resnet18_112``: ResNet-18 at torchvision's width (64) on the same data at 112x112, 6 epochs (the
  latency=0.5 acceptance run: at 48 px every layer is so small that each factorized candidate
  measured slower than its dense conv, see README, Compress).
* ``mobilenet``: MobileNet-v2 (width 50) on a CIFAR-10-layout fixture (coloured squares, 4 classes).
* ``convnet3d``: the 3-D ConvNet (width 16) on a Jester-layout fixture (moving squares, 4 classes).
* ``convnet3d_64``: the same at the paper's width (64; 6.2 M params), the latency=0.5 acceptance
  run (at width 16 the convs are too small a share of the forward, see README, Compress).

    python benchmarks/compress_models.py --out /tmp/compress-models [--only resnet18]

Each run folder gets ``best.pt`` (``hoconv train``); the fixtures are written under ``OUT/data``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from classification_fixtures import coloured_shape, moving_square, write_cifar, write_jester  # noqa: E402

from hoconv.app.cli import main as hoconv_main  # noqa: E402

SYNTH = ["--data-arg", "num_subjects=24", "--data-arg", "images_per_subject=60"]
JESTER_CLASSES = ["Sliding Right", "Sliding Left", "Sliding Down", "Sliding Up"]


def write_jester_fixture(root: Path, clips: int = 160, size: int = 32, seed: int = 0) -> Path:
    """A Jester v1 tree of ``clips`` moving-square clips (3/4 train, 1/4 validation)."""
    rng = np.random.default_rng(seed)
    splits, frames = {"train": [], "validation": []}, {}
    for i in range(clips):
        clip, label = str(1000 + i), i % 4
        splits["train" if i < clips * 3 // 4 else "validation"].append(
            (clip, JESTER_CLASSES[label])
        )
        frames[clip] = [
            (f"{t + 1:05d}.jpg", f) for t, f in enumerate(moving_square(rng, label, 16, size))
        ]
    write_jester(str(root), JESTER_CLASSES, splits, frames)
    return root


def recipes(out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Name -> (``hoconv train`` argv, the same data options for ``hoconv compress``)."""
    cifar, jester = out / "data" / "cifar", out / "data" / "jester"
    common = ["--workers", "0", "--no-progress", "--scheduler", "none", "--seed", "0"]
    data = {
        "resnet18": ["--data", "synthetic", "--image-size", "48", *SYNTH],
        "resnet18_112": ["--data", "synthetic", "--image-size", "112", *SYNTH],
        "mobilenet": ["--data", "cifar10", "--data-root", str(cifar), "--data-arg", "val_size=200"],
        "convnet3d": ["--data", "jester", "--data-root", str(jester), "--mode", "video",
                      "--clip-length", "16", "--image-size", "32"],
    }  # fmt: skip
    data["convnet3d_64"] = data["convnet3d"]
    train = {
        "resnet18": ["--model", "resnet18_2d", "--width", "32", "--epochs", "6", "--lr", "2e-3",
                     "--batch-size", "32"],
        "resnet18_112": ["--model", "resnet18_2d", "--width", "64", "--epochs", "6", "--lr",
                         "2e-3", "--batch-size", "32"],
        "mobilenet": ["--model", "mobilenet_v2_cifar", "--width", "50", "--epochs", "3",
                      "--optimizer", "adam", "--lr", "2e-3", "--batch-size", "32"],
        "convnet3d": ["--model", "convnet3d", "--width", "16", "--epochs", "4", "--optimizer",
                      "adam", "--lr", "1e-3", "--batch-size", "8",
                      "--model-arg", "temporal_output=clip"],
    }  # fmt: skip
    train["convnet3d_64"] = [*train["convnet3d"][:3], "64", *train["convnet3d"][4:]]
    return {
        k: ([*data[k], *common, *train[k]], data[k]) for k in data
    }  # a recipe may override common


def main(argv: list[str] | None = None) -> int:
    """Write the fixtures and train the models asked for."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--only",
        action="append",
        choices=("resnet18", "resnet18_112", "mobilenet", "convnet3d", "convnet3d_64"),
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not (out / "data" / "cifar").exists():
        write_cifar(str(out / "data" / "cifar"), coloured_shape, per_batch=200, per_test=200)
    if not (out / "data" / "jester").exists():
        write_jester_fixture(out / "data" / "jester")
    for name, (train_argv, _) in recipes(out).items():
        if args.only and name not in args.only:
            continue
        code = hoconv_main(["train", *train_argv, "--out", str(out / name)])
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
