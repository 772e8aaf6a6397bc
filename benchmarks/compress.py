"""Rank selection side by side at the same parameter count: hoconv's solver, one global rank, EVBMF.

For each model trained by ``benchmarks/compress_models.py``: EVBMF (Nakajima et al. 2013) on
each conv kernel's mode-0 / mode-1 unfoldings gives Tucker-2 ranks (musco's recipe; a layer
stays dense when its EVBMF ranks do not save parameters); its whole-model parameter count is
then the common budget: one global parameter fraction for every layer (bisected to fit) and
``hoconv.app.compress`` (``params=`` budget, Tucker only, and ``auto``: CP or Tucker per layer).
Each variant is scored on the validation split before and after the same distillation
fine-tune; all variants and the original are timed in one interleaved loop (median forward ms).

    python benchmarks/compress_models.py --out /tmp/compress-models
    python benchmarks/compress.py --models /tmp/compress-models --finetune-epochs 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
from pathlib import Path

import torch

from hoconv.app.compress.finetune import DistillSettings, finetune, validation_score
from hoconv.app.compress.pipeline import data_config
from hoconv.app.engine import build
from hoconv.app.engine.checkpoint import load_model
from hoconv.compress import candidates as C
from hoconv.compress.apply import compress_model
from hoconv.compress.evbmf import tucker_ranks_evbmf
from hoconv.compress.measure import interleaved_ms, model_macs, param_count
from hoconv.compress.solver import Budget
from hoconv.factorization import _set_submodule

SAMPLES = {"resnet18": (8, 3, 48, 48), "mobilenet": (8, 3, 32, 32), "convnet3d": (4, 3, 16, 32, 32)}


def _layer_params(info, kind, rank) -> int:
    return sum(p.numel() for p in C.empty_layer(info.conv, kind, rank).parameters())


def evbmf_choice(infos) -> dict:
    """Tucker-2 EVBMF ranks per layer; dense where they would not save parameters."""
    out = {}
    for info in infos:
        rank = tucker_ranks_evbmf(info.conv.weight.detach())
        out[info.name] = (
            ("tucker", rank) if _layer_params(info, "tucker", rank) < info.params else None
        )
    return out


def total_params(model, infos, choice) -> int:
    """Whole-model parameters with ``choice`` applied (counted on empty layers)."""
    saved = sum(info.params - _layer_params(info, *choice[info.name])
                for info in infos if choice[info.name])  # fmt: skip
    return param_count(model) - saved


def global_choice(model, infos, target: int, kind: str = "tucker") -> dict:
    """One parameter fraction for every layer, the largest whose model fits ``target`` (bisection)."""
    lo, hi = 0.005, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        choice = {i.name: (kind, C.resolve_rank(kind, i.conv, mid)) for i in infos}
        lo, hi = (mid, hi) if total_params(model, infos, choice) <= target else (lo, mid)
    return {i.name: (kind, C.resolve_rank(kind, i.conv, lo)) for i in infos}


def build_choice(model, infos, choice) -> tuple[torch.nn.Module, float]:
    """The decomposed model and the mean decomposition error over the factorized layers.

    Decomposed with the iterations hoconv's own picks get (``CANDIDATE_ITERS``), so the
    variants differ in their ranks only.
    """
    new, errors = copy.deepcopy(model), []
    for info in infos:
        if choice[info.name]:
            kind, rank = choice[info.name]
            layer = C.decompose(kind, info.conv, rank, C.CANDIDATE_ITERS[kind])
            errors.append(float(layer.decomposition_error))
            _set_submodule(new, info.name, layer)
    return new.eval(), sum(errors) / max(1, len(errors))


def variants(
    teacher, sample, fraction: float | None = None
) -> dict[str, tuple[torch.nn.Module, float, int]]:
    """Name -> (model, mean error, factorized layers) for the four rank selections.

    The common parameter count is EVBMF's, or ``fraction`` of the original's when given (EVBMF
    picks its own ranks, so its row then keeps its own count). A hoconv variant that cannot
    reach the count (its smallest candidates are larger) is left out with a printed line.
    """
    infos = C.record_shapes(teacher, sample)
    evb = evbmf_choice(infos)
    target = total_params(teacher, infos, evb)
    if fraction is not None:
        target = int(fraction * param_count(teacher))
    out = {"evbmf": (*build_choice(teacher, infos, evb), sum(map(bool, evb.values())))}
    glob = global_choice(teacher, infos, target)
    out["global rank"] = (*build_choice(teacher, infos, glob), len(infos))
    budget = Budget("params", target / param_count(teacher))
    for kind in ("tucker", "auto"):
        try:
            new, spec, report = compress_model(teacher, sample, budget, kind, timing_repeats=3)
        except ValueError as err:  # below the smallest candidates: say so, compare the rest
            print(f"hoconv {kind} left out at params={budget.fraction:.4f}: {err}", flush=True)
            continue
        err = [r["error"] for r in report.rows if r["kind"] != "dense"]
        out[f"hoconv {kind}"] = (new, sum(err) / max(1, len(err)), len(spec))
    return out


def bench_model(
    name: str, folder: Path, epochs: int, max_batches: int | None, fraction: float | None = None
) -> list[dict]:
    """The rows of one model: every variant's params, MACs, ms, error and scores."""
    teacher, meta = load_model(folder / "best.pt")
    teacher.eval()
    cfg = data_config(meta["config"], {"workers": 0})
    sample = torch.randn(*SAMPLES[name])
    val = build.make_dataset(cfg, cfg["val_split"])
    model_name = meta["model"]["name"]

    def score(m):
        return validation_score(build.check_mode(m, model_name, cfg["mode"]), cfg, val)[0]

    found = variants(teacher, sample, fraction)
    ms = interleaved_ms({"original": teacher, **{k: v[0] for k, v in found.items()}}, sample, 21)
    rows = [{"model": name, "variant": "original", "params": param_count(teacher),
             "macs": model_macs(teacher, sample), "ms_ratio": 1.0, "error": 0.0, "layers": 0,
             "score": score(teacher), "score_ft": None}]  # fmt: skip
    settings = DistillSettings(epochs=epochs, max_batches=max_batches)
    for variant, (model, error, layers) in found.items():
        row = {"model": name, "variant": variant, "params": param_count(model),
               "macs": model_macs(model, sample), "ms_ratio": ms[variant] / ms["original"],
               "error": error, "layers": layers, "score": score(model)}  # fmt: skip
        if epochs:
            torch.manual_seed(0)
            tuned, _ = finetune(model, teacher, cfg, settings, model_name)
            row["score_ft"] = score(tuned)
        rows.append(row)
        print(_row_line(row), flush=True)
    return rows


