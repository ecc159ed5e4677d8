"""The ``autotransfer`` command. Every user mistake ends in one clear message, never a traceback.

One module per command group; each parses its arguments, calls the engine and renders the answer.
Start-up is kept light (`autotransfer --help` and `--version` well under a second): torch, timm,
numpy and pandas are imported inside the commands that need them, never at module level, and the
cheap checks of the arguments (option_checks.py) come before those imports.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.logging import RichHandler
from rich.markup import escape

from autotransfer import __version__
from autotransfer.cli import bench, cache, dataset, export, fit, predict, zoo
from autotransfer.cli.common import HELP_OPTIONS, err
from autotransfer.cli.help_format import reflow_help, show_flags_without_type
from autotransfer.errors import AutoTransferError
from autotransfer.files import disk_full_error, is_disk_full

show_flags_without_type()
app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP_OPTIONS,
    help="Find the best way to transfer an ImageNet-pretrained network to your images.",
)


def _show_version(value: bool) -> None:
    if value:
        print(f"autotransfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", is_eager=True, callback=_show_version, help="print the version and exit"
    ),
) -> None:
    """Find the best way to transfer an ImageNet-pretrained network to your images."""


app.add_typer(zoo.zoo_app, name="zoo")
for command in (dataset.inspect, dataset.rank, dataset.profile, fit.fit, predict.predict):
    app.command()(command)
app.add_typer(cache.cache_app, name="cache")
for command in (export.export, bench.bench):
    app.command()(command)
reflow_help(app, zoo.zoo_app, cache.cache_app)


def _configure_logging() -> None:
    # Our own messages at INFO; libraries (onnxscript's optimiser, Ray...) only when they warn.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, markup=False)],
    )
    logging.getLogger("autotransfer").setLevel(logging.INFO)


def main() -> None:
    _configure_logging()
    try:
        app()
    except AutoTransferError as error:  # str(error) names its option as a flag (errors.py: cli_flag)
        err.print("[bold red]Error:[/]", escape(str(error)), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("Interrupted; nothing already cached was lost.")
        sys.exit(130)
    except Exception as error:
        if not is_disk_full(error):
            raise
        err.print("[bold red]Error:[/]", escape(str(disk_full_error(error, Path.cwd()))), highlight=False)
        sys.exit(2)
