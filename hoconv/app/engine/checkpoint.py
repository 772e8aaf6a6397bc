"""Safe checkpoints: atomic writes, ``weights_only`` loads, format version and digest.

A checkpoint is a plain dict saved with :func:`torch.save`::

    {"format": "hoconv-checkpoint", "format_version": 1, "hoconv_version": "0.1.0",
     "model": {"name": str, "kwargs": dict, "transductions": [dict, ...]},
     "state_dict": ..., "optimizer": ... | None, "scheduler": ... | None,
     "epoch": int, "config": dict, "history": [dict, ...], "best": dict | None,
     "digest": sha256 hex of everything above}

The model entry is enough to rebuild the network: the loader creates the base model from
the registry, re-applies :func:`hoconv.transduce` with each recorded set of arguments (so
the new temporal factors are known as such again), then loads the state dict.

Writes go to a temporary file in the same folder, are flushed to disk and renamed over the
target (:func:`os.replace`), so a crash never leaves a half-written checkpoint under the
real name. Loads use ``torch.load(weights_only=True)``: a file cannot run code. A file from a
newer format, with a wrong digest (tampered / bit rot) or unreadable is refused with a
one-line :class:`CheckpointError`.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from hoconv import __version__

FORMAT = "hoconv-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, tampered or too new."""


def _update_digest(h: Any, obj: Any) -> None:
    """Feed a canonical encoding of ``obj`` (nested containers of tensors/scalars) to ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _update_digest(h, key)
            _update_digest(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _update_digest(h, item)
    elif isinstance(obj, float) and math.isnan(obj):
        h.update(b"Fnan")
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def digest(payload: dict) -> str:
    """sha256 of a checkpoint's content (every key except ``"digest"``)."""
    h = hashlib.sha256()
    _update_digest(h, {k: v for k, v in payload.items() if k != "digest"})
    return h.hexdigest()


def make_checkpoint(
    *,
    model_spec: dict,
    state_dict: dict,
    epoch: int,
    config: dict,
    optimizer: dict | None = None,
    scheduler: dict | None = None,
    history: list | None = None,
    best: dict | None = None,
) -> dict:
    """Assemble a checkpoint dict (see the module docstring) with its digest."""
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "hoconv_version": __version__,
        "model": {
            "name": str(model_spec["name"]),
            "kwargs": dict(model_spec.get("kwargs", {})),
            "transductions": [dict(t) for t in model_spec.get("transductions", [])],
            "pruned_ranks": dict(model_spec.get("pruned_ranks", {})),
        },
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "optimizer": optimizer,
        "scheduler": scheduler,
        "epoch": int(epoch),
        "config": config,
        "history": list(history or []),
        "best": best,
    }
    ckpt["digest"] = digest(ckpt)
    return ckpt


def write_checkpoint(path: str | os.PathLike, ckpt: dict) -> Path:
    """Write ``ckpt`` to ``path`` atomically (temp file in the same folder + rename).

    Raises:
        OSError: the write failed (e.g. disk full); the message names ``path``, the temp
            file is removed and any previous file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save wraps a failed write in RuntimeError
        _unlink_quietly(tmp)
        reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0][:200]
        raise OSError(
            getattr(err, "errno", None) or errno.EIO,
            f"cannot write checkpoint {path} ({reason}); any previous {path.name} is unchanged",
        ) from err
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files an interrupted (killed) write left in ``folder``."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for tmp in stale:
        _unlink_quietly(tmp)
    return stale


def restore_best(folder: str | os.PathLike, last: dict) -> str | None:
    """Make ``folder/best.pt`` hold the best epoch that ``last`` (last.pt) records.

    A run stopped between the best.pt and last.pt writes (or an older run that wrote them
    the other way round) can leave best.pt missing, unreadable or from another epoch.
    When the recorded best is last.pt's own epoch, best.pt is rebuilt from last.pt.

    Returns:
        None when best.pt was fine, else one line saying what was done or why it could
        not be rebuilt.
    """
    best, path = last.get("best"), Path(folder) / "best.pt"
    if not best:
        return None
    try:
        held = read_checkpoint(path).get("epoch") if path.exists() else None
    except CheckpointError:
        held = None  # unreadable: as good as missing
    if held == best["epoch"]:
        return None
    if best["epoch"] == last["epoch"]:
        write_checkpoint(path, last)
        return f"rebuilt {path} from last.pt (best epoch {best['epoch']})"
    if held is not None and held > last["epoch"]:
        return (
            f"{path} holds epoch {held}, after last.pt's epoch {last['epoch']} (the run stopped "
            "between the two writes); the resumed epoch rewrites it"
        )
    return (
        f"{path} should hold epoch {best['epoch']} but {'holds epoch ' + str(held) if held else 'is missing'}"
        f" and last.pt (epoch {last['epoch']}) cannot rebuild it; the next better epoch rewrites it"
    )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and verify a checkpoint; refuse anything unsafe, corrupt, tampered or too new.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is not a readable hoconv checkpoint of a known format,
            or its content does not match its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means: refuse the file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} refused: not a readable weights-only file ({reason[:200]})"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} refused: not a hoconv checkpoint")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint {path} refused: unknown format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} refused: format version {version} (hoconv "
            f"{ckpt.get('hoconv_version', '?')}) is newer than this hoconv {__version__} "
            f"reads (<= {FORMAT_VERSION}); upgrade hoconv"
        )
    if ckpt.get("digest") != digest(ckpt):
        raise CheckpointError(
            f"checkpoint {path} refused: content does not match its digest (tampered or corrupt)"
        )
    return ckpt


def build_model(spec: dict) -> torch.nn.Module:
    """Rebuild a model from a checkpoint's ``"model"`` entry (registry + transductions)."""
    from hoconv.models import create_model

    model = create_model(spec["name"], **spec.get("kwargs", {}))
    if spec.get("transductions"):
        from hoconv.transduction import transduce

        for args in spec["transductions"]:
            model = transduce(model, **args)
    if spec.get("pruned_ranks"):
        _apply_pruned_ranks(model, spec["pruned_ranks"])
    if spec.get("factorized"):  # written by `hoconv compress`
        from hoconv.compress.apply import apply_choices

        apply_choices(model, spec["factorized"])
    return model


