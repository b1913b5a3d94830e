"""Named presets. Each preset is a function returning a config (never a module); the registry
raises on a duplicate name."""

from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

from featherface_tune.errors import ConfigError, FeatherFaceError
from featherface_tune.models.config import (
    FeatherFaceConfig, apply_overrides, from_mapping, read_config_file,
)

_PRESETS: dict[str, Callable[[], FeatherFaceConfig]] = {}
_DOCS: dict[str, str] = {}


def register_preset(name: str, doc: str) -> Callable[[Callable[[], FeatherFaceConfig]], Callable[[], FeatherFaceConfig]]:
    def deco(fn: Callable[[], FeatherFaceConfig]) -> Callable[[], FeatherFaceConfig]:
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} is already registered")
        _PRESETS[name] = fn
        _DOCS[name] = doc
        return fn
    return deco


def preset_names() -> list[str]:
    return list(_PRESETS)


def presets() -> dict[str, FeatherFaceConfig]:
    """Every registered preset's config by name, e.g. `presets()["featherface-official"].neck`."""
    return {name: make() for name, make in _PRESETS.items()}


def preset_doc(name: str) -> str:
    return _DOCS[name]


def get_preset(name: str) -> FeatherFaceConfig:
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(_PRESETS)}") from None


@register_preset("featherface-official", "the official FeatherFace code as published (dohun-mat/FeatherFace)")
def featherface_official() -> FeatherFaceConfig:
    return FeatherFaceConfig()


@register_preset("retinaface-mnet025", "RetinaFace MobileNet-0.25: FPN 64, plain SSH, no CBAM, no shuffle")
def retinaface_mnet025() -> FeatherFaceConfig:
    return FeatherFaceConfig(backbone_cbam=False, neck="fpn", neck_channels=64, bifpn_repeats=0,
                             neck_cbam=False, ssh_channels=64, ssh_deformable=False, shuffle="none")


@register_preset("featherface-v1-489k", "official FeatherFace at 52 channels with plain shuffle (the re-implementation's V1)")
def featherface_v1_489k() -> FeatherFaceConfig:
    return FeatherFaceConfig(neck_channels=52, ssh_channels=52, shuffle="plain")


@register_preset("featherface-reimpl-489015", "the public re-implementation's trained model: no CBAM, BiFPN 56x2, DCN SSH 56, plain shuffle")
def featherface_reimpl_489015() -> FeatherFaceConfig:
    return FeatherFaceConfig(backbone_cbam=False, neck_channels=56, bifpn_repeats=2, neck_cbam=False,
                             ssh_channels=56, shuffle="plain")


@register_preset("featherface-489k", "official FeatherFace with neck 42, neck CBAM ratio 8, SSH [56, 72, 72]: exactly 489,000 params")
def featherface_489k() -> FeatherFaceConfig:
    return FeatherFaceConfig(neck_channels=42, neck_cbam_reduction=8, ssh_channels=(56, 72, 72))


def resolve_config(preset: str | None = None, config_file: str | Path | None = None,
                   overrides: Sequence[str] | Mapping[str, Any] = (),
                   overrides_source: str = "overrides") -> FeatherFaceConfig:
    """Config from a preset, then a config file's fields, then `field=value` overrides.

    A config file may name its own base with `preset = "NAME"`; naming a different preset from the
    one given is an error. With no source at all the result is the official FeatherFace config.
    An error carries `part`: "preset", "config" or "overrides", the input it came from.
    """
    with _part("preset"):
        base = get_preset(preset) if preset is not None else None
    if config_file is not None:
        with _part("config"):
            data = dict(read_config_file(config_file))
            file_preset = data.pop("preset", None)
            if file_preset is not None:
                if preset is not None and file_preset != preset:
                    raise ConfigError(f"{config_file}: names preset {file_preset!r} but preset {preset!r} "
                                      "was given as well; keep one")
                if base is None:
                    try:
                        base = get_preset(str(file_preset))
                    except ConfigError as exc:
                        raise ConfigError(f"{config_file}: {exc}") from None
            base = from_mapping(data, base, source=str(config_file))
    with _part("overrides"):
        return apply_overrides(base, overrides, source=overrides_source)


@contextmanager
def _part(name: str) -> Iterator[None]:
    try:
        yield
    except FeatherFaceError as exc:
        if exc.part is None:
            exc.part = name
        raise
