"""`hoconv demo`: the paper's pipeline end to end on the embedded synthetic data set, as a
fair comparison.

Families (each a way to get a video model; ``static`` is the 2-D model on stills):

* ``static``: CP-ResNet-18-2D trained on still images; evaluated frame by frame on the videos;
* ``transduced``: the static model transduced to 3-D, temporal factors trained, then all;
* ``framewise``: the static model fine-tuned frame by frame on the clips (same video budget as
  the transduction, no temporal factors: what the temporal axis adds, separated from what more
  training adds);
* one family per scratch model (CP-ResNet-18-3D, R3D-18, R(2+1)D-18): trained on the clips only.

Protocol (the same for every family): Adam, linear warm-up then cosine decay and the same
training-set augmentation (``augment``: crop-resize, flip, brightness / contrast) in every run; the learning rate of each family chosen by a short search (``lr_search.grid``, seed
``lr_search.seed``, on the validation split); then ``seeds`` full runs with that lr, scored on
the test split. Budget: every video model gets ``video_epochs`` epochs on the same training
clips (same batch, same clip length); with ``budget: steps`` the scratch models also get as
many extra clip steps as the static model had on stills (equal optimizer steps in total).
Runs are spread over ``jobs`` processes (one torch thread each).
"""

from __future__ import annotations

import math
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import torch

from hoconv.app.engine import config as config_io
from hoconv.app.engine.runlog import say

PROFILES = ("default", "full", "tiny")
BUDGET_RULES = ("video", "steps")


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
    if s["budget"] not in BUDGET_RULES:
        raise ValueError(f"demo: budget {s['budget']!r} is not one of {', '.join(BUDGET_RULES)}")
    if not 1 <= s["temporal_epochs"] < s["video_epochs"]:
        raise ValueError("demo: temporal_epochs must be >= 1 and < video_epochs")
    if not s["seeds"] or len(set(s["seeds"])) != len(s["seeds"]):
        raise ValueError(f"demo: seeds must be distinct and non-empty, got {s['seeds']}")
    return s


def families(s: dict) -> list[str]:
    """Every family the demo compares, in report order."""
    derived = ["static", "transduced"] + (["framewise"] if s["framewise_finetune"] else [])
    return derived + list(s["models"]["scratch"])


def run_demo(
    out: str | Path,
    *,
    profile: str = "default",
    device: str = "cpu",
    overrides: dict | None = None,
    progress: bool = True,
    threads: int | None = 1,
) -> dict:
    """Run the whole demo into ``out``; return its runs, report rows and times.

    Args:
        out: folder for the runs, ``report.md``, ``results.json`` and the figures.
        profile: ``default`` (<= 10 min on 2 CPU cores), ``full`` (longer, larger; the
            budget where the 3-D baselines learn) or ``tiny`` (seconds; for tests).
        device: where to train.
        overrides: keys of ``hoconv/app/configs/demo.yaml`` to replace (e.g. ``{"jobs": 1}``).
        progress: one line per finished run.
        threads: torch CPU threads per run; ``None`` keeps torch's default. One by default:
            the demo's small convolutions gain little from intra-op threads; ``jobs``
            processes use the cores instead.
    """
    from hoconv.app.demo_jobs import plan_jobs, resolve_job, run_job, warm_data_cache

    s = demo_settings(profile, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start, cpu0 = time.perf_counter(), time.process_time()
    s = warm_data_cache(s, out / "data_cache")  # generated once, loaded by every run
    jobs = plan_jobs(s, out, device)
    results = run_graph(
        jobs, s["jobs"], lambda job, done: resolve_job(job, done, s), run_job, threads, progress
    )
    total = time.perf_counter() - start
    from hoconv.app.demo_report import write_report

    main_cpu = time.process_time() - cpu0
    summary = write_report(out, results, s, profile, total, main_cpu)
    _tidy(out, s["seeds"][0])
    return {**summary, "total_s": total, "settings": s}


def run_graph(jobs, workers, resolve, work, threads, progress) -> dict[str, dict]:
    """Run ``jobs`` (name -> spec with ``deps``) once their dependencies are done.

    At most ``workers`` run at once (processes; inline when 1), started in the order of
    ``jobs`` among those ready, so that a job unlocked late is not queued behind the rest.

    Args:
        jobs: name -> spec; ``spec["deps"]`` names jobs that must finish first.
        workers: parallel processes.
        resolve: ``(spec, results so far) -> spec`` completed from its dependencies' results.
        work: picklable ``spec -> result`` (runs in the worker).
        threads: torch threads in each worker.
        progress: print one line per finished job.
    """
    missing = {d for j in jobs.values() for d in j["deps"] if d not in jobs}
    if missing:
        raise ValueError(f"run_graph: unknown dependencies {sorted(missing)}")
    results: dict[str, dict] = {}
    pending, running = dict(jobs), {}
    with _executor(workers, threads) as ex:
        while pending or running:
            for name in [n for n, j in pending.items() if all(d in results for d in j["deps"])]:
                if len(running) >= workers:
                    break
                running[ex.submit(work, resolve(pending.pop(name), results))] = name
            if not running:
                raise ValueError(f"run_graph: jobs {sorted(pending)} can never start (a cycle)")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                results[name] = future.result()
                say(f"[{len(results)}/{len(jobs)}] {name}: {_line(results[name])}", progress)
    return results


def _line(result: dict) -> str:
    score = result.get("val_score")
    test = result.get("metrics")
    shown = (
        f"test CCC V {test['valence']['ccc']:.3f} A {test['arousal']['ccc']:.3f}" if test else ""
    )
    if score is not None and not test:
        shown = f"val mean CCC {score:.3f}" if math.isfinite(score) else "diverged"
    return f"{shown} ({result['wall_s']:.0f} s wall, {result['cpu_s']:.0f} s CPU)"


class _Inline:
    """A synchronous stand-in for an executor (``jobs: 1``): runs at submit."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __enter__(self):
        self.previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.previous)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))  # an exception propagates at once: the demo stops
        return future


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _executor(workers: int, threads: int | None):
    if workers < 1:
        raise ValueError(f"demo: jobs must be >= 1, got {workers}")
    if workers == 1:
        return _Inline(threads)
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_set_threads, initargs=(threads,)
    )


def _tidy(out: Path, keep_seed: int) -> None:
    """Keep checkpoints of seed ``keep_seed``'s final runs only (logs and metrics all stay)."""
    for ckpt in out.rglob("*.pt"):
        seed_dirs = [p.name for p in ckpt.relative_to(out).parents if p.name.startswith("seed")]
        if ckpt.relative_to(out).parts[0] == "lr_search" or seed_dirs != [f"seed{keep_seed}"]:
            ckpt.unlink()
    shutil.rmtree(out / "data_cache", ignore_errors=True)  # regenerated on demand
