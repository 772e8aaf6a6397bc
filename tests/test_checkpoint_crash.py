"""A run killed between the best.pt and last.pt writes resumes to a valid best.pt; failed
writes leave no temp file and keep the previous checkpoint."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import standins
import torch

from hoconv.app.engine import checkpoint as ckpt_io
from hoconv.app.engine import read_checkpoint, train

HERE = Path(__file__).parent

# The child trains 3 epochs and SIGKILLs itself right after the first best.pt write of
# epoch >= 2, i.e. before that epoch's last.pt is written.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import standins
    standins.install()
    from hoconv.app.engine import checkpoint, train
    real = checkpoint.write_checkpoint
    def write(path, ckpt):
        real(path, ckpt)
        if path.name == "best.pt" and ckpt["epoch"] >= 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return path
    checkpoint.write_checkpoint = write
    train(standins.tiny_config(epochs=3), {out!r})
    """
)


@pytest.fixture(autouse=True)
def _standins():
    standins.install()


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_sigkill_between_best_and_last_resumes_to_valid_best(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"}
    code = CHILD.format(tests=str(HERE), out=str(run))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    killed_at = read_checkpoint(run / "best.pt")["epoch"]
    assert read_checkpoint(run / "last.pt")["epoch"] == killed_at - 1  # last.pt not yet written
    (run / ".last.pt.stray.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves

    train(standins.tiny_config(epochs=3), run, resume=True)
    reference = train(standins.tiny_config(epochs=3), tmp_path / "ref")

    best, last = read_checkpoint(run / "best.pt"), read_checkpoint(run / "last.pt")
    assert last["epoch"] == 3
    assert best["epoch"] == last["best"]["epoch"] == reference["best"]["epoch"]
    _same_weights(best["state_dict"], read_checkpoint(tmp_path / "ref" / "best.pt")["state_dict"])
    assert not list(run.glob(".*.tmp"))


def test_resume_rebuilds_missing_best_from_last(tmp_path, capsys):
    run = tmp_path / "run"
    train(standins.tiny_config(epochs=2), run)
    last = read_checkpoint(run / "last.pt")
    if last["best"]["epoch"] != last["epoch"]:
        pytest.skip("the tiny run did not improve in its last epoch")
    (run / "best.pt").unlink()  # a crash of the old write order (last.pt first)
    train({**standins.tiny_config(epochs=2), "progress": True}, run, resume=True)
    assert "rebuilt" in capsys.readouterr().err
    best = read_checkpoint(run / "best.pt")
    assert best["epoch"] == last["best"]["epoch"]
    _same_weights(best["state_dict"], last["state_dict"])


def test_stale_best_that_cannot_be_rebuilt_is_reported(tmp_path):
    run = tmp_path / "run"
    train(standins.tiny_config(epochs=1), run)
    last = read_checkpoint(run / "last.pt")
    fake = {**last, "epoch": 2, "best": {**last["best"], "epoch": 1}}
    fake["digest"] = ckpt_io.digest(fake)
    (run / "best.pt").unlink()
    note = ckpt_io.restore_best(run, fake)
    assert note is not None and "cannot rebuild" in note and "missing" in note
    assert not (run / "best.pt").exists()  # never a wrong epoch's weights under best.pt


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc] PytorchStreamWriter failed writing"),
    ],
)
def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch, error):
    target = tmp_path / "last.pt"
    good = ckpt_io.make_checkpoint(
        model_spec={"name": "test_tiny2d"}, state_dict={}, epoch=1, config={}
    )
    ckpt_io.write_checkpoint(target, good)

    def full_disk(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as exc:
        ckpt_io.write_checkpoint(target, {**good, "epoch": 2})
    assert str(target) in str(exc.value) and "\n" not in str(exc.value)
    assert not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()
    assert read_checkpoint(target)["epoch"] == 1


def test_failed_log_write_leaves_no_temp(tmp_path, monkeypatch):
    from hoconv.app.engine import runlog

    def full_disk(self, *args, **kwargs):
        Path.write_bytes(self, b"par")  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        runlog.write_history(tmp_path, [{"epoch": 1, "train_loss": 0.5}])
    assert not list(tmp_path.glob(".*.tmp"))
