"""Checkpoints saved by the official FeatherFace code and by RetinaFace (biubug6/Pytorch_Retinaface).

Both save a plain state dict in the key layout `featherface_tune` builds (`body.stage1.0.0.weight`,
`bifpn.0.p3_down_channel.0.conv.weight`, `ssh1.conv3X3.0.offset_conv.weight`, `ClassHead.0.conv1x1.weight`
...), sometimes wrapped in a dict (`{'state_dict': ...}`, `{'model': ...}`, `{'net': ...}`) and sometimes
with the `module.` prefix of `nn.DataParallel`. This module reads such files safely (`weights_only`
unpickling), infers the config from the tensor shapes, and loads with strict checking: any missing,
unexpected or wrongly shaped key is a one-line error that says which config fields to change.

The only leniency: `num_batches_tracked` buffers may be absent (checkpoints written before PyTorch 0.4.1
have none); the model's own values are kept for them. They do not affect inference.

Plain vs no channel shuffle: a plain shuffle has no parameters, so a checkpoint without `sshN_cs.*`
keys cannot tell `shuffle="plain"` from `shuffle="none"`. `infer_config` guesses from the rest of the
network: FPN neck with plain (non-deformable) SSH is RetinaFace, which has no shuffle -> "none";
anything else (BiFPN or deformable SSH: the FeatherFace family, whose block-less variants keep the
permutation) -> "plain". Pass `shuffle_hint` (or `--set shuffle=...` on the command line) to override.
The number of shuffle groups leaves no trace either; it is taken as 2, the official value.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from featherface_tune.errors import ConfigError, InputError
from featherface_tune.models.arch import infer_fields
from featherface_tune.models.config import FIELD_NAMES, FeatherFaceConfig, apply_overrides, from_mapping

# Keys under which training scripts commonly store the state dict, tried in this order.
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "state", "weights",
                                 "params", "module")
# Prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile.
STRIP_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
# Buffers that are not learnable parameters.
_BUFFER_SUFFIXES: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")
_SHOW = 4  # keys shown per list in error messages


@dataclass(frozen=True)
class Checkpoint:
    """A state dict read from a file, with how it was stored."""

    path: str
    state_dict: dict[str, torch.Tensor]
    wrapper: str | None = None  # the wrapping dict key, e.g. "state_dict"; None when plain
    stripped_prefix: str | None = None  # e.g. "module."
    extra: dict[str, str] = field(default_factory=dict)  # other top-level entries: name -> type name
    stored_config: dict[str, Any] | None = None  # a "config" table saved beside the weights (train's model.pt)

    @property
    def learnable_params(self) -> int:
        return count_learnable(self.state_dict)


# ---- reading ------------------------------------------------------------------------------

def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _unwrap(obj: Any, depth: int = 0) -> tuple[dict[str, torch.Tensor], str | None] | None:
    if _is_state_dict(obj):
        return dict(obj), None
    if not isinstance(obj, Mapping) or depth > 2:
        return None
    for key in WRAPPER_KEYS:
        if key in obj:
            found = _unwrap(obj[key], depth + 1)
            if found is not None:
                inner = found[1]
                return found[0], key if inner is None else f"{key}.{inner}"
    return None


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str | None]:
    """Remove a `module.` (or `_orig_mod.`) prefix from every key that has it, like RetinaFace's
    `remove_prefix`. Returns the new dict and the prefix removed (None if none)."""
    for prefix in STRIP_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            out: dict[str, torch.Tensor] = {}
            for k, v in state_dict.items():
                nk = k[len(prefix):] if k.startswith(prefix) else k
                if nk in out:
                    raise InputError(f"checkpoint has both {k!r} and {nk!r} after removing {prefix!r}")
                out[nk] = v
            again, more = strip_prefix(out)
            return again, prefix if more is None else prefix + more
    return dict(state_dict), None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file safely (tensors and plain containers only) and unwrap its state dict.

    Raises InputError with a one-line message for a missing file, a file that is not a PyTorch
    checkpoint, or a checkpoint holding no state dict.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"checkpoint {str(p)!r} does not exist")
    if not p.is_file():
        raise InputError(f"checkpoint {str(p)!r} is not a file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        glob = re.search(r"GLOBAL (\S+)", text)
        if "Unsupported global" in text:
            what = f" ({glob.group(1)})" if glob else ""
            raise InputError(f"checkpoint {str(p)!r} holds Python objects besides tensors{what}; "
                             "refusing to unpickle it (unsafe) - save model.state_dict() instead") from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        first = detail.group(1).strip() if detail else (text.strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{str(p)!r} is not a PyTorch checkpoint ({first[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError,
            AttributeError, ImportError, IndexError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or truncated file"
        raise InputError(f"{str(p)!r} is not a PyTorch checkpoint ({first[:160]})") from None
    found = _unwrap(obj)
    if found is None:
        what = (f"a dict with keys {_short(sorted(map(str, obj)))}" if isinstance(obj, Mapping)
                else f"a {type(obj).__name__}")
        raise InputError(f"checkpoint {str(p)!r} holds no state dict (found {what}; looked for a "
                         f"mapping of tensors, plain or under {', '.join(repr(k) for k in WRAPPER_KEYS)})")
    sd, wrapper = found
    _check_tensors(sd, p)
    stored_digest = obj.get(DIGEST_KEY) if isinstance(obj, Mapping) and wrapper is not None else None
    if stored_digest is not None and stored_digest != weights_digest(sd):
        raise InputError(f"checkpoint {str(p)!r}: its weights do not match the digest stored when it was saved "
                         "(bytes of the file changed: a damaged copy or an edit); refusing to use them")
    sd, prefix = strip_prefix(sd)
    extra: dict[str, str] = {}
    if wrapper is not None:
        top = wrapper.split(".")[0]
        extra = {str(k): type(v).__name__ for k, v in obj.items() if k != top}
    stored = obj.get("config") if isinstance(obj, Mapping) and wrapper is not None else None
    if not (isinstance(stored, Mapping) and stored and set(stored) <= set(FIELD_NAMES)):
        stored = None
    return Checkpoint(str(p), sd, wrapper, prefix, extra, dict(stored) if stored else None)


DIGEST_KEY = "weights_sha256"  # beside the state dict in the files the tool writes (train's model.pt)


def weights_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: every key with its tensor's dtype, shape and bytes, in key order. Written
    when the tool saves weights and checked when it reads them, so a flipped byte is named, not used."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_tensors(state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Only dense tensors with data: a sparse, quantized or meta tensor (no data) cannot be loaded into
    the model's parameters and used to raise deep inside load_state_dict."""
    for key, t in state_dict.items():
        if t.layout != torch.strided or t.is_meta or t.is_quantized:
            kind = "a meta tensor (no data)" if t.is_meta else f"a {t.layout} tensor" if t.layout != torch.strided \
                else "a quantized tensor"
            raise InputError(f"checkpoint {str(path)!r}: {key} is {kind}; only dense weights can be loaded")


