"""Open a detector for inference: a PyTorch checkpoint or an exported ONNX model, placed on a device.

Heavy modules (torch, onnxruntime) are imported inside the functions: the CLI imports this module
for every command, --help included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from featherface_tune.errors import InputError


def open_model(checkpoint: Path, preset: Optional[str] = None, config: Optional[Path] = None,
               overrides: Optional[Sequence[str]] = None, threads: Optional[int] = None) -> tuple[Any, Any, bool]:
    """(model, config, inferred) of a checkpoint file. The config comes from `preset`/`config` (with
    `overrides` applied) when either is given, else it is inferred from the checkpoint (then
    `overrides` apply). An ONNX file runs in onnxruntime with its stored config; its session opens
    with `threads` intra-op threads at once."""
    from featherface_tune.deploy.runtime import is_onnx_file

    if is_onnx_file(checkpoint):
        return _open_onnx(checkpoint, preset, config, overrides, threads)
    from featherface_tune.models.checkpoint import check_finite, load_model, read_checkpoint
    from featherface_tune.models.presets import resolve_config

    ck = read_checkpoint(checkpoint)
    check_finite(ck)  # NaN weights detect nothing: say so instead of printing an empty result
    if preset is None and config is None:
        return load_model(ck, None, overrides or [])
    return load_model(ck, resolve_config(preset, config, overrides or []))


def _open_onnx(checkpoint: Path, preset: Optional[str], config: Optional[Path],
               overrides: Optional[Sequence[str]], threads: Optional[int]) -> tuple[Any, Any, bool]:
    from featherface_tune.deploy.runtime import OnnxModel

    if preset is not None or config is not None or overrides:
        raise InputError(field="checkpoint", value=Path(checkpoint), refs=("preset", "config", "overrides"),
                         rule="is an ONNX model: its config is stored in it, so {preset}/{config}/{overrides} "
                              "do not apply")
    model = OnnxModel.load(checkpoint, threads)
    return model, model.config, False


def place_model(model: Any, device: str, threads: Optional[int]) -> Any:
    """Set torch's CPU threads and move the model to `device`; returns the torch.device. An ONNX
    model runs on onnxruntime's CPU provider, with `threads` intra-op threads when given."""
    from featherface_tune.training.device import resolve_device, set_threads

    if not hasattr(model, "to"):  # featherface_tune.deploy.runtime.OnnxModel
        if device not in ("auto", "cpu"):
            raise InputError(field="device", value=device, rule="an ONNX model runs on onnxruntime's CPU provider; use cpu")
        if threads is not None:
            model.set_threads(threads)
        import torch

        return torch.device("cpu")

    dev = resolve_device(device)
    set_threads(threads)
    model.to(dev)
    return dev
