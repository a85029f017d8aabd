"""``vgtool train`` and ``vgtool finetune``: parse options, build a recipe, call ``train()`` or
``finetune()``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vgtool.cli.checks import check_device, check_model, check_out_folder, check_path, check_recipe
from vgtool.cli.options import OUT_FLAGS, DeviceOpt, QuietOpt, SetOpt, run_folder

ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out exactly where it stopped.")
]
RUN_FOLDER_HELP = "Run folder: recipe.json, metrics.jsonl, curves.png, last/ and best/ checkpoints."


def train_cli(
    recipe: Annotated[
        Path, typer.Option("--recipe", help="Recipe file (YAML), e.g. train/vlgtr_refcoco.yaml.")
    ],
    out: Annotated[Path, typer.Option(*OUT_FLAGS, help=RUN_FOLDER_HELP)] = run_folder("train"),
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    device: Annotated[
        str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N; overrides the recipe's.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train VL-GTR from a recipe.

    A two-stage schedule, Hungarian-matched losses and validation, as the recipe says.

    \b
    Multi-process (one process per GPU):
      torchrun --nproc-per-node 4 -m vgtool train --recipe train/vlgtr_refcoco.yaml --out runs/refcoco

    \b
    Example: vgtool train --recipe train/vlgtr_flickr30k.yaml --out runs/flickr --set batch_size=32
    """
    sets = list(overrides or [])
    if device:
        sets.append(f"device={device}")
    check_device(device)
    check_recipe(recipe, sets)
    check_out_folder(out)

    from vgtool.training.config import load_recipe
    from vgtool.training.trainer import train

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
        str,
        typer.Option("--format", help="auto, coco, labelstudio, refer, refcoco-parquet, flickr30k, odvg."),
    ] = "auto",
    split: Annotated[
        str | None, typer.Option("--split", help="Training split, when the data has several.")
    ] = None,
    val: Annotated[str | None, typer.Option("--val", help="Validation data (same format).")] = None,
    val_split: Annotated[str | None, typer.Option("--val-split", help="Validation split.")] = None,
    image_root: Annotated[
        str | None, typer.Option("--image-root", help="Folder the image paths are relative to.")
    ] = None,
    out: Annotated[Path, typer.Option(*OUT_FLAGS, help=RUN_FOLDER_HELP)] = run_folder("finetune"),
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training data.")] = 5,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the new parts.")] = 5e-5,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per step.")] = 8,
    recalibrate: Annotated[
        bool,
        typer.Option(
            "--recalibrate",
            help="Choose a new default score threshold for best/ on the --val data (as vgtool export "
            "--calibrate does). Without it, best/ keeps the source model's calibrated threshold.",
        ),
    ] = False,
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a checkpoint on new data.

    For example on annotators' corrected COCO export. best/ keeps the source model's calibrated
    score threshold (the default of vgtool ground); --recalibrate chooses a new one on --val.

    \b
    Example: vgtool finetune --model runs/train/best --data corrected.json --val val.json --epochs 3
    """
    check_device(device)
    check_model(model)
    check_path(data, "--data", "dataset file or folder")
    check_path(val, "--val", "dataset file or folder")
    check_path(image_root, "--image-root", "image folder")
    if recalibrate and val is None:
        raise typer.BadParameter("needs validation data: give --val", param_hint="'--recalibrate'")
    check_out_folder(out)

    from vgtool.datasets.registry import DataConfig
    from vgtool.models.bundled import resolve_model_path
    from vgtool.training.finetune import finetune

    train_data = DataConfig(format=data_format, path=data, split=split, image_root=image_root)
    val_data = (
        DataConfig(format=data_format, path=val, split=val_split, image_root=image_root) if val else None
    )
    result = finetune(
        model=resolve_model_path(model),
        train=train_data,
        val=val_data,
        out_dir=out,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        overrides=[*(overrides or []), f"device={device}"],
        recalibrate=recalibrate,
        resume=resume,
        quiet=quiet,
    )
    _report(result, quiet)
    line = threshold_line(result["threshold"])
    if line:
        typer.echo(line, err=True)


def threshold_line(threshold: dict[str, Any]) -> str | None:
    """One line on what the fine-tuned model's default threshold is and where it came from."""
    postprocess = threshold["postprocess"]
    if threshold["action"] == "kept":
        return (
            f"kept the source model's calibrated threshold {postprocess['threshold']:g}; "
            "--recalibrate to fit a new one on the validation data"
        )
    if threshold["action"] == "recalibrated":
        return (
            f"recalibrated the threshold on {postprocess['calibrated_on']}: {postprocess['threshold']:g} "
            f"({postprocess['no_object_fp_rate']:.1%} of {postprocess['n_no_object']} phrases that name "
            f"nothing get a box; upper bound at {postprocess['confidence']:.0%} confidence: "
            f"{postprocess['no_object_fp_bound']:.1%})"
        )
    return None


def _report(result: dict, quiet: bool) -> None:
    if quiet:
        return
    val = result.get("val") or {}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in val.items() if isinstance(v, float))
    typer.echo(
        f"done: {result['counters']['step']} steps; {shown or 'no validation data'} -> {result['out_dir']}",
        err=True,
    )
