"""``vgtool export``: a slim copy of a checkpoint for shipping (fp16 weights, referenced backbones)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_cli(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/train/best.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the exported checkpoint to.")],
    fp16: Annotated[
        bool, typer.Option("--fp16/--fp32", help="Store weights in fp16 (half the size; loads back as fp32).")
    ] = True,
) -> None:
    """Write a checkpoint again, slim: fp16 weights, frozen pretrained parts referenced by name.

    Its metadata (training step, validation metrics) is kept.

    Example: vgtool export runs/synth-default/best --out vgtool/assets/models/default
    """
    from vgtool.checkpoint import export_checkpoint

    path, size = export_checkpoint(checkpoint, out, fp16=fp16)
    typer.echo(f"wrote {path} ({size / 2**20:.1f} MiB)")
