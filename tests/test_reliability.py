"""Flags that would silently run nothing are refused with one line and exit 2."""

import pytest

from hoconv.app.cli import main


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--max-train-batches", "-1", "--out", "o"], "--max-train-batches"),
        (["train", "--max-train-batches", "0", "--out", "o"], "--max-train-batches"),
        (["search", "--trials", "0", "--out", "o"], "--trials"),
    ],
)
def test_nonpositive_counts_refused(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert flag in err[-1] and "expected an integer >= 1" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "o").exists()
