"""``vgtool convert``: turn a ``.pth``/``.pt`` state dict into a vgtool checkpoint, safely."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_file, check_out_folder
from vgtool.cli.options import OUT_FLAGS, SetOpt


def convert_cli(
    weights: Annotated[Path, typer.Argument(help="A .pth or .pt file holding a state dict.")],
    preset: Annotated[
        str, typer.Option("--preset", help="Architecture the weights belong to (vgtool init --list).")
    ],
    out: Annotated[Path, typer.Option(*OUT_FLAGS, help="Checkpoint folder to write.")],
    overrides: SetOpt = None,
) -> None:
    """Import a .pth/.pt state dict as a checkpoint.

    For weights saved by other code (e.g. a notebook's torch.save). The file is read with
    torch.load(weights_only=True): tensors and plain containers only, never code. Keys must match
    the preset's architecture exactly; mismatches are named.

    \b
    Example: vgtool convert notebook_model.pth --preset vlgtr-dinov2s-roberta --out models/notebook
    """
    check_file(weights, "WEIGHTS", "weights file")
    check_out_folder(out)

    from vgtool.weights_import import import_torch_weights

    path = import_torch_weights(weights, preset=preset, out=out, overrides=overrides or [])
    typer.echo(f"wrote {path}")
