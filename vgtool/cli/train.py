"""``vgtool train`` and ``vgtool finetune``: parse options, build a recipe, call ``train()``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.options import DeviceOpt, QuietOpt, SetOpt

ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")
]


def train_cli(
    recipe: Annotated[
        Path, typer.Option("--recipe", "-r", help="Recipe file (YAML), e.g. train/vlgtr_refcoco.yaml.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder: checkpoints, metrics, curves.")
    ] = Path("runs/train"),
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    device: Annotated[str | None, typer.Option("--device", help="Overrides the recipe's device.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train VL-GTR from a recipe (two-stage schedule, Hungarian-matched losses, validation).

    Multi-process: torchrun --nproc-per-node 4 -m vgtool train --recipe ... (one process per GPU).

    Example: vgtool train --recipe train/vlgtr_flickr30k.yaml --out runs/flickr --set batch_size=32
    """
    from vgtool.training.config import load_recipe
    from vgtool.training.trainer import train

    sets = list(overrides or [])
    if device:
        sets.append(f"device={device}")
    result = train(load_recipe(recipe, sets), out, resume=resume, quiet=quiet)
    _report(result, quiet)


def finetune_cli(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Checkpoint to start from ('default' = bundled).")
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Training data: a COCO file/folder, refer folder, ...")
    ],
    data_format: Annotated[
        str, typer.Option("--format", help="auto, coco, refer, refcoco-parquet, flickr30k, odvg.")
    ] = "auto",
    split: Annotated[
        str | None, typer.Option("--split", help="Training split, when the data has several.")
    ] = None,
    val: Annotated[str | None, typer.Option("--val", help="Validation data (same format).")] = None,
    val_split: Annotated[str | None, typer.Option("--val-split", help="Validation split.")] = None,
    image_root: Annotated[
        str | None, typer.Option("--image-root", help="Folder the image paths are relative to.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/finetune"),
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 5,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the new parts.")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 8,
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a checkpoint on new data (e.g. annotators' corrected COCO export).

    Example: vgtool finetune --model runs/train/best --data corrected.json --val val.json --epochs 3
    """
    from vgtool.datasets.registry import DataConfig
    from vgtool.models.bundled import resolve_model_path
    from vgtool.training.finetune import finetune_recipe
    from vgtool.training.trainer import train

    train_data = DataConfig(format=data_format, path=data, split=split, image_root=image_root)
    val_data = (
        DataConfig(format=data_format, path=val, split=val_split, image_root=image_root) if val else None
    )
    recipe = finetune_recipe(
        model=resolve_model_path(model),
        train=train_data,
        val=val_data,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        overrides=[*(overrides or []), f"device={device}"],
    )
    _report(train(recipe, out, resume=resume, quiet=quiet), quiet)


def _report(result: dict, quiet: bool) -> None:
    if quiet:
        return
    val = result.get("val") or {}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))
    typer.echo(
        f"done: {result['counters']['step']} steps; {shown or 'no validation data'} -> {result['out_dir']}",
        err=True,
    )
