"""The CLI infers the task from the data set, shows defaults / choices / examples, --keep."""

from __future__ import annotations

import pytest

from hoconv.app import cli
from hoconv.app.engine import config as config_io


def test_task_follows_from_data() -> None:
    assert config_io.resolve("train", None, {"data": "cifar10"})["task"] == "classify"
    assert config_io.resolve("train", None, {"data": "jester"})["task"] == "classify"
    assert config_io.resolve("train", None, {"data": "synthetic"})["task"] == "affect"


def test_workers_default_fits_the_cores() -> None:
    import os

    workers = config_io.resolve("train", None, {})["workers"]
    assert workers == min(4, max(0, (os.cpu_count() or 1) - 1))


def test_task_mismatch_is_one_line(capsys: pytest.CaptureFixture) -> None:
    code = cli.main(["train", "--data", "cifar10", "--task", "affect", "--out", "/nonexistent/x"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "does not fit data 'cifar10'" in err and "--task classify" in err


@pytest.mark.parametrize("name", cli.COMMAND_MODULES)
def test_help_has_description_defaults_and_example(
    name: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    text = capsys.readouterr().out
    assert "Example:\n  hoconv " + name in text
    usage_end = text.index("options:")
    assert text[:usage_end].count("\n") >= 3  # usage, blank line, a description
    if name in ("train", "layers"):
        assert "(default: " in text


def test_train_help_lists_models_and_data(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "cp_resnet18_2d" in text and "cifar10" in text


def test_top_level_help_is_not_a_dispatcher(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "dispatcher" not in capsys.readouterr().out


@pytest.mark.parametrize("keep", ["best", "last", "both"])
def test_keep_checkpoints(keep: str, tmp_path) -> None:
    from hoconv.app.engine import train

    cfg = config_io.resolve(
        "train",
        None,
        {
            "model": "cp_resnet18_2d",
            "epochs": 1,
            "batch_size": 8,
            "max_train_batches": 1,
            "workers": 0,
            "progress": False,
            "keep": keep,
            "model_kwargs": {"width": 4},
            "data_kwargs": {"image_size": 16},
            "device": "cpu",
        },
    )
    train(cfg, tmp_path)
    assert (tmp_path / "best.pt").exists() == (keep in ("best", "both"))
    assert (tmp_path / "last.pt").exists() == (keep in ("last", "both"))


def test_augment_reaches_the_training_set_only() -> None:
    from hoconv.app.commands.train import resolve_config
    from hoconv.app.engine.build import make_dataset

    parser = cli.build_parser()
    args = parser.parse_args(["train", "--augment", "--out", "x", "--data-arg", "num_subjects=3",
                              "--data-arg", "images_per_subject=2", "--image-size", "16"])  # fmt: skip
    cfg = resolve_config(args)
    assert cfg["augment"] is True
    assert make_dataset(cfg, "train", training=True).augment
    assert not make_dataset(cfg, "val").augment
    default = config_io.resolve("train", None, {"data_kwargs": cfg["data_kwargs"]})
    assert default["augment"] is None and not make_dataset(default, "train", training=True).augment
    with pytest.raises(ValueError, match="augment: 'yes' is not one of"):
        config_io.resolve("train", None, {"augment": "yes"})
