"""The `featherface-tune` command line: composes the commands, nothing more."""

from __future__ import annotations

import typer

from featherface_tune.commands.count import count_cmd
from featherface_tune.commands.presets import presets_cmd

app = typer.Typer(
    name="featherface-tune",
    help="Find FeatherFace channel widths that hit a parameter budget exactly, rank them, and guard the budget in CI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = {
    "count": count_cmd,
    "presets": presets_cmd,
}

for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