def check_finite(ck: Checkpoint) -> None:
    """Raise InputError when a floating-point tensor of the checkpoint holds NaN or infinity (a run
    that diverged): such a model outputs NaN scores and detects nothing."""
    bad = [k for k, v in ck.state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(f"checkpoint {str(ck.path)!r}: {len(bad)} tensor(s) hold NaN or infinite values "
                         f"(e.g. {bad[0]}); the model cannot detect anything (did its training diverge?)")


def as_state_dict(source: str | Path | Checkpoint | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """State dict and a name for messages, from a path, a Checkpoint or a mapping (prefix stripped)."""
    if isinstance(source, Checkpoint):
        return source.state_dict, source.path
    if isinstance(source, (str, Path)):
        ck = read_checkpoint(source)
        return ck.state_dict, ck.path
    if not _is_state_dict(source):
        found = _unwrap(source)
        if found is None:
            raise InputError("state dict must be a non-empty mapping of names to tensors")
        source = found[0]
    sd, _ = strip_prefix(source)
    return sd, "state dict"


def count_learnable(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Learnable parameters in a state dict: every tensor except BatchNorm running statistics and
    `num_batches_tracked` counters."""
    return sum(v.numel() for k, v in state_dict.items() if not k.endswith(_BUFFER_SUFFIXES))


# ---- inferring the config -----------------------------------------------------------------

def infer_config(state_dict: Mapping[str, torch.Tensor], shuffle_hint: str | None = None) -> FeatherFaceConfig:
    """The config whose model has exactly this state dict's keys and shapes.

    Each block of the architecture reads its fields off the key shapes (`arch.infer_fields`): widths
    from tensor shapes, block presence from key presence. `shuffle_hint` decides plain vs none when
    the checkpoint has no shuffle-block keys (see the module docstring for the default). Raises
    InputError when the keys are not those of a FeatherFace-family detector.
    """
    sd, _ = strip_prefix(state_dict)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    fields = infer_fields(shapes, {"shuffle": shuffle_hint} if shuffle_hint is not None else None)
    try:
        return FeatherFaceConfig(**fields)
    except ConfigError as exc:
        raise ConfigError(f"the checkpoint's inferred config is not valid: {exc}") from None


# ---- strict loading ----------------------------------------------------------------------

@dataclass(frozen=True)
class KeyReport:
    """How a state dict differs from a model's."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    wrong_shape: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # key, checkpoint, model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, missing_label: str = "missing") -> str:
        """'N missing (...); N unexpected (...); N wrongly shaped (...)', lists shortened."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} {missing_label} ({_short(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_short(self.unexpected)})")
        if self.wrong_shape:
            shown = [f"{k} {_fmt_shape(a)} vs model {_fmt_shape(b)}" for k, a, b in self.wrong_shape]
            parts.append(f"{len(shown)} wrongly shaped ({_short(shown)})")
        return "; ".join(parts)


def compare_keys(model: nn.Module | Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    """Missing (model has, checkpoint lacks), unexpected and wrongly shaped keys; `model` may be
    the module or its state dict. A missing `num_batches_tracked` is tolerated (old checkpoints
    have none)."""
    own = model.state_dict() if isinstance(model, nn.Module) else model
    missing = tuple(k for k in own if k not in state_dict and not k.endswith("num_batches_tracked"))
    unexpected = tuple(k for k in state_dict if k not in own)
    wrong = tuple((k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape))
    return KeyReport(missing, unexpected, wrong)


def _short(items: Sequence[str], n: int = _SHOW) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _fmt_shape(s: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, s)) + "]"


def _field_changes(config: FeatherFaceConfig, wanted: FeatherFaceConfig) -> list[str]:
    out = []
    for name in FIELD_NAMES:
        a, b = getattr(config, name), getattr(wanted, name)
        if a != b:
            v = list(b) if isinstance(b, tuple) else b
            out.append(f"{name}={_toml_value(v)}")
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ",".join(_toml_value(x) for x in v) + "]"
    return str(v)


def mismatch_message(report: KeyReport, config: FeatherFaceConfig | None,
                     state_dict: Mapping[str, torch.Tensor], name: str) -> tuple[str, type[Exception]]:
    """One-line description of a key mismatch, with the config fields to change when the checkpoint's
    own config can be inferred. Returns (message, error class)."""
    msg = f"{name} does not fit the model: " + report.describe()
    try:
        wanted = infer_config(state_dict, shuffle_hint=config.shuffle if config and config.shuffle != "block" else None)
    except (InputError, ConfigError) as exc:
        return msg + f"; it is not a FeatherFace-family checkpoint ({exc})", InputError
    if config is not None:
        changes = _field_changes(config, wanted)
        if changes:
            return msg + "; change the config: " + ", ".join(changes) + \
                " (or give no config, to use the inferred one)", ConfigError
    return msg, ConfigError


def load_state_dict_strict(model: nn.Module, source: str | Path | Checkpoint | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load into `model` with strict key and shape checking; a mismatch raises ConfigError (fixable
    by config fields) or InputError (not a FeatherFace-family checkpoint), one line each."""
    sd, name = as_state_dict(source)
    own = model.state_dict()
    report = compare_keys(own, sd)
    if not report.ok:
        cfg = getattr(model, "config", None)
        msg, cls = mismatch_message(report, cfg if isinstance(cfg, FeatherFaceConfig) else None, sd, name)
        raise cls(msg)
    full = {**own, **sd}  # the model's own values fill what was tolerated (absent num_batches_tracked)
    bad = [k for k, v in sd.items() if v.is_floating_point() != own[k].is_floating_point()]
    if bad:
        raise InputError(f"{name}: tensors of the wrong kind (integer vs float): {_short(bad)}")
    model.load_state_dict(full, strict=True)
    return model


def load_model(source: str | Path | Checkpoint, config: FeatherFaceConfig | None = None,
               overrides: Sequence[str] | Mapping[str, Any] = ()) -> tuple[nn.Module, FeatherFaceConfig, bool]:
    """Build and load the model of a checkpoint, in eval mode.

    With `config` None the config saved in the checkpoint is used (`featherface-tune train` stores
    it), else it is inferred from the tensors; then `overrides` (field=value strings or a dict) are
    applied on top (e.g. `shuffle=none`). Returns (model, config, inferred).
    """
    from featherface_tune.models.builder import build_model

    if not isinstance(source, (Checkpoint, str, Path)):
        raise InputError(f"source: give a checkpoint file path (str or Path) or a Checkpoint, not "
                         f"{type(source).__name__} (a state dict is loaded with model.load_state_dict)")
    if config is not None and not isinstance(config, FeatherFaceConfig):
        config = from_mapping(dict(config), source="config") if isinstance(config, Mapping) else config
        if not isinstance(config, FeatherFaceConfig):
            raise InputError(f"config: give a FeatherFaceConfig or a mapping of its fields, not {type(config).__name__}")
    ck = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    check_finite(ck)  # what a digest cannot vouch for (a foreign file): at least no NaN or infinity
    inferred = config is None
    if config is None:
        config = (from_mapping(ck.stored_config, source=f"{ck.path} [config]") if ck.stored_config
                  else infer_config(ck.state_dict))
        config = apply_overrides(config, overrides)
    model = build_model(config)
    load_state_dict_strict(model, ck)
    model.eval()
    return model, config, inferred


# ---- the ImageNet-pretrained backbone ----------------------------------------------------

def load_backbone_pretrained(model: nn.Module, path: str | Path) -> int:
    """Load the MobileNetV1-0.25 ImageNet checkpoint (`mobilenetV1X0.25_pretrain.tar`) into the
    model's backbone (`model.body`, or `model` itself if it is the backbone).

    `module.` is stripped; every backbone key must be present with its shape; the classifier
    `fc.weight` / `fc.bias` are the only keys allowed to be left over. Returns the number of tensors
    loaded.
    """
    body = getattr(model, "body", model)
    ck = read_checkpoint(path)
    sd = ck.state_dict
    own = body.state_dict()
    allowed_left = {"fc.weight", "fc.bias"}
    report = compare_keys(own, {k: v for k, v in sd.items() if k not in allowed_left})
    if not report.ok:
        hint = ""
        if "stage1.0.0.weight" in sd and report.wrong_shape:
            hint = (f"; the checkpoint is a MobileNetV1 of width {sd['stage1.0.0.weight'].shape[0] / 32:g}, "
                    f"set backbone_width to it")
        raise InputError(f"{ck.path} is not a matching MobileNetV1 backbone checkpoint: "
                         + report.describe("backbone keys missing") + hint)
    body.load_state_dict({**own, **{k: v for k, v in sd.items() if k in own}}, strict=True)
    return sum(1 for k in sd if k in own)
