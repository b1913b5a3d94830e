"""Where training and inference run: device choice, CPU threads, mixed precision.

One place resolves `--device auto|cpu|cuda|cuda:N|mps` and `--threads N` for every command (train,
predict, detect, the search's proxy, calibrate, latency), so a bad request fails the same way
everywhere: a one-line `InputError` naming the device.

Threads: torch's default intra-op pool takes every core; with other processes on the same cores
that oversubscribes and was measured 8-60x slower than one thread on a shared 2-core machine. The
default is therefore OMP_NUM_THREADS when set, else the usable cores divided by the workers that
share them, less the cores the load average says are busy (at least 1).
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, ContextManager

if TYPE_CHECKING:  # torch is imported where a device is used: the thread defaults need none
    import torch

from featherface_tune.bounds import MAX_THREADS
from featherface_tune.errors import InputError

AMP_MODES = ("auto", "off", "bf16", "fp16")

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` -> cuda:0 when CUDA is available, else cpu. An unavailable device is an InputError."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    text = (name or "auto").strip().lower()
    m = _DEVICE_RE.match(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise InputError(field="device", value=str(name), rule="must be auto, cpu, cuda, cuda:N or mps")
    kind, index = m.group(1), m.group(2)
    if kind == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(field="device", value=name, refs=("device",),
                             rule="MPS (Apple GPU) is not available on this machine; use {device} cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        raise InputError(field="device", value=name, refs=("device",),
                         rule=f"CUDA is not available on this machine ({build}, torch {torch.__version__}); "
                              "use {device} cpu or auto")
    i = int(index) if index is not None else 0
    n = torch.cuda.device_count()
    if i >= n:
        raise InputError(field="device", value=name, rule=f"this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    return torch.device("cuda", i)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def load_average() -> float:
    """Runnable processes, averaged over the last minute (0.0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return 0.0


def default_threads(workers: int = 1, environ: dict[str, str] | None = None, load: float | None = None) -> int:
    """OMP_NUM_THREADS when it is a positive integer, else the cores nothing else is using: usable
    cores // workers, less the load average (`load`, default the last minute's), at least 1.

    Oversubscribed threads collapse: with a load average of 6.4 on a 2-core machine a training step
    took 1.6 s with 1 thread and 12-22 s with 2 (benchmarks/threads_under_load.py), so a busy
    machine gets 1 thread and an idle one every core."""
    env = os.environ if environ is None else environ
    raw = env.get("OMP_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    share = max(1, usable_cores() // max(1, workers))
    busy = load_average() if load is None else load
    return max(1, min(share, usable_cores() - round(busy)))


def check_threads(threads: int | None = None, workers: int = 1) -> int:
    """The threads a `--threads` value asks for (None: default_threads(workers)), checked."""
    if threads is not None and (not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS):
        raise InputError(field="threads", value=threads, rule=f"must be an integer from 1 to {MAX_THREADS}")
    return threads if threads is not None else default_threads(workers)


def set_threads(threads: int | None = None, workers: int = 1) -> int:
    """Set torch's intra-op threads (None: default_threads(workers)); returns the number set."""
    import torch

    n = check_threads(threads, workers)
    torch.set_num_threads(n)
    return n


def check_amp(mode: str) -> str:
    """A mixed-precision mode name (AMP_MODES), checked without torch."""
    if mode not in AMP_MODES:
        raise InputError(field="amp", value=mode, rule=f"must be one of {', '.join(AMP_MODES)}")
    return mode


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `mode` on `device`, or None for full float32.

    auto: bf16 on CUDA when the GPU supports it, else fp16 (with a grad scaler); off on CPU/MPS,
    where float32 stays the reference. bf16/fp16 may be forced on CPU too (tests run them there).
    """
    import torch

    check_amp(mode)
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager[Any]:
    """torch.autocast for `dtype` on `device`, or a no-op context when dtype is None."""
    import torch

    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> Any:
    """A GradScaler for fp16 (its range needs loss scaling), else None (bf16 and fp32 do not)."""
    import torch

    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def describe(device: torch.device, threads: int | None = None, amp: torch.dtype | None = None) -> str:
    """One line for logs: the device (with the GPU's name), threads, precision."""
    import torch

    what = str(device)
    if device.type == "cuda":
        what += f" ({torch.cuda.get_device_name(device)})"
    parts = [what]
    if threads is not None:
        parts.append(f"{threads} CPU thread{'s' if threads != 1 else ''}")
    parts.append("float32" if amp is None else f"AMP {str(amp).replace('torch.', '')}")
    return ", ".join(parts)
