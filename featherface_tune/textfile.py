"""One reader for the text files a user hands the tool (config, space, budget, compare files):
UTF-8 or a one-line error that names the file and what it holds instead (a UTF-16 text, a zip
archive such as a PyTorch `.pth`, other binary data), and parsers that turn a nesting too deep for
Python (a 100,000-deep JSON list) into the same kind of error instead of a RecursionError."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from featherface_tune.errors import InputError

MAX_TEXT_BYTES = 16 * 1024 * 1024  # far above any config or budget file; refuses a stray data file
_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
         (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
_UTF8_BOM = b"\xef\xbb\xbf"
_MAGIC = ((b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth checkpoint?)"),
          (b"\x80\x02", "a Python pickle (an old PyTorch checkpoint?)"),
          (b"SQLite format 3\x00", "an SQLite database"), (b"\x89PNG", "a PNG image"),
          (b"\xff\xd8\xff", "a JPEG image"), (b"\x1f\x8b", "a gzip archive"))


def describe_bytes(data: bytes) -> str | None:
    """What `data` is when it is not UTF-8 text (None when it is), e.g. "UTF-16 text (byte-order
    mark FF FE)"."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return f"{name} text (byte-order mark {bom.hex(' ').upper()})"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if b"\x00" in data[:8192]:
        return "binary data (NUL bytes)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte 0x{data[exc.start]:02X} at offset {exc.start})"
    return None


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of `path` (a UTF-8 byte-order mark is dropped). `what` names the file's role in
    errors, e.g. "config file": `config file 'x.toml' is UTF-16 text (...); save it as UTF-8`."""
    p = Path(path)
    shown = f"{what} {str(p)!r}"
    if p.is_dir():
        raise InputError(f"{shown} is a folder, not a file")
    if not p.is_file():
        raise InputError(f"{shown} does not exist")
    try:
        size = p.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise InputError(f"{shown} holds {size:,} bytes, more than any text file of its kind "
                             f"(limit {MAX_TEXT_BYTES:,}); is it the right file?")
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{shown} cannot be read: {exc.strerror or exc}") from None
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    problem = describe_bytes(data)
    if problem is not None:
        hint = "save it as UTF-8" if "text" in problem or "UTF-8" in problem else "is it the right file?"
        raise InputError(f"{shown} is {problem}, not UTF-8 text; {hint}")
    return data.decode("utf-8")


def parse_toml(text: str, shown: str) -> dict[str, Any]:
    """tomllib.loads; a syntax error or a nesting too deep raises InputError naming `shown`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{shown} is not valid TOML: {exc}") from None
    except RecursionError:
        raise InputError(f"{shown}: arrays or tables nested too deeply to read") from None


def parse_json(text: str, shown: str) -> Any:
    """json.loads; a syntax error or a nesting too deep raises InputError naming `shown`."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{shown} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{shown}: arrays or objects nested too deeply to read") from None
