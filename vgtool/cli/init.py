"""``vgtool init``: write a new, untrained checkpoint from a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.options import SetOpt


def init_cli(
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint folder to create.")],
    preset: Annotated[str, typer.Option("--preset", help="Model preset name (see --list).")] = "vlgtr-tiny",
    overrides: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for the random initialisation.")] = 0,
    list_presets: Annotated[bool, typer.Option("--list", help="List the presets and exit.")] = False,
) -> None:
    """Create an untrained checkpoint from a named preset (pretrained parts load from their source).

    Useful to start training from, or to check a pipeline end to end before a model is trained.

    Example: vgtool init --preset vlgtr-tiny --out models/tiny --set decoder.num_queries=8
    """
    from vgtool.checkpoint import init_checkpoint
    from vgtool.models.presets import preset_names

    if list_presets:
        for name in preset_names():
            typer.echo(name)
        return
    path = init_checkpoint(preset, out, overrides=overrides or [], seed=seed)
    typer.echo(f"wrote {path}")
