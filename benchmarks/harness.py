"""Side-by-side convolution benchmark (``benchmarks/conv.py`` and ``hoconv bench``).

Lives in ``benchmarks/`` (not in the library); ``hoconv bench`` loads it from the source
checkout (:func:`hoconv.app.commands.bench.harness`).

Every candidate runs in one process on the same input, interleaved round-robin (so a burst of
load on a shared machine hits all of them alike); the median of ``repeats`` timed runs after
one warm-up run is reported, forward (under ``no_grad``) and forward+backward (with a fixed
random output gradient). Each job runs with the input channels-first ("cf", contiguous) and/or
channels-last ("cl": ``torch.channels_last_3d`` and its 2-D / N-D analogue); every candidate,
the dense convolution included, gets the same input. Peak memory is measured separately, one fresh subprocess per
candidate: the peak resident set (``VmHWM``, reset just before) during its first
forward+backward, minus the resident set once the module, input and output gradient exist.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from hoconv import rank as hrank
from hoconv.layers import CPConv, TuckerConv

CONFIGS = {  # name: (input shape, kernel)
    "3d": ((4, 64, 16, 32, 32), 3),
    "2d": ((16, 64, 64, 64), 3),
    "3d-quick": ((2, 8, 6, 8, 8), 3),
    "2d-quick": ((2, 8, 12, 12), 3),
}


LAYOUT_NAMES = {"cf": "channels-first", "cl": "channels-last"}


@dataclass
class Result:
    config: str
    name: str
    rank: int | None
    channels: int
    params: int
    macs: int
    fwd_ms: float = math.nan
    fwdbwd_ms: float = math.nan
    fwd_noise: float = math.nan  # (max - min) / median of the timed runs
    fwdbwd_noise: float = math.nan
    peak_mb: float | None = None
    layout: str = "cf"
    extra: dict = field(default_factory=dict)


def _two_plus_one(c: int, t: int, k: int, dim: int) -> nn.Module:
    """(2+1)D / (1+1)D conv: spatial conv then temporal conv, hidden width matching dense params."""
    if dim == 2:
        mid = max(1, round(c * t * k * k / (c * k + t * k)))
        return nn.Sequential(
            nn.Conv2d(c, mid, (1, k), padding=(0, k // 2)),
            nn.Conv2d(mid, t, (k, 1), padding=(k // 2, 0)),
        )
    mid = max(1, round(c * t * k**3 / (c * k * k + t * k)))
    return nn.Sequential(
        nn.Conv3d(c, mid, (1, k, k), padding=(0, k // 2, k // 2)),
        nn.Conv3d(mid, t, (k, 1, 1), padding=(k // 2, 0, 0)),
    )


def _tltorch(c: int, t: int, k: int, dim: int, rank: int) -> nn.Module | None:
    try:
        import tltorch
    except ImportError:
        return None
    return tltorch.FactorizedConv(
        c, t, k, order=dim, rank=rank, factorization="cp", implementation="factorized",
        padding=k // 2,
    )  # fmt: skip


def make_candidates(config: str, rank: int, channels: int | None = None) -> dict[str, nn.Module]:
    """The modules compared on one configuration (channels overrides C = T)."""
    shape, k = CONFIGS[config]
    dim = len(shape) - 2
    c = channels or shape[1]
    dense = (nn.Conv3d if dim == 3 else nn.Conv2d)(c, c, k, padding=k // 2)
    cp = dict(dim=dim, rank=rank, padding=k // 2)
    mods: dict[str, nn.Module] = {"dense": dense, "(2+1)D": _two_plus_one(c, c, k, dim)}
    tl = _tltorch(c, c, k, dim, rank)
    if tl is not None:
        mods["tltorch-cp"] = tl
    mods["cp-plain"] = CPConv(c, c, k, implementation="plain", **cp)
    mods["cp-fast"] = CPConv(c, c, k, implementation="fast", **cp)
    cp_params = hrank.parameter_count(mods["cp-fast"])
    mods["tucker"] = TuckerConv(
        c, c, k, dim=dim, rank=_tucker_rank(c, k**dim, cp_params), padding=k // 2
    )
    return mods


def _tucker_rank(c: int, kernel_numel: int, params: int) -> int:
    """Tucker rank r (R_in = R_out) with about ``params`` parameters: r^2 K + 2 r C + C = params."""
    r = (-2 * c + math.sqrt(4 * c * c + 4 * kernel_numel * max(params - c, 1))) / (2 * kernel_numel)
    return min(c, max(1, round(r)))


def _macs(name: str, module: nn.Module, shape: tuple[int, ...], rank: int) -> int:
    if name == "tltorch-cp":
        c, dim = shape[1], len(shape) - 2
        return CPConv(c, c, 3, dim=dim, rank=rank, padding=1, device="meta").macs(shape)
    return hrank.macs(module, shape)


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def make_input(shape: tuple[int, ...], layout: str, device: torch.device | str = "cpu"):
    """A random ``(N, C, *S)`` input stored channels-first ("cf") or channels-last ("cl")."""
    if layout not in ("cf", "cl"):
        raise ValueError(f"layout must be 'cf' or 'cl', got {layout!r}")
    x = torch.randn(shape, device=device)
    if layout == "cl":
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)  # (N, C, *S) view, channels-last
    return x.requires_grad_(True)


def time_candidates(
    mods: dict[str, nn.Module],
    shape: tuple[int, ...],
    repeats: int,
    device: torch.device,
    layout: str = "cf",
) -> dict[str, tuple[list[float], list[float]]]:
    """Round-robin timings (seconds) of forward and forward+backward for every module."""
    x = make_input(shape, layout, device)
    mods = {k: m.to(device) for k, m in mods.items()}
    with torch.no_grad():
        grads = {k: torch.randn_like(m(x)) for k, m in mods.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def fwd(m):
        with torch.no_grad():
            m(x)
        sync()

    def fwdbwd(m, k):
        m(x).backward(grads[k])
        sync()

    times = {k: ([], []) for k in mods}
    for rep in range(repeats + 1):  # the first round is the warm-up
        for k, m in mods.items():
            tf, tb = _time(lambda m=m: fwd(m)), _time(lambda m=m, k=k: fwdbwd(m, k))
            if rep:
                times[k][0].append(tf)
                times[k][1].append(tb)
        x.grad = None
        for m in mods.values():
            m.zero_grad(set_to_none=True)
    return times


def _noise(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def peak_memory_mb(
    config: str, name: str, rank: int, channels: int | None, layout: str = "cf"
) -> float | None:
    """Peak RSS growth (MB) of one forward+backward of candidate ``name`` in a fresh process."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "from harness import _memory_child; "
        f"print(_memory_child({config!r}, {name!r}, {rank}, {channels!r}, {layout!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _status_kb(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (e.g. VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/self/status")


