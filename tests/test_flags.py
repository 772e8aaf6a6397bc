"""Flags are honoured or refused in one line; config.yaml records what ran."""

import pytest
import standins
import yaml

from hoconv.app.cli import main
from hoconv.app.engine import read_checkpoint

TINY = ["--data", "test_tiny", "--model", "test_tiny2d", "--batch-size", "8", "--workers", "0",
        "--device", "cpu", "--no-progress", "--lr", "0.01"]  # fmt: skip


@pytest.fixture(autouse=True)
def _standins(tmp_path, monkeypatch):
    standins.install()
    monkeypatch.chdir(tmp_path)


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"hoconv {argv[0]}: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_resume_refuses_a_new_lr_and_config_records_what_ran(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--out", "run"]) == 0
    line = _error(["train", "--resume", "--lr", "0.5", "--epochs", "2", "--out", "run"], capsys)
    assert "--lr 0.5 differs from the run's 0.01" in line and "--init" in line
    line = _error(["train", "--resume", "--width", "7", "--epochs", "2", "--out", "run"], capsys)
    assert "--model-arg/--width" in line and "'width': 7" in line
    assert read_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # nothing ran
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["lr"] == 0.01
    # what a resumed run may change is honoured and recorded
    assert main(["train", "--resume", "--epochs", "2", "--lr", "0.01", "--out", "run"]) == 0
    assert read_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["epochs"] == 2 and saved["lr"] == 0.01


def test_init_must_match_model_and_task(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "1", "--out", "a"]) == 0
    line = _error(["train", *TINY, "--model", "test_tiny_cp", "--epochs", "1",
                   "--init", "a/best.pt", "--out", "b"], capsys)  # fmt: skip
    assert "holds model 'test_tiny2d', not --model 'test_tiny_cp'" in line
    line = _error(["train", *TINY, "--task", "classify", "--data-arg", "classify=true",
                   "--epochs", "1", "--init", "a/best.pt", "--out", "c"], capsys)  # fmt: skip
    assert "trained for task 'affect'" in line and "'classify'" in line
    assert main(["train", *TINY, "--epochs", "1", "--init", "a/best.pt", "--out", "d"]) == 0


@pytest.mark.parametrize("command", ["transduce", "prune", "compress", "export"])
def test_out_equal_to_checkpoint_is_refused(command, tmp_path, capsys):
    assert main(["train", *TINY, "--model", "test_tiny_cp", "--epochs", "1", "--out", "a"]) == 0
    before = (tmp_path / "a" / "best.pt").read_bytes()
    extra = {"compress": ["--budget", "params=0.5", "--input-shape", "1,3,8,8"],
             "export": ["--format", "onnx"]}.get(command, [])  # fmt: skip
    line = _error([command, "--checkpoint", "a/best.pt", *extra, "--out", "./a/best.pt"], capsys)
    assert "is the --checkpoint it is made from" in line
    assert (tmp_path / "a" / "best.pt").read_bytes() == before