def _row_line(r: dict) -> str:
    ft = "-" if r.get("score_ft") is None else f"{r['score_ft']:.4f}"
    return (f"| {r['model']} | {r['variant']} | {r['params']:,} | {r['macs'] / 1e6:.1f} M "
            f"| {r['ms_ratio']:.3f} | {r['error']:.3f} | {r['layers']} | {r['score']:.4f} | {ft} |")  # fmt: skip


HEADER = ("| model | variant | params | MACs | ms / original | mean layer error | factorized layers "
          "| val score | after fine-tune |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the comparison on the models asked for; print the markdown table."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", required=True, help="folder written by compress_models.py")
    p.add_argument("--only", action="append", choices=tuple(SAMPLES))
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--max-train-batches", type=int, default=None)
    p.add_argument("--params", type=float, help="common parameter fraction (default: EVBMF's)")
    p.add_argument("--out", help="JSON file for the rows")
    args = p.parse_args(argv)
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}; "
          f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")  # fmt: skip
    print(HEADER, flush=True)
    rows = []
    for name in args.only or SAMPLES:
        rows += bench_model(
            name, Path(args.models) / name, args.finetune_epochs, args.max_train_batches,
            args.params,
        )  # fmt: skip
    print("\n" + HEADER + "\n" + "\n".join(_row_line(r) for r in rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
