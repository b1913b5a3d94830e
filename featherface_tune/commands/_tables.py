"""Printing a list of rich renderables (tables first) on stdout, shared by `report` and `calibrate`."""

from __future__ import annotations

from typing import Any, Iterable

from featherface_tune.commands._common import out


def print_tables(items: Iterable[Any]) -> None:
    """Print renderables; tables fit the terminal (`featherface_tune.terminal`): a table drops its
    config-field columns from the right first (all of them are in --format csv/json/html)."""
    from rich.table import Table

    from featherface_tune.terminal import print_table

    for item in items:
        optional = [str(c.header) for c in item.columns][1:] if isinstance(item, Table) else []
        print_table(out, item, optional=config_headers(optional), elsewhere="--format csv or --out")


def config_headers(headers: list[str]) -> list[str]:
    """The headers of config-field columns, the least telling last (they may be left out)."""
    from featherface_tune.models.config import FIELD_NAMES

    return [h for h in headers if h in FIELD_NAMES]