def _memory_child(
    config: str, name: str, rank: int, channels: int | None, layout: str = "cf"
) -> float:
    """Child side of :func:`peak_memory_mb`: peak RSS during one fwd+bwd minus the RSS before.

    The peak is ``VmHWM`` of this process's own address space, reset just before the pass
    (``/proc/self/clear_refs``); ``ru_maxrss`` cannot be used: Linux carries the parent's
    high-water mark over ``fork``/``exec``. No warm-up (the module, the input and an output
    gradient of the input's shape are all that exist before).
    """
    torch.set_num_threads(2)
    shape, _ = CONFIGS[config]
    if channels:
        shape = (shape[0], channels, *shape[2:])
    module = make_candidates(config, rank, channels)[name]
    x = make_input(shape, layout)
    grad = make_input(shape, layout).detach()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    module(x).backward(grad)
    return max(_status_kb("VmHWM") - before, 0) / 1024


def run(
    configs: list[str],
    ranks: dict[str, list[int]],
    channels: dict[str, list[int]],
    repeats: int = 5,
    device: str = "cpu",
    memory: bool = True,
    log: Callable[[str], None] = print,
    layouts: Sequence[str] = ("cf",),
) -> list[Result]:
    """Time every candidate for each config and rank (rank sweep), then C = T sweeps (rank = C).

    Every job runs once per input layout in ``layouts`` ("cf" and / or "cl").
    """
    dev = torch.device(device)
    results = []
    jobs = [(cfg, r, None) for cfg in configs for r in ranks.get(cfg, [])]
    jobs += [(cfg, ch, ch) for cfg in configs for ch in channels.get(cfg, [])]
    jobs = [(*job, layout) for job in jobs for layout in layouts]
    for job, (cfg, rank, ch, layout) in enumerate(jobs):
        shape, _ = CONFIGS[cfg]
        shape = (shape[0], ch or shape[1], *shape[2:])
        mods = make_candidates(cfg, rank, ch)
        times = time_candidates(mods, shape, repeats, dev, layout)
        for name, mod in mods.items():
            tf, tb = times[name]
            res = Result(
                cfg, name, rank if "cp" in name or name == "tucker" else None, shape[1],
                hrank.parameter_count(mod), _macs(name, mod, shape, rank),
                statistics.median(tf) * 1e3, statistics.median(tb) * 1e3, _noise(tf), _noise(tb),
            )  # fmt: skip
            res.extra["job"] = job
            res.layout = layout
            if name == "tucker":
                res.extra["tucker_rank"] = mod.rank
            if memory and dev.type == "cpu" and ch is None:
                res.peak_mb = peak_memory_mb(cfg, name, rank, ch, layout)
            results.append(res)
            log(f"{cfg} {layout} C={shape[1]} rank={rank} {name}: fwd {res.fwd_ms:.1f} ms, "
                f"fwd+bwd {res.fwdbwd_ms:.1f} ms")  # fmt: skip
    return results


