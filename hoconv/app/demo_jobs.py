"""The runs of `hoconv demo`: planning (which runs, with which budget), and running one.

A job spec is a plain (picklable) dict; :func:`plan_jobs` makes them, :func:`resolve_job`
completes a spec from the results of its dependencies (the chosen lr, the checkpoint to start
from) and :func:`run_job` runs it in a worker process and returns a plain result dict.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from hoconv.app.demo_stats import choose_lr

DERIVED = ("transduced", "framewise")  # families that start from the static model


def plan_jobs(s: dict, out: Path, device: str) -> dict[str, dict]:
    """Every job of the demo: the lr search of each family, then ``seeds`` final runs."""
    from hoconv.app.demo import families

    epochs = planned_epochs(s)
    jobs: dict[str, dict] = {}
    first = s["seeds"][0]
    for family in families(s):
        fixed = (s.get("lr") or {}).get(family)
        base = {"family": family, "kind": _kind(family), "device": device, "settings": s}
        static_dep = [] if family == "static" else [f"static/seed{first}"]
        search = [] if fixed is not None else s["lr_search"]["grid"]
        for lr in search:
            name = f"lr_search/{family}/lr{lr:g}"
            jobs[name] = {**base, "name": name, "search": True, "seed": first, "lr": lr,
                          "epochs": epochs["search"][family], "out": str(out / name),
                          "deps": static_dep if family in DERIVED else []}  # fmt: skip
        for seed in s["seeds"]:
            name = f"{family}/seed{seed}"
            deps = [f"lr_search/{family}/lr{lr:g}" for lr in search]
            if family in DERIVED:
                deps.append(f"static/seed{seed}")
            jobs[name] = {**base, "name": name, "search": False, "seed": seed, "lr": fixed,
                          "epochs": epochs["final"][family], "out": str(out / name),
                          "deps": deps}  # fmt: skip
    return _ordered(jobs)


def _ordered(jobs: dict[str, dict]) -> dict[str, dict]:
    """Start order: the static runs first (others wait on them), then the long scratch runs."""

    def key(item):
        name, job = item
        return (job["family"] != "static", job["family"] in DERIVED, not job["search"], name)

    return dict(sorted(jobs.items(), key=key))


def _kind(family: str) -> str:
    return family if family in ("static", *DERIVED) else "scratch"


def planned_epochs(s: dict) -> dict:
    """Epochs of every family's final and search runs under the budget rule ``s['budget']``.

    ``video``: every video model ``video_epochs`` on clips. ``steps``: the scratch models get
    ``video_epochs`` + as many clip epochs as needed to match the static model's steps on
    stills (equal optimizer steps from initialisation, up to one clip epoch of rounding).
    """
    from hoconv.app.demo import families

    extra = 0
    if s["budget"] == "steps":
        static_steps = s["static_epochs"] * steps_per_epoch(s, "static")
        extra = math.ceil(static_steps / steps_per_epoch(s, "video"))
    search = s["lr_search"]
    final, short = {}, {}
    for family in families(s):
        if family == "static":
            final[family] = {"static": s["static_epochs"]}
            short[family] = {"static": search["static_epochs"]}
        elif family == "transduced":
            final[family] = _split(s["video_epochs"], s["temporal_epochs"], s["video_epochs"])
            short[family] = _split(search["video_epochs"], s["temporal_epochs"], s["video_epochs"])
        elif family == "framewise":
            final[family] = {"video": s["video_epochs"]}
            short[family] = {"video": search["video_epochs"]}
        else:
            final[family] = {"video": s["video_epochs"] + extra}
            ratio = (s["video_epochs"] + extra) / s["video_epochs"]
            short[family] = {"video": max(1, round(search["video_epochs"] * ratio))}
    return {"final": final, "search": short, "scratch_extra_epochs": extra}


def _split(total: int, temporal: int, reference: int) -> dict:
    """Temporal-only and fine-tune epochs of a transduction run of ``total`` epochs."""
    t = max(1, round(total * temporal / reference)) if total > 1 else 1
    return {"temporal": t, "finetune": max(total - t, 1)}


def steps_per_epoch(s: dict, mode: str) -> int:
    """Optimizer steps of one training epoch on the static or video training split."""
    from hoconv.app.engine.build import make_dataset

    cfg = train_cfg(s, mode=mode, model="cp_resnet18_2d", epochs=1, lr=1e-3, seed=0)
    batches = len(make_dataset(cfg, cfg["train_split"])) // cfg["batch_size"]
    cap = s["max_train_batches"]
    return max(1, min(batches, cap) if cap else batches)


def warm_data_cache(s: dict, cache: Path) -> dict:
    """Generate every split once into ``cache`` (the runs then load it); the new settings."""
    from hoconv.app.engine.build import make_dataset

    s = {**s}
    for key in ("static_data_kwargs", "video_data_kwargs"):
        s[key] = {**s[key], "cache_dir": str(cache)}
    for mode, splits in (("static", ("train", "val")), ("video", ("train", "val", "test"))):
        cfg = train_cfg(s, mode=mode, model="cp_resnet18_2d", epochs=1, lr=1e-3, seed=0)
        for split in splits:
            make_dataset(cfg, split)
    return s


def resolve_job(job: dict, results: dict[str, dict], s: dict) -> dict:
    """Fill the lr (from the family's search) and the init checkpoint (from the static run)."""
    job = dict(job)
    if job["lr"] is None:
        trials = [r for r in results.values() if r["search"] and r["family"] == job["family"]]
        job["lr"] = choose_lr(trials)["lr"]
    if job["family"] in DERIVED:
        static = results[f"static/seed{job['seed']}"]
        job["init"] = static["checkpoint"]
        job["prior"] = {k: static[k] for k in ("wall_s", "cpu_s")}
        job["static_steps"] = static["budget"]["static_steps"]
    return job


def train_cfg(
    s: dict, *, mode: str, model: str, epochs: int, lr: float, seed: int, **extra
) -> dict:
    """A resolved `hoconv train` config for one demo run (the shared schedule included)."""
    from hoconv.app.engine import config as config_io

    video = mode == "video"
    data_kwargs = {
        "image_size": s["image_size"],
        **(s["video_data_kwargs"] if video else s["static_data_kwargs"]),
    }
    if video:
        data_kwargs["clip_length"] = s["clip_length"]
    flags = {
        "data": s["data"], "mode": mode, "model": model, "epochs": epochs, "lr": lr,
        "seed": seed, "batch_size": s["clip_batch_size"] if video else s["batch_size"],
        "scheduler": s["schedule"]["scheduler"], "warmup_steps": s["schedule"]["warmup_steps"],
        "workers": 0, "keep": "best", "progress": False, "data_kwargs": data_kwargs,
        "max_train_batches": s["max_train_batches"], "augment": s["augment"],
        "model_kwargs": {"width": s["width"], **s["model_kwargs"]}, **extra,
    }  # fmt: skip
    return config_io.resolve("train", None, flags)


def run_job(job: dict) -> dict:
    """Train (and, for a final run, evaluate on the test split) one job; a plain result.

    A search run whose loss diverges scores -inf (its lr is not chosen); a final run that
    diverges stops the demo (TrainingError says where).
    """
    from hoconv.app.engine.trainer import TrainingError

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        result = _train_job(job)
    except TrainingError:
        if not job["search"]:
            raise
        result = {"name": job["name"], "family": job["family"], "search": True,
                  "seed": job["seed"], "lr": job["lr"], "val_score": -math.inf}  # fmt: skip
    if not job["search"]:
        result["metrics"] = _evaluate(job["settings"], job, Path(result["checkpoint"]))
    prior = job.get("prior", {"wall_s": 0.0, "cpu_s": 0.0})
    result["wall_s"] = time.perf_counter() - t0
    result["cpu_s"] = time.process_time() - c0
    result["chain_wall_s"] = result["wall_s"] + prior["wall_s"]
    result["chain_cpu_s"] = result["cpu_s"] + prior["cpu_s"]
    return result


def _train_job(job: dict) -> dict:
    """The training part of :func:`run_job`: its runs, steps and best validation score."""
    from hoconv.app.engine import train

    s, out, e = job["settings"], Path(job["out"]), job["epochs"]
    common = {"lr": job["lr"], "seed": job["seed"], "device": job["device"]}
    budget = {"static_steps": job.get("static_steps", 0), "video_steps": 0,
              "batch_size": s["batch_size"], "clip_batch_size": s["clip_batch_size"],
              "clip_length": s["clip_length"], "epochs": dict(e)}  # fmt: skip
    if job["kind"] == "static":
        cfg = train_cfg(s, mode="static", model=s["models"]["static"], epochs=e["static"], **common)
        runs = [train(cfg, out)]
        budget["static_steps"] = _steps(runs[0])
    elif job["kind"] == "transduced":
        runs = _transduced(job, s, out, e, common)
    else:
        model = s["models"]["static"] if job["kind"] == "framewise" else job["family"]
        cfg = train_cfg(s, mode="video", model=model, epochs=e["video"], init=job.get("init"),
                        **common)  # fmt: skip
        runs = [train(cfg, out)]
    if job["kind"] != "static":
        budget["video_steps"] = sum(_steps(r) for r in runs)
    return {
        "name": job["name"], "family": job["family"], "search": job["search"],
        "seed": job["seed"], "lr": job["lr"], "budget": budget,
        "val_score": runs[-1]["best"]["score"],
        "checkpoint": str(Path(runs[-1]["run_dir"]) / "best.pt"),
        "params": runs[-1]["params"], "trained_params": [r["trainable_params"] for r in runs],
    }  # fmt: skip


def _steps(run: dict) -> int:
    return sum(int(row["train_steps"]) for row in run["history"])  # the trainer logs train_steps


def _transduced(job: dict, s: dict, out: Path, e: dict, common: dict) -> list[dict]:
    """Transduce the static checkpoint, train the temporal factors, then everything."""
    from hoconv.app.engine import train
    from hoconv.app.engine.checkpoint import transduce_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    transduce_checkpoint(job["init"], out / "transduced.pt", **s["transduce"])
    model = s["models"]["static"]
    temporal = train_cfg(s, mode="video", model=model, epochs=e["temporal"], phase="temporal",
                         init=str(out / "transduced.pt"), **common)  # fmt: skip
    first = train(temporal, out / "temporal")
    finetune = train_cfg(s, mode="video", model=model, epochs=e["finetune"], phase="all",
                         init=str(out / "temporal" / "best.pt"), **common)  # fmt: skip
    second = train(finetune, out / "finetune")
    (out / "transduced.pt").unlink()
    return [first, second]


def _evaluate(s: dict, job: dict, checkpoint: Path) -> dict:
    """Metrics of ``checkpoint`` on the test videos (a 2-D model runs frame by frame)."""
    from hoconv.app.engine import evaluate

    overrides = {
        "data": s["data"], "mode": "video", "data_root": None, "device": job["device"],
        "workers": 0, "data_kwargs": {"image_size": s["image_size"],
                                      "clip_length": s["clip_length"], **s["video_data_kwargs"]},
    }  # fmt: skip
    folder = Path(job["out"]).parent.parent / "eval" / job["name"]
    return evaluate(checkpoint, folder, overrides=overrides, split="test")
