"""`hoconv train / evaluate / search` from the command line: configs, outputs, one-line errors."""

import csv
import json
import warnings

import numpy as np
import pytest
import standins
import torch
import yaml

from hoconv.app.cli import main
from hoconv.app.commands.search import draw_trials

TINY = [
    "--data",
    "test_tiny",
    "--model",
    "test_tiny2d",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--data-arg",
    "size=16",
    "--epochs",
    "1",
]


@pytest.fixture(autouse=True)
def _standins():
    standins.install()


def assert_one_line_error(capsys, argv, match):
    """``hoconv argv`` exits 2 with one stderr line naming the command and ``match``."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"hoconv {argv[0]}: error:") and match in err, err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--data-root", "/nonexistent/affect"], "does not exist"),
        (["--data-arg", "empty=true"], "is empty"),
        (["--model", "test_tiny3d", "--mode", "static"], "3-D"),
        (["--lr", "-1"], "non-negative"),
        (["--model-arg", "nan_after_steps=0"], "non-finite training loss"),
    ],
)
def test_train_errors_are_one_line(tmp_path, capsys, extra, match):
    assert_one_line_error(capsys, ["train", *TINY, *extra, "--out", str(tmp_path / "run")], match)


def test_bad_config_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "typo.yaml").write_text("learning_rate: 0.1\n")
    assert_one_line_error(
        capsys,
        ["train", *TINY, "--config", str(tmp_path / "typo.yaml"), "--out", str(tmp_path / "r")],
        "unknown key 'learning_rate'",
    )
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert_one_line_error(
        capsys,
        ["train", *TINY, "--config", str(tmp_path / "list.yaml"), "--out", str(tmp_path / "r")],
        "mapping",
    )
    (tmp_path / "notackpt.pt").write_text("hello")
    assert_one_line_error(
        capsys,
        ["evaluate", "--checkpoint", str(tmp_path / "notackpt.pt"), "--out", str(tmp_path)],
        "refused",
    )


def test_flags_override_config_file_override_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 0.5\nweight_decay: 0.001\nmodel_kwargs: {width: 3}\n")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *TINY,
                "--config",
                str(tmp_path / "c.yaml"),
                "--lr",
                "0.02",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["lr"] == 0.02 and cfg["weight_decay"] == 0.001  # flag > file
    assert cfg["model_kwargs"]["width"] == 3 and cfg["lr_step"] == 15  # file > packaged default
    assert cfg["betas"] == [0.9, 0.999] and cfg["optimizer"] == "adam"


def test_resume_continues_a_finished_run_to_more_epochs(tmp_path):
    run = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", run]) == 0
    assert main(["train", "--out", run, "--resume", "--epochs", "2", "--no-progress"]) == 0
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [row["epoch"] for row in log] == [1, 2]


def test_evaluate_command(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 0
    ckpt = str(tmp_path / "run" / "best.pt")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                ckpt,
                "--split",
                "test",
                "--per-video",
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 16 and 0 <= metrics["valence"]["sagr"] <= 1
    assert "valence CCC" in capsys.readouterr().out
    # per-video means, recomputed from predictions.csv (test_tiny: 8 frames per video)
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv")))
    per = {}
    for r in rows:
        per.setdefault(r["video"], []).append((float(r["valence"]) - float(r["pred_valence"])) ** 2)
    want = np.mean([np.sqrt(np.mean(v)) for v in per.values()])
    assert metrics["per_video_mean"]["videos"] == len(per) == 2
    assert metrics["per_video_mean"]["valence"]["rmse"] == pytest.approx(want, rel=1e-6)
    pooled = np.sqrt(np.mean([x for v in per.values() for x in v]))
    assert metrics["valence"]["rmse"] == pytest.approx(pooled, rel=1e-6)


def test_search_draws_distinct_grid_points_and_keeps_the_best(tmp_path):
    grid = {"lr": [1e-3, 1e-2], "beta1": [0.0, 0.9], "beta2": [0.999], "weight_decay": [0.0, 0.01]}
    points = draw_trials(grid, 3, seed=1)
    assert len({tuple(p.values()) for p in points}) == 3
    assert all(p["lr"] in grid["lr"] and p["weight_decay"] in grid["weight_decay"] for p in points)
    assert len(draw_trials(grid, 100, seed=1)) == 8  # never more than the grid holds
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"grid": grid}))
    assert (
        main(
            [
                "search",
                *TINY,
                "--grid",
                str(tmp_path / "grid.yaml"),
                "--trials",
                "2",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "s" / "search.json").read_text())
    scores = [t["score"] for t in result["trials"]]
    assert len(scores) == 2 and result["best"]["score"] == max(scores)
    assert (tmp_path / "s" / f"trial_{result['best']['trial']}" / "best.pt").exists()


def _state(path):
    from hoconv.app.engine import read_checkpoint

    return read_checkpoint(path)["state_dict"]


def test_image_to_video_chain_trains_only_temporal_factors_then_all(tmp_path):
    pytest.importorskip("hoconv.transduction")
    cp = [a if a != "test_tiny2d" else "test_tiny_cp" for a in TINY]
    assert main(["train", *cp, "--out", str(tmp_path / "img")]) == 0
    assert (
        main(
            [
                "transduce",
                "--checkpoint",
                str(tmp_path / "img" / "best.pt"),
                "--out",
                str(tmp_path / "vid.pt"),
            ]
        )
        == 0
    )
    video = [*cp, "--mode", "video", "--init", str(tmp_path / "vid.pt")]
    assert main(["train", *video, "--phase", "temporal", "--out", str(tmp_path / "t")]) == 0
    before, after = _state(tmp_path / "vid.pt"), _state(tmp_path / "t" / "last.pt")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"conv.kernel_factors.0"}, changed  # the new (leading) temporal factor only
    assert (
        main(
            [
                "train",
                *video[:-1],
                str(tmp_path / "t" / "best.pt"),
                "--phase",
                "all",
                "--out",
                str(tmp_path / "all"),
            ]
        )
        == 0
    )
    final = _state(tmp_path / "all" / "last.pt")
    changed = {k for k in final if not torch.equal(after[k], final[k])}
    assert {"conv.kernel_factors.0", "conv.in_factor", "conv.out_factor", "head.weight"} <= changed


def test_lasso_shrinks_the_cp_weights(tmp_path):
    pytest.importorskip("hoconv.rank")
    cp = [a if a != "test_tiny2d" else "test_tiny_cp" for a in TINY]
    norms = []
    for gamma in ("0", "0.5"):
        assert (
            main(["train", *cp, "--lasso", gamma, "--seed", "1", "--out", str(tmp_path / gamma)])
            == 0
        )
        norms.append(float(_state(tmp_path / gamma / "last.pt")["conv.weights"].abs().sum()))
    assert norms[1] < norms[0] - 1e-3, norms


def test_proximal_lasso_reaches_exact_zeros_and_prune_removes_them(tmp_path, capsys):
    cp = [a if a != "test_tiny2d" else "test_tiny_cp" for a in TINY]
    run = tmp_path / "prox"
    args = [
        "train",
        *cp,
        "--lasso",
        "60",
        "--lr",
        "0.01",
        "--proximal",
        "--seed",
        "1",
        "--out",
        str(run),
    ]
    assert main(args) == 0
    weights = _state(run / "last.pt")["conv.weights"]
    zeros = int((weights == 0).sum())
    assert 0 < zeros, weights  # soft-thresholding gives exact zeros, not small values
    pruned = tmp_path / "pruned.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a layer whose every weight is zero keeps one (and warns)
        assert main(["prune", "--checkpoint", str(run / "last.pt"), "--out", str(pruned)]) == 0
    assert len(_state(pruned)["conv.weights"]) == max(1, len(weights) - zeros)
    capsys.readouterr()


def test_wrong_data_layout_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("hoconv.app.data.afew_va")
    (tmp_path / "root" / "junk").mkdir(parents=True)
    (tmp_path / "root" / "junk" / "notes.txt").write_text("not a data set")
    assert_one_line_error(
        capsys,
        [
            "train",
            "--data",
            "afew_va",
            "--data-root",
            str(tmp_path / "root"),
            "--model",
            "test_tiny2d",
            "--no-progress",
            "--out",
            str(tmp_path / "r"),
        ],
        "afew_va",
    )