def to_markdown(results: list[Result]) -> str:
    """One table per measured job (config, C, rank), with ratios to that job's dense conv."""
    lines = []
    jobs: dict[int, list[Result]] = {}
    for r in results:
        jobs.setdefault(r.extra["job"], []).append(r)
    for rows in jobs.values():
        dense = next(r for r in rows if r.name == "dense")
        rank = next(r.rank for r in rows if r.name.startswith("cp"))
        shape = CONFIGS[dense.config][0]
        lines += [
            f"### {dense.config}: input ({shape[0]}, {dense.channels}, "
            f"{', '.join(map(str, shape[2:]))}) {LAYOUT_NAMES[dense.layout]}, "
            f"C = T = {dense.channels}, CP rank {rank}",
            "",
            "| layer | params | GFLOP fwd | fwd ms | fwd+bwd ms | x faster than dense fwd / "
            "fwd+bwd | GFLOP/s fwd / fwd+bwd | FLOP ratio | realised | peak MB | noise |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            gflop = 2 * r.macs / 1e9
            ratio = dense.macs / r.macs
            sf, sb = dense.fwd_ms / r.fwd_ms, dense.fwdbwd_ms / r.fwdbwd_ms
            name = r.name + (
                f" (rank {r.extra['tucker_rank']})" if "tucker_rank" in r.extra else ""
            )
            peak = "-" if r.peak_mb is None else f"{r.peak_mb:.0f}"
            lines.append(
                f"| {name} | {r.params} | {gflop:.2f} | {r.fwd_ms:.1f} | {r.fwdbwd_ms:.1f} | "
                f"{sf:.2f} / {sb:.2f} | {gflop / r.fwd_ms * 1e3:.0f} / "
                f"{3 * gflop / r.fwdbwd_ms * 1e3:.0f} | {ratio:.1f} | {sb / ratio:.0%} | {peak} | "
                f"{r.fwd_noise:.0%} / {r.fwdbwd_noise:.0%} |"
            )
        lines.append("")
    lines.append(
        "GFLOP = 2 x MACs of the forward; fwd+bwd GFLOP/s counts 3x the forward FLOPs. "
        "FLOP ratio = dense MACs / layer MACs; realised = (fwd+bwd speed-up) / FLOP ratio. "
        "Peak MB: growth of the peak resident set over one fwd+bwd in a fresh process "
        "(rank sweep only). Noise: (max - min) / median of the timed runs, fwd / fwd+bwd."
    )
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> None:
    """Fwd+bwd time vs rank and vs channels (the paper's figure 6, measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = sorted({r.config for r in results})
    fig, axes = plt.subplots(len(cfgs), 2, figsize=(11, 4 * len(cfgs)), squeeze=False)
    for row, cfg in zip(axes, cfgs):
        base = CONFIGS[cfg][0][1]
        by_rank = [r for r in results if r.config == cfg and r.channels == base]
        by_ch = [r for r in results if r.config == cfg and r.rank in (None, r.channels)]
        for ax, rows, key, label in (
            (row[0], by_rank, "rank", "CP rank"), (row[1], by_ch, "channels", "C = T (rank = C)")
        ):  # fmt: skip
            layouts = {r.layout for r in rows}
            label_of = (lambda r: r.name) if len(layouts) == 1 else (
                lambda r: f"{r.name} [{r.layout}]"
            )  # fmt: skip
            for name in sorted({label_of(r) for r in rows}):
                pts = sorted((getattr(r, key) if key == "channels" else r.rank, r.fwdbwd_ms)
                             for r in rows if label_of(r) == name)  # fmt: skip
                if key == "rank" and name.split(" [")[0] in ("dense", "(2+1)D"):
                    xs = sorted({r.rank for r in rows if r.rank is not None})
                    y = statistics.median(t for _, t in pts)
                    ax.plot(xs, [y] * len(xs), "--", label=name)
                    continue
                pts = [p for p in pts if p[0] is not None]
                if pts:
                    ax.plot(*zip(*pts), "o-", label=name)
            ax.set_xlabel(label)
            ax.set_ylabel("forward+backward ms (median)")
            ax.set_yscale("log")
            ax.set_title(f"{cfg}: {key} sweep")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: list[Result], out_dir: Path) -> None:
    """Write results.md, results.json and speed.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(to_markdown(results))
    (out_dir / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    plot(results, out_dir / "speed.png")
