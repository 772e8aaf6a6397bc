"""`hoconv demo --tiny`: the whole paper pipeline (image -> transduce -> temporal -> all, a
frame-wise fine-tune, a scratch baseline, lr search, seeds, evaluation, report) on tiny data."""

import json
import math

import pytest

pytest.importorskip("hoconv.transduction")
pytest.importorskip("hoconv.models.resnet")
pytest.importorskip("hoconv.app.data.synthetic")

from hoconv.app.cli import main  # noqa: E402
from hoconv.app.engine import read_checkpoint  # noqa: E402

SMALL = [
    "--set", "models={scratch: [r3d_18]}", "--set", "lr={static: 0.003}",
    "--set", "lr_search={grid: [0.001, 0.003], static_epochs: 1, video_epochs: 1}",
]  # fmt: skip


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress", *SMALL]) == 0
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    names = [r["network"] for r in results["rows"]]
    assert names == [
        "CP-ResNet-18-2D (frame-wise, stills only)",
        "Ours - transduction",
        "CP-ResNet-18-2D (frame-wise, + clips)",
        "ResNet-18-3D (R3D-18)",
    ]
    runs = results["runs"]
    assert sorted((r["network"], r["seed"]) for r in runs) == sorted(
        (n, seed) for n in names for seed in (0, 1)
    )
    counts = {r["metrics"]["n"] for r in runs}
    assert len(counts) == 1 and counts.pop() > 0  # every model scored on the same test frames
    video = {r["budget"]["video_steps"] for r in runs if r["family"] != "static"}
    assert len(video) == 1 and video.pop() > 0  # equal video budget, as recorded per run
    trials = results["lr_search"]
    assert sorted((t["family"], t["lr"]) for t in trials) == sorted(
        (f, lr) for f in ("transduced", "framewise", "r3d_18") for lr in (0.001, 0.003)
    )
    for row in results["rows"]:
        assert f"| {row['network']} |" in report
        mean, std = row["mean_ccc"]
        assert math.isfinite(mean) and std >= 0
        if row["family"] != "static":  # the chosen lr is the best validation trial
            best = max((t for t in trials if t["family"] == row["family"]),
                       key=lambda t: t["val_score"])  # fmt: skip
            assert row["lr"] == best["lr"]
    assert "+-" in report and "what they do not show" in report and "Budget (equal" in report
    assert (out / "ccc.png").exists() and (out / "eval/transduced/seed0/va_over_time.png").exists()
    # the transduction chain: temporal phase trained only the new factors, then everything
    assert not list(out.rglob("last.pt")) and not list((out / "lr_search").rglob("*.pt"))
    temporal = read_checkpoint(out / "transduced/seed0/temporal/best.pt")
    finetune = read_checkpoint(out / "transduced/seed0/finetune/best.pt")
    assert temporal["model"]["transductions"] == finetune["model"]["transductions"] != []
    assert temporal["config"]["phase"] == "temporal" and finetune["config"]["phase"] == "all"
    assert finetune["model"]["kwargs"]["bound_va"] is True
    assert "demo done" in capsys.readouterr().out


def test_demo_settings_refuse_a_subject_split_that_differs_between_stages():
    from hoconv.app.demo import demo_settings

    s = demo_settings("default")
    assert s["static_data_kwargs"]["num_subjects"] == s["video_data_kwargs"]["num_subjects"]
    with pytest.raises(ValueError, match="num_subjects"):
        demo_settings("default", {"video_data_kwargs": {"num_subjects": 7}})
    with pytest.raises(ValueError, match="profile"):
        demo_settings("huge")