def _apply_pruned_ranks(model: torch.nn.Module, ranks: dict) -> None:
    """Shrink the CP / Tucker layers named in ``ranks`` to their pruned rank (CP: an int,
    Tucker: ``[R_out, R_in]``; the weights come from the state dict)."""
    from hoconv.pruning import shrink_to_rank

    for name, rank in ranks.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(
                f"checkpoint names a pruned layer {name!r} the model does not have"
            ) from None
        try:
            shrink_to_rank(layer, rank)
        except ValueError as err:
            raise CheckpointError(f"checkpoint prunes layer {name!r}: {err}") from None


def prune_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, threshold: float = 0.0):
    """Prune a checkpoint's CP / Tucker ranks (magnitude ``<= threshold``); write a smaller one.

    The pruned ranks are recorded in the model spec, so :func:`load_model`, ``train --init``,
    ``evaluate``, ``predict`` and ``export`` rebuild the smaller model.

    Returns:
        The :class:`hoconv.pruning.PruneReport`.
    """
    from hoconv.pruning import prune, rank_layers

    model, meta = load_model(src)
    report = prune(model, threshold)
    spec = dict(meta["model"])
    spec["pruned_ranks"] = {  # CP: int, Tucker: [R_out, R_in]
        name: list(layer.rank) if isinstance(layer.rank, tuple) else layer.rank
        for name, layer in rank_layers(model, "prune")
    }
    ckpt = make_checkpoint(model_spec=spec, state_dict=model.state_dict(), epoch=int(meta.get("epoch", 0)),
                           config=dict(meta.get("config") or {}), history=meta.get("history"),
                           best=meta.get("best"))  # fmt: skip
    write_checkpoint(dst, ckpt)
    return report


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint into a ready model (eval mode) for prediction or export.

    Args:
        path: a checkpoint written by ``hoconv train`` / ``hoconv transduce``.
        device: where to put the model.

    Returns:
        ``(model, meta)`` where ``meta`` is the checkpoint without the tensors
        (``model`` spec, ``config``, ``epoch``, ``best``, ``history``, versions).
    """
    ckpt = read_checkpoint(path)
    model = build_model(ckpt["model"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit model {ckpt['model']['name']!r} "
            f"({str(err).splitlines()[0][:200]})"
        ) from err
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "scheduler")}
    return model, meta


def transduce_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, **transduce_args: Any
) -> dict:
    """Read a (2-D) checkpoint, transduce its model, write a new checkpoint ready for
    ``train --mode video --init dst --phase temporal``.

    Args:
        src: source checkpoint.
        dst: where to write the transduced checkpoint.
        **transduce_args: arguments of :func:`hoconv.transduction.transduce`
            (``dims``, ``kernel_size``, ``stride``, ``padding``, ``dilation``, ``init``).

    Returns:
        The ``"model"`` spec of the new checkpoint.
    """
    from hoconv.transduction import transduce

    model, meta = load_model(src)
    new = transduce(model, **transduce_args)
    spec = dict(meta["model"])
    spec["transductions"] = [*spec.get("transductions", []), dict(transduce_args)]
    config = dict(meta.get("config") or {})
    config.update({"mode": "video", "init": None, "phase": None})
    ckpt = make_checkpoint(model_spec=spec, state_dict=new.state_dict(), epoch=0, config=config)
    write_checkpoint(dst, ckpt)
    return spec
