"""``vgtool init``: write a new, untrained checkpoint from a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_out_folder
from vgtool.cli.options import OUT_FLAGS, SetOpt


def _list_presets(value: bool) -> None:
    """``--list``: print the preset names and stop (before --out is asked for)."""
    if value:
        from vgtool.models.presets import preset_names

        for name in preset_names():
            typer.echo(name)
        raise typer.Exit()


def init_cli(
    out: Annotated[Path, typer.Option(*OUT_FLAGS, help="Checkpoint folder to create.")],
    preset: Annotated[str, typer.Option("--preset", help="Model preset name (see --list).")] = "vlgtr-tiny",
    overrides: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random initialisation.")] = 0,
    list_presets: Annotated[
        bool,
        typer.Option("--list", callback=_list_presets, is_eager=True, help="List the presets and exit."),
    ] = False,
) -> None:
    """Create an untrained checkpoint from a preset.

    Pretrained parts load from their source. Useful to start training from, or to check a pipeline
    end to end before a model is trained.

    \b
    Examples:
      vgtool init --list
      vgtool init --preset vlgtr-tiny --out models/tiny --set decoder.num_queries=8
    """
    check_out_folder(out)

    from vgtool.checkpoint import init_checkpoint

    path = init_checkpoint(preset, out, overrides=overrides or [], seed=seed)
    typer.echo(f"wrote {path}")
