"""The ``vgtool`` Typer app and entry point. Known errors become one line and a non-zero exit."""

from __future__ import annotations

import sys

import typer

from vgtool import __version__
from vgtool.cli.bench import bench_cli
from vgtool.cli.convert import convert_cli
from vgtool.cli.distill import distill_cli
from vgtool.cli.evaluate import evaluate_cli
from vgtool.cli.export import export_cli
from vgtool.cli.export_labels import export_labels_cli
from vgtool.cli.ground import ground_cli
from vgtool.cli.info import info_cli
from vgtool.cli.init import init_cli
from vgtool.cli.synth import synth_cli
from vgtool.cli.train import finetune_cli, train_cli
from vgtool.cli.tune import tune_cli

INTERRUPTED = 130
INTERRUPTED_MESSAGE = (
    "interrupted; finished work is kept (ground: re-run the same command; train: add --resume)"
)

app = typer.Typer(
    name="vgtool",
    help=(
        "Find what natural-language phrases describe in folders of images, and write COCO "
        "annotations, crops and overlays. Also trains and evaluates the VL-GTR grounding model.\n\n"
        "Example: vgtool ground photos/ --phrase 'red car' --out runs/cars"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: wrapped to the terminal (80 columns in pipes and CI) with nothing cut off, where
    # rich tables truncate long option help with "..."
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("ground", no_args_is_help=True)(ground_cli)
app.command("info", no_args_is_help=True)(info_cli)
app.command("init", no_args_is_help=True)(init_cli)
app.command("train", no_args_is_help=True)(train_cli)
app.command("finetune", no_args_is_help=True)(finetune_cli)
app.command("tune", no_args_is_help=True)(tune_cli)
app.command("evaluate", no_args_is_help=True)(evaluate_cli)
app.command("synth", no_args_is_help=True)(synth_cli)
app.command("bench")(bench_cli)
app.command("convert", no_args_is_help=True)(convert_cli)
app.command("export", no_args_is_help=True)(export_cli)
app.command("export-labels", no_args_is_help=True)(export_labels_cli)
app.command("distill", no_args_is_help=True)(distill_cli)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vgtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
) -> None:
    """Ground phrases in images; train and evaluate the grounding model."""


def _is_usage_error(err: Exception) -> bool:
    """A command-line usage error: click's, or that of the click copy recent Typer versions carry
    (``typer._click``, not a subclass of ``click.ClickException``)."""
    import click

    if isinstance(err, click.ClickException):
        return True
    return type(err).__module__.startswith("typer.") and hasattr(err, "show") and hasattr(err, "exit_code")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning known errors into ``error: ...`` and exit codes."""
    from vgtool.errors import Interrupted, VgtoolError

    try:
        code = app(args=argv, prog_name="vgtool", standalone_mode=False)
    except Interrupted as err:
        typer.echo(str(err), err=True)
        sys.exit(err.exit_code)
    except VgtoolError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo(INTERRUPTED_MESSAGE, err=True)
        sys.exit(INTERRUPTED)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except (typer.Abort, EOFError):
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as err:
        if _is_usage_error(err):  # bad option, missing argument, or no arguments (prints the help)
            err.show()
            sys.exit(err.exit_code)
        raise
    if code == INTERRUPTED:  # Typer turns Ctrl-C into a silent exit status 130
        typer.echo(INTERRUPTED_MESSAGE, err=True)
    sys.exit(code if isinstance(code, int) else 0)
