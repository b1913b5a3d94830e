"""`featherface-tune export`: a config (and optionally its trained weights) as a verified ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.text import Text
from typing_extensions import Annotated

from featherface_tune.commands._common import (
    ConfigOpt, JsonOpt, PresetOpt, SetOpt, ThreadsOpt, err, fail, handle_errors, out, print_json, resolve,
)


@handle_errors
def export_cmd(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write, e.g. model.onnx.")],
    preset: PresetOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", "-m", help="Trained weights (state dict); without --preset/--config the config is inferred from it. Without it the model has fresh random weights.")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (>= 19: DeformConv).")] = 19,
    with_postprocess: Annotated[bool, typer.Option("--with-postprocess", help="Put priors, decoding and NMS in the graph: it returns boxes, scores and landmarks.")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Verification: largest |ORT - PyTorch| allowed, times (1 + largest |output|).")] = 1e-4,
    threads: ThreadsOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Export a model to ONNX (dynamic batch, any height and width >= 32, deformable convs as DeformConv)
    and verify it: onnxruntime vs PyTorch on random inputs of several sizes. Exits 1 when a difference
    exceeds the tolerance. Config and input convention are stored in the file's metadata. See docs/deploy.md.
    """
    from featherface_tune.extras import require
    from featherface_tune.deploy.export import check_opset, check_writable, export_onnx
    from featherface_tune.errors import InputError

    if not tolerance > 0:
        raise InputError(field="tolerance", value=tolerance, rule="must be positive")
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        require(mod, "export")
    check_opset(opset)
    check_writable(out_path)
    if checkpoint is not None:
        from featherface_tune.inference.model import open_model
        from featherface_tune.deploy.runtime import is_onnx_file

        if is_onnx_file(checkpoint):
            raise InputError(f"--checkpoint {str(checkpoint)!r} is already an ONNX model; export needs "
                             "PyTorch weights (a .pth/.pt checkpoint)")

        model, cfg, inferred = open_model(checkpoint, preset, config, set_)
    else:
        if preset is None and config is None and not set_:
            raise InputError("give --preset, --config/--set or --checkpoint: which model to export")
        from featherface_tune.models.builder import build_model

        cfg = resolve(preset, config, set_)
        model, inferred = build_model(cfg), False
    from featherface_tune.training.device import set_threads

    n_threads = set_threads(threads)
    model = model.cpu().eval()
    # a line even in a pipe or CI log (a spinner shows only on a terminal): this takes minutes
    err.print(f"exporting to {str(out_path)!r} (torch.export + ONNX), then verifying in onnxruntime at "
              f"several sizes, {n_threads} CPU thread{'s' if n_threads != 1 else ''}: about 1-3 minutes on "
              "2 cores", highlight=False)
    with err.status("exporting and verifying..."):
        report = export_onnx(model, cfg, out_path, opset, with_postprocess, tolerance=tolerance)
    data = report.to_json()
    data["config_inferred"] = inferred
    if json_:
        print_json(data)
    else:
        from rich.table import Table

        t = Table(title=f"{out_path}: ONNX opset {opset}, {report.bytes:,} bytes, {report.seconds:.1f} s"
                        + (", with post-processing" if with_postprocess else ""))
        cols = ["input", "max |ORT - PyTorch|", "max |output|", "limit"]
        if with_postprocess:
            cols.append("detections paired (unpaired)")
        for col in cols + ["ok"]:
            t.add_column(col, justify="right")
        for c in report.checks:
            row = ["x".join(map(str, c["input"])), f"{c['max_abs_diff']:.2e}", f"{c['max_abs_output']:.3g}",
                   f"{c['limit']:.2e}"]
            if with_postprocess:
                d = c["detections"]
                row.append(f"{d['paired']} ({d['unpaired']})")
            t.add_row(*row, "yes" if c["ok"] else Text("NO", style="bold red"))
        out.print(t)
    if not report.ok:
        raise fail(f"verification failed: onnxruntime differs from PyTorch by {report.max_abs_diff:.3e}, "
                   f"more than --tolerance {tolerance} x (1 + max |output|); {out_path} was written", 1)
    if not json_:
        err.print(f"wrote {out_path}; largest difference {report.max_abs_diff:.2e} "
                  f"(tolerance {tolerance} x (1 + max |output|))", highlight=False, soft_wrap=True)
