"""Predict valence / arousal (and expression) on images, folders, videos and webcams.

Usage::

    from hoconv.app.predict import Options, predict
    summary = predict(["clip.mp4", "photos/"], "best.pt", "out/")

Modules: :mod:`~hoconv.app.predict.video` (inputs), :mod:`~hoconv.app.predict.detect` (faces),
:mod:`~hoconv.app.predict.model` (checkpoint settings), :mod:`~hoconv.app.predict.run`
(scoring), :mod:`~hoconv.app.predict.outputs` (files).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hoconv.app.predict.model import SYNTHETIC_WARNING, Scorer, load_checkpoint
from hoconv.app.predict.outputs import write_outputs
from hoconv.app.predict.run import Options, SourceResult, predict_sources
from hoconv.app.predict.video import expand_inputs


class NothingPredicted(ValueError):
    """No frame of any input could be scored (the output files are still written)."""


def predict(
    inputs: list[str],
    checkpoint: str | tuple[nn.Module, dict],
    out_dir: str | Path,
    options: Options | None = None,
    *,
    annotate: str = "video",
    image_size: int | None = None,
    clip_length: int | None = None,
    margin: float | None = None,
    device: str = "cpu",
    webcam_frames: int | None = 300,
) -> dict:
    """Score every face of every frame of ``inputs`` and write the outputs to ``out_dir``.

    Args:
        inputs: image files, folders, video files, webcam indices (``"0"``).
        checkpoint: a checkpoint path, or an already loaded ``(model, meta)``.
        out_dir: output folder (created).
        options: detection / scoring options.
        annotate: ``"video"`` (annotated WebM per video), ``"sheet"`` or ``"none"``; images
            always get a full-resolution annotated JPEG and a contact sheet unless ``"none"``.
        image_size, clip_length, margin: override the checkpoint's training values.
        device: where to run the model.
        webcam_frames: frames to read from a webcam.

    Returns:
        Summary: ``inputs``, ``frames``, ``scored``, ``no_face``, ``clamped`` (valence /
        arousal values outside [-1, 1], clamped to it), ``warnings`` (one line each),
        ``files`` (written paths).

    Raises:
        NothingPredicted: no frame could be scored (after writing the outputs).
    """
    options = options or Options()
    model, meta = (
        load_checkpoint(checkpoint, device) if isinstance(checkpoint, (str, Path)) else checkpoint
    )
    scorer = Scorer(model, meta, image_size, clip_length, margin, device)
    sources, problems = expand_inputs(list(inputs), webcam_frames)
    warnings = [reason if reason.startswith("no such file") else f"{path}: {reason}"
                for path, reason in problems]  # fmt: skip
    if scorer.trained_on == "synthetic":
        warnings.insert(0, SYNTHETIC_WARNING)
    results = predict_sources(sources, scorer, options)
    results += [_problem_result(path, reason) for path, reason in problems]
    for res in results:
        warnings += _result_warnings(res, options.max_frames)
    settings = _settings(checkpoint, scorer, options)
    clamped = sum(r.clamped for r in results)
    if clamped:
        values = 2 * sum(r.scored for r in results)
        warnings.append(
            f"{clamped} of {values} valence/arousal values were outside [-1, 1] and clamped to "
            "it (the checkpoint's head is unbounded; retrain for a tanh-bounded head)"
        )
    files = write_outputs(results, settings, Path(out_dir), annotate, warnings=warnings)
    summary = {
        "inputs": len(results),
        "frames": sum(r.frames for r in results),
        "scored": sum(r.scored for r in results),
        "no_face": sum(1 for r in results for row in r.rows if row["reason"] == "no face detected"),
        "clamped": clamped,
        "warnings": warnings,
        "files": [str(f) for f in files],
    }
    _raise_if_nothing_scored(summary, problems, options, Path(out_dir))
    return summary


def _result_warnings(res: SourceResult, max_frames: int | None) -> list[str]:
    """The warning lines of one input: its error, no face at all, or frames missing."""
    out = []
    if res.error and res.source.kind != "missing":
        out.append(res.error)
    elif res.frames and not res.scored:
        out.append(f"{res.source.path}: no face found in any of {res.frames} frame(s)")
    announced = res.source.frame_count if res.source.kind == "video" else None
    if announced and max_frames:
        announced = min(announced, max_frames)
    if announced and res.frames < announced:
        out.append(
            f"{res.source.path}: read {res.frames} of the {announced} frames the file "
            "announces (truncated or corrupt); the rest is not in the outputs"
        )
    return out


def _settings(checkpoint: str | Path | tuple, scorer: Scorer, options: Options) -> dict:
    """The settings block of ``predictions.json``: what the frames were scored with."""
    return {
        "checkpoint": str(checkpoint) if isinstance(checkpoint, (str, Path)) else None,
        "model": scorer.name, "mode": scorer.mode, "image_size": scorer.image_size,
        "clip_length": scorer.clip_length if scorer.temporal else None,
        "clip_stride": scorer.clip_stride if scorer.temporal else None,
        "margin": scorer.margin, "align_margin": scorer.align_margin, "num_outputs": scorer.num_outputs,
        "expressions": list(scorer.expressions), "detect": options.detect,
        "detector": options.detector if options.detect else None,
        "min_face": options.min_face, "detect_every": options.detect_every,
        "all_faces": options.all_faces, "cascade": options.cascade, "smooth": options.smooth,
        "step": options.step, "normalisation": "RGB, (x / 255 - 0.5) / 0.5",
    }  # fmt: skip


def _raise_if_nothing_scored(
    summary: dict, problems: list[tuple[str, str]], options: Options, out_dir: Path
) -> None:
    """Raise :class:`NothingPredicted` (one line) when no frame of any input was scored."""
    if summary["scored"]:
        return
    if problems and len(problems) == summary["inputs"]:
        raise NothingPredicted("; ".join(w for w in summary["warnings"] if w != SYNTHETIC_WARNING))
    hint = " (use --no-detect for inputs that are face crops)" if options.detect else ""
    raise NothingPredicted(
        f"nothing could be scored in {summary['inputs']} input(s), {summary['frames']} frame(s)"
        f"{hint}; reasons written to {out_dir / 'predictions.csv'}"
    )


def _problem_result(path: str, reason: str) -> SourceResult:
    from hoconv.app.predict.run import COLUMNS
    from hoconv.app.predict.video import Source

    row = dict.fromkeys(COLUMNS, "")
    row.update(file=path, reason=reason)
    return SourceResult(Source(path, "missing"), rows=[row], error=reason)


__all__ = ["NothingPredicted", "Options", "Scorer", "SourceResult", "predict"]
