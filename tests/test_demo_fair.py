"""The demo's fairness bookkeeping on known numbers: equal budgets, seeds, lr choice, mean/std."""

from __future__ import annotations

import math

import pytest

from hoconv.app import demo_jobs
from hoconv.app.demo import demo_settings, run_graph
from hoconv.app.demo_stats import aggregate, check_equal_budget, choose_lr, headline, mean_std


def test_mean_std_on_known_numbers():
    mean, std = mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and math.isclose(std, math.sqrt(5 / 3))  # sample std (n - 1)
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_choose_lr_takes_the_best_validation_score_and_the_smaller_lr_on_ties():
    trials = [{"lr": 1e-3, "val_score": 0.4}, {"lr": 3e-3, "val_score": 0.5},
              {"lr": 1e-2, "val_score": float("nan")}]  # fmt: skip
    assert choose_lr(trials)["lr"] == 3e-3
    assert choose_lr([{"lr": 3e-3, "val_score": 0.5}, {"lr": 1e-3, "val_score": 0.5}])["lr"] == 1e-3
    with pytest.raises(ValueError, match="diverged"):
        choose_lr([{"lr": 1e-3, "val_score": -math.inf}])


def _run(network, seed, video_steps, static_steps=0, lr=1e-3, v=0.5, a=0.5, epochs=4):
    metrics = {d: {"rmse": 0.3, "sagr": 0.7, "pcc": x, "ccc": x}
               for d, x in (("valence", v), ("arousal", a))}  # fmt: skip
    budget = {"static_steps": static_steps, "video_steps": video_steps, "clip_batch_size": 8,
              "clip_length": 8, "batch_size": 16, "epochs": {"video": epochs}}  # fmt: skip
    return {"network": network, "family": network, "seed": seed, "lr": lr,
            "budget": budget, "metrics": metrics, "wall_s": 10.0, "cpu_s": 5.0}  # fmt: skip


def test_equal_video_budget_is_checked_per_model_and_seed():
    runs = [_run("A", 0, 40), _run("A", 1, 40), _run("B", 0, 40, static_steps=30)]
    assert check_equal_budget(runs, "video")["video_steps"] == 40
    with pytest.raises(ValueError, match="B seed 1 has video_steps=36"):
        check_equal_budget([*runs, _run("B", 1, 36, static_steps=30)], "video")
    with pytest.raises(ValueError, match="seed is repeated"):
        check_equal_budget([*runs, _run("A", 1, 40)], "video")
    with pytest.raises(ValueError, match="share the chosen lr"):
        check_equal_budget([*runs, _run("B", 1, 40, static_steps=30, lr=3e-3)], "video")


def test_equal_total_steps_rule_allows_one_clip_epoch_of_rounding():
    derived = _run("T", 0, 40, static_steps=25, epochs=4)  # 65 steps, 10 clip steps per epoch
    budget = check_equal_budget([derived, _run("S", 0, 70, epochs=7)], "steps")
    assert budget["total_steps"] == (65, 70)
    with pytest.raises(ValueError, match="S seed 0 has 40 optimizer steps in total"):
        check_equal_budget([derived, _run("S", 0, 40, epochs=4)], "steps")
    with pytest.raises(ValueError, match="rule"):
        check_equal_budget([derived], "wall")


def test_aggregate_gives_mean_and_std_over_seeds():
    runs = [_run("A", 0, 40, v=0.2, a=0.4), _run("A", 1, 40, v=0.4, a=0.8)]
    (row,) = aggregate(runs)
    assert row["seeds"] == [0, 1]
    assert row["stats"]["valence"]["ccc"] == pytest.approx((0.3, math.sqrt(0.02)))
    assert row["mean_ccc"] == pytest.approx((0.45, math.sqrt((0.3 - 0.45) ** 2 + 0.15**2)))


def test_headline_names_a_best_model_only_beyond_the_std():
    def row(name, mean, std):
        return {"network": name, "seeds": [0, 1, 2], "mean_ccc": (mean, std)}

    clear = headline([row("A", 0.70, 0.01), row("B", 0.50, 0.02)])
    assert "**A**" in clear and "0.200 ahead of B" in clear
    close = headline([row("A", 0.701, 0.01), row("B", 0.700, 0.02), row("C", 0.2, 0.01)])
    assert "**" not in close and "B is within one std" in close and "do not rank" in close


def test_plan_gives_every_family_the_same_video_epochs_and_the_stated_seeds(tmp_path):
    s = demo_settings("default")
    jobs = demo_jobs.plan_jobs(s, tmp_path, "cpu")
    finals = [j for j in jobs.values() if not j["search"]]
    families = {j["family"] for j in finals}
    assert families == {"static", "transduced", "framewise", *s["models"]["scratch"]}
    for family in families:
        seeds = [j["seed"] for j in finals if j["family"] == family]
        assert seeds == s["seeds"]
        trials = [j["lr"] for j in jobs.values() if j["search"] and j["family"] == family]
        assert trials == s["lr_search"]["grid"] and all(j["seed"] == 0 for j in jobs.values()
                                                        if j["search"])  # fmt: skip
    video = {j["family"]: sum(j["epochs"].values()) for j in finals if j["family"] != "static"}
    assert set(video.values()) == {s["video_epochs"]}
    trans = next(j for j in finals if j["family"] == "transduced")
    assert trans["epochs"] == {"temporal": s["temporal_epochs"],
                               "finetune": s["video_epochs"] - s["temporal_epochs"]}  # fmt: skip
    fixed = demo_jobs.plan_jobs(demo_settings("default", {"lr": {"r3d_18": 1e-3}}), tmp_path, "cpu")
    assert not [j for j in fixed.values() if j["search"] and j["family"] == "r3d_18"]
    assert {j["lr"] for j in fixed.values() if j["family"] == "r3d_18"} == {1e-3}


