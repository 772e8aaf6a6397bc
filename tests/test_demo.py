"""`hoconv demo --tiny`: the whole paper pipeline (image -> transduce -> temporal -> all,
scratch baselines, evaluation, report) on tiny synthetic data."""

import json
import math

import pytest

pytest.importorskip("hoconv.transduction")
pytest.importorskip("hoconv.models.resnet")
pytest.importorskip("hoconv.data.synthetic")

from hoconv.cli import main  # noqa: E402
from hoconv.engine import load_model, read_checkpoint  # noqa: E402


@pytest.mark.slow
def test_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    rows = json.loads((out / "results.json").read_text())["rows"]
    names = [r["network"] for r in rows]
    assert names == [
        "CP-ResNet-18-2D (frame-wise)",
        "Ours - transduction",
        "Ours - scratch",
        "ResNet-18-3D (R3D-18)",
        "ResNet-18-(2+1)D",
    ]
    counts = {r["metrics"]["n"] for r in rows}
    assert len(counts) == 1 and counts.pop() > 0  # every model scored on the same test frames
    for r in rows:
        assert f"| {r['network']} |" in report
        for dim in ("valence", "arousal"):
            assert set(r["metrics"][dim]) == {"rmse", "sagr", "pcc", "ccc"}
            assert math.isfinite(r["metrics"][dim]["rmse"])
        assert (out / r["eval_dir"] / "va_over_time.png").exists()
    # the transduction chain: temporal phase trained only the new factors, then everything
    assert not list(out.rglob("last.pt"))  # the demo keeps best.pt only
    temporal = read_checkpoint(out / "transduced_temporal" / "best.pt")
    finetune = read_checkpoint(out / "transduced_finetune" / "best.pt")
    assert temporal["model"]["transductions"] == finetune["model"]["transductions"] != []
    assert temporal["config"]["phase"] == "temporal" and finetune["config"]["phase"] == "all"
    trans = rows[1]
    assert trans["trained_params"].startswith(f"{_m(temporal_params(out))} temporal")
    assert (out / "ccc.png").exists() and "demo done" in capsys.readouterr().out


def temporal_params(out) -> int:
    from hoconv.transduction import phase_parameter_counts

    model, _ = load_model(out / "transduced.pt")
    return phase_parameter_counts(model)["temporal"]


def _m(n: int) -> str:
    from hoconv.demo import _m

    return _m(n)


def test_demo_settings_refuse_a_subject_split_that_differs_between_stages():
    from hoconv.demo import demo_settings

    s = demo_settings("default")
    assert s["static_data_kwargs"]["num_subjects"] == s["video_data_kwargs"]["num_subjects"]
    with pytest.raises(ValueError, match="num_subjects"):
        demo_settings("default", {"video_data_kwargs": {"num_subjects": 7}})
    with pytest.raises(ValueError, match="profile"):
        demo_settings("huge")
