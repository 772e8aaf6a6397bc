"""`hoconv demo`: the paper's pipeline end to end on the embedded synthetic data set.

1. train CP-ResNet-18-2D on still images;
2. transduce it to 3-D (new temporal factors, delta-initialised);
3. train the temporal factors only, then 4. fine-tune everything, on clips;
5. with the same video budget, train CP-ResNet-18-3D from scratch, R3D-18 and R(2+1)D-18;
6. evaluate all of them, and the 2-D model frame by frame, on the test videos;
7. write ``report.md`` (a table in the form of the paper's tables 2-3) and the figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from hoconv.engine import config as config_io
from hoconv.engine import evaluate, train
from hoconv.engine.checkpoint import transduce_checkpoint
from hoconv.engine.plots import plot_ccc_bars
from hoconv.engine.runlog import say

PROFILES = ("default", "full", "tiny")


def demo_settings(profile: str = "default", overrides: dict | None = None) -> dict:
    """The demo's sizes and budgets: ``default`` merged with ``profile`` and ``overrides``."""
    if profile not in PROFILES:
        raise ValueError(f"profile: {profile!r} is not one of {', '.join(PROFILES)}")
    raw = config_io.packaged_config("demo")
    s = dict(raw["default"])
    if profile != "default":
        s = config_io.merge(s, raw[profile], where=f"demo profile {profile}")
    s = config_io.merge(s, overrides or {}, where="demo overrides")
    for key in ("num_subjects", "fractions", "seed"):  # same subject split in every stage
        if s["static_data_kwargs"].get(key) != s["video_data_kwargs"].get(key):
            raise ValueError(
                f"demo: static_data_kwargs and video_data_kwargs must share {key!r} so that the "
                "test subjects are unseen by every stage"
            )
    return s


def _train_cfg(
    s: dict,
    *,
    mode: str,
    model: str,
    epochs: int,
    lr: float,
    device: str,
    init: str | None = None,
    phase: str | None = None,
    progress: bool = True,
) -> dict:
    video = mode == "video"
    data_kwargs = {
        "image_size": s["image_size"],
        **(s["video_data_kwargs"] if video else s["static_data_kwargs"]),
    }
    if video:
        data_kwargs["clip_length"] = s["clip_length"]
    flags = {
        "data": s["data"],
        "mode": mode,
        "model": model,
        "init": init,
        "phase": phase,
        "epochs": epochs,
        "lr": lr,
        "batch_size": s["clip_batch_size"] if video else s["batch_size"],
        "lr_step": max(epochs, 1),
        "workers": 0,
        "keep": "best",  # the demo reads best.pt only (the folder stays small)
        "device": device,
        "progress": progress,
        "data_kwargs": data_kwargs,
        "max_train_batches": s["max_train_batches"],
        "model_kwargs": {"width": s["width"], **s["model_kwargs"]},
    }
    return config_io.resolve("train", None, flags)


def run_demo(
    out: str | Path,
    *,
    profile: str = "default",
    device: str = "cpu",
    overrides: dict | None = None,
    progress: bool = True,
    threads: int | None = 1,
) -> dict:
    """Run the whole demo into ``out``; return the rows of the report table.

    Args:
        out: folder for the runs, ``report.md``, ``results.json`` and the figures.
        profile: ``default`` (<= 10 min on 2 CPU cores), ``full`` (longer, larger) or
            ``tiny`` (seconds; for tests).
        device: where to train.
        overrides: keys of ``hoconv/configs/demo.yaml`` to replace.
        progress: progress bars and epoch lines.
        threads: torch CPU threads during the demo (restored after); ``None`` keeps torch's
            default. One by default: the demo's small convolutions gain little from
            intra-op threads and lose several-fold when the CPU is shared (measured).
    """
    s = demo_settings(profile, overrides)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_stages(Path(out), s, profile, device, progress)
    finally:
        torch.set_num_threads(previous)