def test_steps_budget_gives_scratch_models_the_static_steps_on_clips(monkeypatch):
    monkeypatch.setattr(
        demo_jobs, "steps_per_epoch", lambda s, mode: 75 if mode == "static" else 24
    )
    s = demo_settings("default", {"budget": "steps"})
    epochs = demo_jobs.planned_epochs(s)
    extra = math.ceil(s["static_epochs"] * 75 / 24)
    assert epochs["scratch_extra_epochs"] == extra
    assert epochs["final"]["r3d_18"] == {"video": s["video_epochs"] + extra}
    assert (
        epochs["final"]["transduced"]["temporal"] + epochs["final"]["transduced"]["finetune"]
        == s["video_epochs"]
    )


def test_run_graph_respects_dependencies_and_refuses_cycles():
    order = []

    def work(job):
        order.append(job["name"])
        return {"name": job["name"], "wall_s": 0.0, "cpu_s": 0.0}

    jobs = {"b": {"name": "b", "deps": ["a"]}, "a": {"name": "a", "deps": []},
            "c": {"name": "c", "deps": ["a", "b"]}}  # fmt: skip
    out = run_graph(jobs, 1, lambda job, done: job, work, None, False)
    assert order == ["a", "b", "c"] and set(out) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="unknown dependencies"):
        run_graph({"x": {"name": "x", "deps": ["y"]}}, 1, lambda j, d: j, work, None, False)
    cycle = {"x": {"name": "x", "deps": ["y"]}, "y": {"name": "y", "deps": ["x"]}}
    with pytest.raises(ValueError, match="never start"):
        run_graph(cycle, 1, lambda j, d: j, work, None, False)


def test_settings_refuse_bad_budgets():
    with pytest.raises(ValueError, match="budget"):
        demo_settings("default", {"budget": "wall"})
    with pytest.raises(ValueError, match="temporal_epochs"):
        demo_settings("default", {"temporal_epochs": 6})
    with pytest.raises(ValueError, match="seeds"):
        demo_settings("default", {"seeds": [0, 0]})


def test_warmup_is_linear_then_flat():
    import torch

    from hoconv.app.engine.trainer import _warmup

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = []
    for done in range(6):
        _warmup(opt, [0.4], {"warmup_steps": 4}, done)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    _warmup(opt, [0.4], {"warmup_steps": 0}, 0)
    assert opt.param_groups[0]["lr"] == 0.4


def test_report_adds_the_demo_tables_from_results_json(tmp_path):
    import json

    from hoconv.app.commands.report import demo_tables

    runs = [_run("A", 0, 40, v=0.2, a=0.4), _run("A", 1, 40, v=0.4, a=0.8),
            _run("B", 0, 40, v=0.1, a=0.1), _run("B", 1, 40, v=0.1, a=0.1)]  # fmt: skip
    results = {"rows": aggregate(runs), "budget": check_equal_budget(runs, "video")}
    (tmp_path / "results.json").write_text(json.dumps(results))
    text = demo_tables(tmp_path)
    assert "| A | 0.300 +- 0.141 | 0.600 +- 0.283 | 0.450 +- 0.212 | 0.001 |" in text
    assert "40 optimizer steps on clips" in text and "2 seeds per model" in text
    with pytest.raises(FileNotFoundError, match="results.json does not exist"):
        demo_tables(tmp_path / "nothing")
    (tmp_path / "results.json").write_text(json.dumps({"rows": [{"network": "old"}]}))
    with pytest.raises(ValueError, match="no seeds"):
        demo_tables(tmp_path)


def test_a_diverging_search_run_scores_minus_infinity_and_a_final_one_stops(monkeypatch):
    from hoconv.app.engine.trainer import TrainingError

    def diverge(job):
        raise TrainingError("non-finite training loss")

    monkeypatch.setattr(demo_jobs, "_train_job", diverge)
    job = {"name": "lr_search/r3d_18/lr0.01", "family": "r3d_18", "search": True, "seed": 0,
           "lr": 0.01, "settings": {}}  # fmt: skip
    result = demo_jobs.run_job(job)
    assert result["val_score"] == -math.inf and result["wall_s"] >= 0
    assert choose_lr([result, {"lr": 1e-3, "val_score": 0.1}])["lr"] == 1e-3
    with pytest.raises(TrainingError):
        demo_jobs.run_job({**job, "search": False})
