"""Malformed inputs walked through the CLI: exit code, exactly one ``hoconv CMD: error:``
line (the last on stderr), no traceback, and the offending path named."""

from __future__ import annotations

import csv
import errno
import json
import os

import cv2
import numpy as np
import pytest
import standins
import torch

from hoconv.app.cli import main

RNG = np.random.default_rng(0)
HEADER = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
          "facial_landmarks", "expression", "valence", "arousal"]  # fmt: skip
TINY = ["--model", "test_tiny2d", "--epochs", "2", "--batch-size", "4", "--workers", "0",
        "--device", "cpu", "--no-progress"]  # fmt: skip


@pytest.fixture(autouse=True)
def _setup(tmp_path, monkeypatch):
    standins.install()
    monkeypatch.chdir(tmp_path)


def affectnet(root, rows=8, corrupt=(), csv_text=None):
    """An original-release AffectNet tree; rows in ``corrupt`` get a text file as image."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    for name in ("training.csv", "validation.csv"):
        if csv_text is not None:
            (lists / name).write_bytes(csv_text)
            continue
        with open(lists / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(HEADER)
            for i in range(rows):
                w.writerow([f"s/{i}.jpg", 0, 0, 16, 16, "", i % 8, 0.1 * (i % 5), -0.1])
    (root / "Manually_Annotated_Images" / "s").mkdir(parents=True)
    for i in range(rows):
        path = root / "Manually_Annotated_Images" / "s" / f"{i}.jpg"
        if i in corrupt:
            path.write_text("not a jpeg")
        else:
            cv2.imwrite(str(path), RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return root


def afew(root, frames_of: dict):
    """AFEW-VA clips: ``{clip: JSON document}`` (PNGs written for numeric keys)."""
    for clip, doc in frames_of.items():
        (root / clip).mkdir(parents=True)
        (root / clip / f"{clip}.json").write_text(json.dumps(doc))
        for key in doc.get("frames", {}) if isinstance(doc, dict) else ():
            img = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            cv2.imwrite(str(root / clip / f"{key}.png"), img)
    return root


def _frames(keys):
    return {k: {"valence": 1, "arousal": -2, "landmarks": [[4, 4]] * 68} for k in keys}


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err.strip().splitlines()


def check_one_line(code, err, command, want_code, *needles):
    text = "\n".join(err)
    assert code == want_code, text[-2000:]
    assert "Traceback" not in text, text[-2000:]
    prefix = f"hoconv {command}: error:"
    assert [line for line in err if line.startswith(prefix)] == [err[-1]], text[-2000:]
    for needle in needles:
        assert str(needle) in err[-1], (needle, err[-1])


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _tiny_train(out="run"):
    return ["train", "--data", "test_tiny", *TINY, "--out", out]


# Each case: (id, prepare(tmp_path, monkeypatch) -> (argv, needles), exit code).
def case_on_error_raise(tmp, mp):
    root = affectnet(tmp / "an", corrupt=(0, 1, 2, 3, 4, 5, 6, 7))
    argv = ["train", "--data", "affectnet", "--data-root", str(root), *TINY,
            "--data-arg", "on_error=raise", "--data-arg", "val_fraction=0.5", "--out", "run"]  # fmt: skip
    return argv, ["unreadable file", str(root / "Manually_Annotated_Images" / "s")]


def case_on_error_raise_in_worker(tmp, mp):
    argv, needles = case_on_error_raise(tmp, mp)
    argv[argv.index("--workers") + 1] = "1"
    argv += ["--num-outputs", "10"]  # no probe of sample 0: the worker meets the file
    return argv, needles


def case_disk_full(tmp, mp):
    mp.setattr(torch, "save", _disk_full)
    return _tiny_train(), ["No space left on device", os.path.join("run", "best.pt")]


def case_out_is_file(tmp, mp):
    (tmp / "afile").write_text("x")
    return _tiny_train("afile"), ["--out: afile is a file"]


def case_out_foreign_folder(tmp, mp):
    (tmp / "src").mkdir()
    (tmp / "src" / "notes.txt").write_text("x")
    return _tiny_train("src"), ["not a hoconv run folder"]


def case_afew_json_list(tmp, mp):
    root = afew(tmp / "afew", {"001": [1, 2, 3]})
    argv = ["train", "--data", "afew_va", "--data-root", str(root), *TINY, "--out", "run"]
    return argv, ["no readable", str(root / "001" / "001.json")]


def case_affectnet_empty_csv(tmp, mp):
    root = affectnet(tmp / "an", csv_text=b"")
    argv = ["train", "--data", "affectnet", "--data-root", str(root), *TINY, "--out", "run"]
    return argv, ["empty file", "training.csv"]


def case_affectnet_garbage_csv(tmp, mp):
    root = affectnet(tmp / "an", csv_text=bytes(RNG.integers(0, 256, 300, dtype=np.uint8)))
    argv = ["train", "--data", "affectnet", "--data-root", str(root), *TINY, "--out", "run"]
    return argv, ["training.csv"]


def case_affectnet_text_csv(tmp, mp):
    root = affectnet(tmp / "an", csv_text=b"hello,world\n1,2\n")
    argv = ["train", "--data", "affectnet", "--data-root", str(root), *TINY, "--out", "run"]
    return argv, ["training.csv", "missing columns"]


def case_image_size_zero(tmp, mp):
    return [*_tiny_train(), "--image-size", "0"], ["--image-size", "expected an integer >= 1"]


def case_image_size_tiny_synthetic(tmp, mp):
    argv = ["train", "--data", "synthetic", "--image-size", "3", "--epochs", "1", "--out", "r"]
    return argv, ["image_size must be >= 8"]


def case_resume_nothing(tmp, mp):
    return [*_tiny_train(), "--resume"], ["nothing to resume"]


def case_evaluate_garbage_checkpoint(tmp, mp):
    (tmp / "x.pt").write_bytes(b"\x00garbage")
    return ["evaluate", "--checkpoint", "x.pt", "--out", "ev"], ["x.pt", "refused"]


def case_missing_data_root(tmp, mp):
    argv = ["train", "--data", "affectnet", "--data-root", "nowhere", *TINY, "--out", "r"]
    return argv, ["nowhere"]


CASES = [
    (case_on_error_raise, 2),
    (case_on_error_raise_in_worker, 2),
    (case_disk_full, 2),
    (case_out_is_file, 2),
    (case_out_foreign_folder, 2),
    (case_afew_json_list, 2),
    (case_affectnet_empty_csv, 2),
    (case_affectnet_garbage_csv, 2),
    (case_affectnet_text_csv, 2),
    (case_image_size_zero, 2),
    (case_image_size_tiny_synthetic, 2),
    (case_resume_nothing, 2),
    (case_evaluate_garbage_checkpoint, 2),
    (case_missing_data_root, 2),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("prepare, want", CASES, ids=[c.__name__[5:] for c, _ in CASES])
def test_malformed_input_gives_one_line(prepare, want, tmp_path, monkeypatch, capsys):
    argv, needles = prepare(tmp_path, monkeypatch)
    code, err = run_cli(argv, capsys)
    check_one_line(code, err, argv[0], want, *needles)
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written file left anywhere


def test_ctrl_c_is_one_line_exit_130_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    from hoconv.app.engine import trainer

    real = trainer._train_epoch

    def interrupted(*args, **kwargs):
        if args[7] == 1:  # epoch index 1: epoch 1 is finished and saved
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", interrupted)
    out = str(tmp_path / "run")
    code, err = run_cli(_tiny_train(out), capsys)
    check_one_line(code, err, "train", 130, "interrupted (Ctrl-C)", "last.pt", "--resume")
    monkeypatch.setattr(trainer, "_train_epoch", real)
    code, err = run_cli([*_tiny_train(out), "--resume"], capsys)  # and it does continue
    assert code == 0, err


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_bad_entries_are_counted_not_fatal(tmp_path):
    """A non-numeric AFEW-VA key, a list-valued JSON, a short CSV row: counted with their
    path, every other sample loaded."""
    from hoconv.app.data import create_dataset

    docs = {f"{c:03d}": {"actor": f"a{c}", "frames": _frames(["00001", "00002"])} for c in range(3)}
    docs["000"]["frames"]["frame_x"] = {"valence": 1, "arousal": 1}
    docs["003"] = [1, 2]  # top level is a list
    root = afew(tmp_path / "afew", docs)
    total, corrupt = 0, []
    for split in ("train", "val", "test"):
        ds = create_dataset("afew_va", str(root), split=split, fractions=(1, 1, 1), verbose=False)
        total += ds.summary["loaded"]
        corrupt += [c["path"] for c in ds.summary["corrupt"]]
    assert total == 3 * 3 * 2 // 3  # every numeric frame of the 3 good clips, once per split
    assert corrupt.count(str(root / "003" / "003.json")) == 3  # read (and counted) per split
    assert f"{root / '000' / '000.json'}#frame_x" in corrupt

    an = affectnet(tmp_path / "an", rows=6)
    lines = (an / "Manually_Annotated_file_lists" / "validation.csv").read_text()
    (an / "Manually_Annotated_file_lists" / "validation.csv").write_text(lines + "s/9.jpg,1\n")
    ds = create_dataset("affectnet", str(an), split="test", verbose=False)
    assert ds.summary["loaded"] == 6
    assert [c["path"].endswith("validation.csv:8") for c in ds.summary["corrupt"]] == [True]


@pytest.mark.slow
def test_real_sigint_during_training_is_one_line_exit_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    here = Path(__file__).parent
    run = tmp_path / "run"
    argv = [sys.executable, str(here / "standin_cli.py"), "train", "--data", "test_tiny",
            *TINY, "--epochs", "1000", "--data-arg", "size=64", "--out", str(run)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(here.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    err = stderr.strip().splitlines()
    check_one_line(proc.returncode, err, "train", 130, "interrupted (Ctrl-C)", "--resume")
    assert not list(run.glob(".*.tmp"))  # an interrupted write removes its temp file