def _run_stages(out: Path, s: dict, profile: str, device: str, progress: bool) -> dict:
    """The stages of :func:`run_demo` with resolved settings ``s``."""
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rows: list[dict] = []
    ev = {
        "data": s["data"],
        "mode": "video",
        "data_root": None,
        "device": device,
        "workers": 0,
        "data_kwargs": {
            "image_size": s["image_size"],
            "clip_length": s["clip_length"],
            **s["video_data_kwargs"],
        },
    }

    def stage(name: str, cfg: dict) -> dict:
        say(
            f"== demo stage {name}: {cfg['model']} on {cfg['mode']} data, {cfg['epochs']} epoch(s)"
            f"{', phase ' + cfg['phase'] if cfg.get('phase') else ''}",
            progress,
        )
        t0 = time.perf_counter()
        res = train(cfg, out / name)
        res["wall_s"] = time.perf_counter() - t0
        return res

    def evaluate_row(
        label: str, case: str, ckpt: Path, params: int, trained: str, wall: float, folder: str
    ) -> dict:
        metrics = evaluate(ckpt, out / "eval" / folder, overrides=ev, split="test")
        row = {
            "case": case,
            "network": label,
            "metrics": metrics,
            "params": params,
            "trained_params": trained,
            "wall_s": wall,
            "eval_dir": f"eval/{folder}",
        }
        rows.append(row)
        return row

    lr = s["lr"]
    static = stage(
        "static_2d",
        _train_cfg(
            s,
            mode="static",
            model=s["models"]["static"],
            epochs=s["static_epochs"],
            lr=lr,
            device=device,
            progress=progress,
        ),
    )
    evaluate_row(
        f"{_pretty(s['models']['static'])} (frame-wise)",
        "static",
        out / "static_2d" / "best.pt",
        static["params"],
        _m(static["trainable_params"]),
        static["wall_s"],
        "static_2d_framewise",
    )
    t0 = time.perf_counter()
    transduce_checkpoint(out / "static_2d" / "best.pt", out / "transduced.pt", **s["transduce"])
    t_transduce = time.perf_counter() - t0
    temporal = stage(
        "transduced_temporal",
        _train_cfg(
            s,
            mode="video",
            model=s["models"]["static"],
            epochs=s["temporal_epochs"],
            lr=lr,
            device=device,
            init=str(out / "transduced.pt"),
            phase="temporal",
            progress=progress,
        ),
    )
    finetune = stage(
        "transduced_finetune",
        _train_cfg(
            s,
            mode="video",
            model=s["models"]["static"],
            epochs=s["finetune_epochs"],
            lr=s["finetune_lr"],
            device=device,
            init=str(out / "transduced_temporal" / "best.pt"),
            phase="all",
            progress=progress,
        ),
    )
    wall = static["wall_s"] + t_transduce + temporal["wall_s"] + finetune["wall_s"]
    evaluate_row(
        "Ours - transduction",
        "temporal",
        out / "transduced_finetune" / "best.pt",
        finetune["params"],
        f"{_m(temporal['trainable_params'])} temporal, then {_m(finetune['trainable_params'])}",
        wall,
        "transduced",
    )
    for name in s["models"]["scratch"]:
        res = stage(
            f"scratch_{name}",
            _train_cfg(
                s,
                mode="video",
                model=name,
                epochs=s["video_epochs"],
                lr=lr,
                device=device,
                progress=progress,
            ),
        )
        label = "Ours - scratch" if name.startswith("cp_") else _pretty(name)
        evaluate_row(
            label,
            "temporal",
            out / f"scratch_{name}" / "best.pt",
            res["params"],
            _m(res["trainable_params"]),
            res["wall_s"],
            f"scratch_{name}",
        )
    total = time.perf_counter() - t_start
    write_report(out, rows, s, profile, total)
    return {"rows": rows, "total_s": total, "settings": s}


def _m(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _pretty(name: str) -> str:
    return {
        "cp_resnet18_2d": "CP-ResNet-18-2D",
        "cp_resnet18_3d": "CP-ResNet-18-3D",
        "r3d_18": "ResNet-18-3D (R3D-18)",
        "r2plus1d_18": "ResNet-18-(2+1)D",
    }.get(name, name)


def write_report(out: Path, rows: list[dict], s: dict, profile: str, total_s: float) -> Path:
    """``report.md`` (table like the paper's tables 2-3), ``results.json``, CCC bar chart."""
    (out / "results.json").write_text(
        json.dumps({"rows": rows, "settings": s, "total_s": total_s}, indent=2, default=str)
    )
    plot_ccc_bars(rows, out / "ccc.png")
    lines = [
        "# hoconv demo: the paper's pipeline on the synthetic data set",
        "",
        f"Profile `{profile}`; total wall time {total_s / 60:.1f} min "
        f"({torch.get_num_threads()} torch thread(s)). Data: procedural faces, "
        f"{s['image_size']}x{s['image_size']} pixels, clips of {s['clip_length']} frames; models "
        f"at width {s['width']} (the paper's full-size models are `hoconv train`'s defaults).",
        f"Budget: the 2-D model trains {s['static_epochs']} epochs on still images; on videos the "
        f"transduced model trains {s['temporal_epochs']} epochs (temporal factors only) + "
        f"{s['finetune_epochs']} (all), every scratch model {s['video_epochs']} epochs.",
        "Metrics on every labelled frame of the test videos (pooled, not batch-averaged).",
        "",
        "| Case | Network | V RMSE | V SAGR | V PCC | V CCC | A RMSE | A SAGR | A PCC | A CCC "
        "| Params | Trained params | Wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        v, a = r["metrics"]["valence"], r["metrics"]["arousal"]
        cells = [f"{m[k]:.3f}" for m in (v, a) for k in ("rmse", "sagr", "pcc", "ccc")]
        lines.append(
            f"| {r['case']} | {r['network']} | {' | '.join(cells)} | {_m(r['params'])} | "
            f"{r['trained_params']} | {r['wall_s']:.0f} s |"
        )
    best = max(rows, key=lambda r: r["metrics"]["valence"]["ccc"] + r["metrics"]["arousal"]["ccc"])
    lines += [
        "",
        f"Best mean CCC: **{best['network']}**. These are the measured numbers of this run, "
        "whatever they are; short CPU budgets make them noisy.",
        "",
        "Wall time of the transduction row includes the static training and both video phases.",
        "",
        "## Figures",
        "",
        "Mean of valence and arousal CCC per model: ![CCC](ccc.png)",
        "",
    ]
    for r in rows:
        d = r["eval_dir"]
        lines.append(
            f"- {r['network']}: [V/A over time]({d}/va_over_time.png), "
            f"[circumplex]({d}/circumplex.png), [metrics]({d}/metrics.json)"
        )
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
