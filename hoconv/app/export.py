"""Export a trained model to ONNX or TorchScript, and check the export against PyTorch.

The exported graph takes the normalised input the model was trained on, RGB
``(x / 255 - 0.5) / 0.5``: ``(N, 3, S, S)`` images for a 2-D model, ``(N, 3, T, S, S)``
clips of exactly ``T`` = the training clip length for a 3-D model (the batch axis is
dynamic, the others are fixed). A JSON file next to it (``<out>.json``) records the input
shape, the normalisation and the output columns.

ONNX uses ``torch.onnx.export`` (the TorchScript-based exporter, or the ``torch.export``
based one with ``dynamo=True``; both need the optional ``onnx`` package, the check needs
``onnxruntime``: ``pip install -e ".[export]"`` in a clone). TorchScript uses ``torch.jit.trace``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx", "torchscript")


def input_shape(model: nn.Module, meta: dict, image_size: int | None = None,
                clip_length: int | None = None) -> tuple[int, ...]:  # fmt: skip
    """Example input shape ``(1, 3, [T,] S, S)`` from the checkpoint's training settings."""
    from hoconv.app.engine.build import spatial_dims
    from hoconv.app.predict.model import training_setting

    dims = spatial_dims(model)
    if dims not in (2, 3):
        raise ValueError(f"--checkpoint: cannot export a model with {dims}-D inputs (2-D or 3-D)")
    size = int(image_size or training_setting(meta, "image_size") or 0)
    if size < 8:
        raise ValueError("--image-size: the checkpoint does not say its image size; pass it")
    if dims == 2:
        return (1, 3, size, size)
    length = int(clip_length or training_setting(meta, "clip_length") or 16)
    return (1, 3, length, size, size)


def export_model(
    model: nn.Module, path: str | Path, fmt: str, example: torch.Tensor, dynamo: bool = False
) -> Path:
    """Write ``model`` (in eval mode) traced on ``example`` as ``fmt`` to ``path``.

    Args:
        model: the network.
        path: output file.
        fmt: ``"onnx"`` or ``"torchscript"``.
        example: an input of the exported shape (its batch size may vary later).
        dynamo: ONNX through ``torch.export`` instead of the TorchScript-based exporter.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter; the export is checked
        if fmt == "torchscript":
            traced = torch.jit.trace(model, (example,), check_trace=False)
            traced.save(str(path))
            return path
        try:
            import onnx  # noqa: F401
        except ImportError as err:
            raise ValueError(
                '--format onnx needs the onnx package: pip install -e ".[export]"'
            ) from err
        if dynamo:
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["input"],
                              output_names=["output"], dynamic_shapes=({0: batch},))  # fmt: skip
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], opset_version=17,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})  # fmt: skip
    return path


def run_exported(path: str | Path, fmt: str, x: torch.Tensor) -> np.ndarray:
    """Outputs of an exported file on ``x`` (ONNX Runtime or ``torch.jit.load``)."""
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, torch >= 2.9
            return torch.jit.load(str(path)).eval()(x).numpy()
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ValueError(
            'checking an ONNX export needs onnxruntime: pip install -e ".[export]"'
        ) from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def max_difference(model: nn.Module, path: str | Path, fmt: str, x: torch.Tensor) -> float:
    """Largest absolute difference between PyTorch and the exported file on ``x``."""
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = run_exported(path, fmt, x)
    if got.shape != expected.shape:
        raise ValueError(f"export gives shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max())


def export_checkpoint(
    checkpoint: str | Path | tuple[nn.Module, dict],
    out: str | Path,
    fmt: str,
    *,
    image_size: int | None = None,
    clip_length: int | None = None,
    dynamo: bool = False,
    check: bool = True,
) -> dict:
    """Export a checkpoint's model and write ``<out>.json``; check it when possible.

    Args:
        checkpoint: a checkpoint path or a loaded ``(model, meta)``.
        out: output file.
        fmt: ``"onnx"`` or ``"torchscript"``.
        image_size, clip_length: override the training values.
        dynamo: see :func:`export_model`.
        check: compare with PyTorch on a random batch of 2 (skipped for ONNX without
            onnxruntime; the result says so).

    Returns:
        The sidecar's content: ``file``, ``format``, ``model``, ``input_shape``,
        ``normalisation``, ``outputs``, ``max_abs_difference`` (None when not checked).
    """
    if isinstance(checkpoint, (str, Path)):
        from hoconv.app.predict.model import load_checkpoint

        model, meta = load_checkpoint(str(checkpoint))
    else:
        model, meta = checkpoint
    shape = input_shape(model, meta, image_size, clip_length)
    example = torch.zeros(shape)
    path = export_model(model, out, fmt, example, dynamo)
    diff = None
    if check and not (fmt == "onnx" and _missing("onnxruntime")):
        x = torch.randn((2, *shape[1:]), generator=torch.Generator().manual_seed(0))
        diff = max_difference(model, path, fmt, x)
    from hoconv.app.predict.model import model_display_name

    with torch.no_grad():
        num_outputs = int(model(example).shape[-1])
    info = {
        "file": str(path), "format": fmt, "model": model_display_name(meta.get("model")),
        "input_shape": ["N", *shape[1:]], "input_layout": "NCHW" if len(shape) == 4 else "NCTHW",
        "normalisation": "RGB, (x / 255 - 0.5) / 0.5", "num_outputs": num_outputs,
        "outputs": "columns 0, 1 = valence, arousal; 2: = expression logits"
        if (meta.get("config") or {}).get("task", "affect") == "affect" else "class logits",
        "max_abs_difference": diff,
    }  # fmt: skip
    Path(f"{path}.json").write_text(json.dumps(info, indent=1))
    return info


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
