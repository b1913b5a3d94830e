"""The `featherface-tune` command line: composes the commands, nothing more."""

from __future__ import annotations

import typer
from typing_extensions import Annotated

from featherface_tune._version import __version__
from featherface_tune.commands._typer import HELP_OPTIONS, FlagCommand, OneLineErrorsGroup, reflow
from featherface_tune.commands.calibrate import calibrate_cmd
from featherface_tune.commands.count import count_cmd
from featherface_tune.commands.data import data_check_cmd
from featherface_tune.commands.demo_data import demo_data_cmd
from featherface_tune.commands.evaluate import evaluate_cmd
from featherface_tune.commands.export import export_cmd
from featherface_tune.commands.detect import detect_cmd
from featherface_tune.commands.gate import gate_cmd
from featherface_tune.commands.latency import latency_cmd, latency_table_cmd
from featherface_tune.commands.predict import predict_cmd
from featherface_tune.commands.presets import presets_cmd
from featherface_tune.commands.report import report_cmd
from featherface_tune.commands.search import search_cmd
from featherface_tune.commands.train import train_cmd

app = typer.Typer(
    name="featherface-tune",
    help="Find FeatherFace channel widths that hit a parameter budget exactly, rank them, and guard the budget in CI.",
    cls=OneLineErrorsGroup,
    context_settings=HELP_OPTIONS,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMANDS = {
    "calibrate": calibrate_cmd,
    "count": count_cmd,
    "demo-data": demo_data_cmd,
    "evaluate": evaluate_cmd,
    "export": export_cmd,
    "detect": detect_cmd,
    "gate": gate_cmd,
    "latency": latency_cmd,
    "latency-table": latency_table_cmd,
    "predict": predict_cmd,
    "presets": presets_cmd,
    "report": report_cmd,
    "search": search_cmd,
    "train": train_cmd,
}

for _name, _fn in COMMANDS.items():
    app.command(_name, cls=FlagCommand, help=reflow(_fn.__doc__))(_fn)  # type: ignore[type-var]

# groups of subcommands: `featherface-tune data check DIR`
data_app = typer.Typer(name="data", help="Set up and check real data (WIDERFace, the backbone file).",
                       cls=OneLineErrorsGroup, context_settings=HELP_OPTIONS, no_args_is_help=True,
                       add_completion=False, pretty_exceptions_enable=False)
data_app.command("check", cls=FlagCommand)(data_check_cmd)  # type: ignore[type-var]
app.add_typer(data_app)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"featherface-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Find FeatherFace channel widths that hit a parameter budget exactly, rank them, and guard the budget in CI."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
