"""Figures of an evaluation: V/A over time per video (paper fig. 8), circumplex scatter."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_over_time(p: dict[str, np.ndarray], path: Path, *, max_videos: int = 6) -> Path | None:
    """Predicted vs ground-truth valence and arousal against frame index, one row per video."""
    if "video" not in p or "frame" not in p or not len(p["video"]):
        return None
    plt = _pyplot()
    videos = list(dict.fromkeys(p["video"].tolist()))[:max_videos]
    fig, axes = plt.subplots(len(videos), 2, figsize=(10, 2.2 * len(videos)), squeeze=False)
    for row, vid in zip(axes, videos):
        sel = p["video"] == vid
        order = np.argsort(p["frame"][sel], kind="stable")
        frames = p["frame"][sel][order]
        for ax, name in zip(row, ("valence", "arousal")):
            ax.plot(frames, p[name][sel][order], label="ground truth", color="black", lw=1.5)
            ax.plot(
                frames, p[f"pred_{name}"][sel][order], label="prediction", color="tab:red", lw=1.2
            )
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{vid}: {name}", fontsize=9)
            ax.set_xlabel("frame")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_circumplex(p: dict[str, np.ndarray], path: Path, *, max_points: int = 4000) -> Path:
    """Ground truth and predictions on the valence-arousal plane (the affect circumplex)."""
    plt = _pyplot()
    n = len(p["valence"])
    step = max(1, n // max_points)
    fig, ax = plt.subplots(figsize=(5, 5))
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(theta), np.sin(theta), color="grey", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.scatter(p["valence"][::step], p["arousal"][::step], s=6, alpha=0.5, label="ground truth")
    ax.scatter(
        p["pred_valence"][::step], p["pred_arousal"][::step], s=6, alpha=0.5, label="prediction"
    )
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_xlabel("valence")
    ax.set_ylabel("arousal")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_ccc_errorbars(rows: list[dict], path: Path) -> Path:
    """Grouped bars of valence / arousal CCC per network: mean over seeds, std as error bars,
    and each seed's value as a dot (rows of the demo report)."""
    plt = _pyplot()
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(rows)), 4))
    top = 0.0
    for k, dim in enumerate(("valence", "arousal")):
        means = np.array([r["stats"][dim]["ccc"][0] for r in rows])
        stds = np.array([r["stats"][dim]["ccc"][1] for r in rows])
        pos = x + (k - 0.5) * 0.38
        ax.bar(pos, means, 0.38, yerr=stds, capsize=4, label=f"{dim} (mean +- std)")
        for p, r in zip(pos, rows):
            seeds = (r.get("ccc_values") or {}).get(dim, [])
            ax.plot([p] * len(seeds), seeds, "k.", ms=4, label=None)
        top = max(top, float((means + stds).max()))
    ax.plot([], [], "k.", ms=4, label="one seed")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [r["network"] for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"test CCC ({len(rows[0]['seeds'])} seeds)")
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), min(1.0, top + 0.15))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
