"""featherface-tune: exact parameter budgets for FeatherFace face detectors.

The notebook API, imported lazily (``import featherface_tune`` loads neither torch nor Optuna)::

    >>> import featherface_tune as ff
    >>> cfg = ff.presets()["featherface-official"]
    >>> ff.count(cfg).params
    592371
    >>> model = ff.build_model(cfg.replace(neck_channels=48))   # an nn.Module
    >>> result = ff.search(489000)                               # see featherface_tune.tuner.api
    >>> result.best[0].config, result.best[0].params
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featherface_tune._version import __version__

# public name -> (module, attribute): resolved on first use
_EXPORTS = {
    "search": ("featherface_tune.tuner.api", "search"),
    "count": ("featherface_tune.counter.analytic", "count"),
    "build_model": ("featherface_tune.models.builder", "build_model"),
    "load_model": ("featherface_tune.models.checkpoint", "load_model"),
    "FeatherFaceConfig": ("featherface_tune.models.config", "FeatherFaceConfig"),
    "presets": ("featherface_tune.models.presets", "presets"),
    "get_preset": ("featherface_tune.models.presets", "get_preset"),
    "resolve_config": ("featherface_tune.models.presets", "resolve_config"),
    "latency": ("featherface_tune.deploy.latency_table", "latency"),
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from featherface_tune.counter.analytic import count
    from featherface_tune.deploy.latency_table import latency
    from featherface_tune.models.builder import build_model
    from featherface_tune.models.checkpoint import load_model
    from featherface_tune.models.config import FeatherFaceConfig
    from featherface_tune.models.presets import get_preset, presets, resolve_config
    from featherface_tune.tuner.api import search


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'featherface_tune' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
