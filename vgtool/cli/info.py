"""``vgtool info``: what a checkpoint is made of."""

from __future__ import annotations

from typing import Annotated

import typer

from vgtool.cli.checks import check_model


def info_cli(
    model: Annotated[
        str,
        typer.Argument(
            help="Checkpoint folder, 'default' for the bundled model, or a zero-shot model (hf:<hub id> or a "
            "save_pretrained folder)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Show what a model is made of and where it comes from.

    Prints its domain, config, parameter counts, default threshold, metadata and the source of each
    part.

    \b
    Example: vgtool info runs/train/best
    """
    import json

    check_model(model, "MODEL")

    from vgtool.grounders import load_grounder

    description = load_grounder(model, device="cpu").describe()
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        return
    typer.echo(f"checkpoint: {description['path']}")
    typer.echo(f"architecture: {description['architecture']}  (config hash {description['config_hash']})")
    if description.get("domain"):
        typer.echo(f"domain: {description['domain']}")
    params = description["parameters"]
    typer.echo(f"parameters: {params['total']:,} total, {params['trainable']:,} trainable")
    for part, row in description["parts"].items():
        typer.echo(
            f"  {part:<8} {row['total']:>12,} params  {row['trainable']:>12,} trainable  "
            f"source: {row['source']}  ({row['weights']})"
        )
    typer.echo(f"default threshold: {description['default_threshold']}")
    if description.get("meta"):
        typer.echo("metadata:")
        typer.echo(json.dumps(description["meta"], indent=2))
    typer.echo("config:")
    typer.echo(json.dumps(description["config"], indent=2))
