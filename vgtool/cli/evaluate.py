"""``vgtool evaluate``: parse options, call :func:`vgtool.evaluation.evaluate.evaluate_model` or
:func:`~vgtool.evaluation.evaluate.evaluate_predictions`, print a metrics table."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from vgtool.cli.checks import check_device, check_folder, check_model, check_out_folder, check_path
from vgtool.cli.options import (
    OUT_FLAGS,
    THRESHOLD_FLAGS,
    DeviceOpt,
    ModelOpt,
    NmsIouOpt,
    QuietOpt,
    run_folder,
)

TABLE_COLUMNS = (
    ("n", "n_samples"),
    ("acc@0.5", "acc@0.5"),
    ("acc@0.75", "acc@0.75"),
    ("mIoU", "miou"),
    ("mAP", "map"),
    ("mAP50", "map50"),
    ("mAP75", "map75"),
    ("no-obj FP", "no_object_fp_rate"),
)
# Shown when the metrics hold it (``--crop-similarity``).
CROP_SIMILARITY_COLUMN = ("crop sim", "crop_similarity")


class DataFormatChoice(str, Enum):
    auto = "auto"
    coco = "coco"
    refer = "refer"
    refcoco_parquet = "refcoco-parquet"
    flickr30k = "flickr30k"
    odvg = "odvg"
    labelstudio = "labelstudio"


def metrics_table(metrics: dict[str, Any]) -> str:
    """The overall, per-kind and per-form metrics as an aligned text table ("-" where nothing was
    measured)."""
    rows = [
        ("overall", metrics["overall"]),
        *sorted(metrics["by_kind"].items()),
        *sorted(metrics.get("by_form", {}).items()),
    ]
    columns = TABLE_COLUMNS
    if CROP_SIMILARITY_COLUMN[1] in metrics["overall"]:
        columns = (*columns, CROP_SIMILARITY_COLUMN)
    lines = [["", *(title for title, _ in columns)]]
    for name, values in rows:
        cells = [name]
        for _, key in columns:
            value = values.get(key)
            cells.append("-" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}")
        lines.append(cells)
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if c == 0 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def evaluate_cli(
    data: Annotated[
        str,
        typer.Option(
            "--data", "-d", help="Dataset file or folder (COCO with phrases, RefCOCO, Flickr30k...)."
        ),
    ],
    model: ModelOpt = None,
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            exists=True,
            dir_okay=False,
            help="Score this COCO predictions file (results list or COCO dict) instead of a model. A box's "
            "phrase is attributes.phrase (CVAT, datumaro), else phrase, else its category's name; its "
            "score attributes.score, else score, else 1.",
        ),
    ] = None,
    data_format: Annotated[
        DataFormatChoice,
        typer.Option("--format", help="Dataset layout (coco, labelstudio...); auto guesses it from --data."),
    ] = DataFormatChoice.auto,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split, e.g. val or testA.")] = None,
    image_root: Annotated[
        str | None, typer.Option("--image-root", help="Folder the dataset's image paths are relative to.")
    ] = None,
    out: Annotated[
        Path, typer.Option(*OUT_FLAGS, help="Output folder: metrics.json, predictions.json, plots.")
    ] = run_folder("evaluate"),
    threshold: Annotated[
        float | None,
        typer.Option(
            *THRESHOLD_FLAGS,
            min=0.0,
            max=1.0,
            help="Score at which a box for an absent object counts. Default: the model's calibrated threshold, else 0.5.",
        ),
    ] = None,
    nms_iou: NmsIouOpt = 0.7,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")] = 16,
    device: DeviceOpt = "auto",
    bf16: Annotated[
        bool | None,
        typer.Option("--bf16/--no-bf16", help="bf16 autocast (default: on for CUDA, off for CPU)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Image decoding processes.")] = 0,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Draw the IoU histogram and best/worst examples.")
    ] = True,
    crop_similarity: Annotated[
        str | None,
        typer.Option(
            "--crop-similarity",
            metavar="MODEL",
            help="Also score how alike the top predicted and the true crop look: cosine similarity of "
            "their image embeddings by this CLIP-family model (hf:openai/clip-vit-base-patch32, or a "
            "save_pretrained folder), for phrases with one box. Off by default.",
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Score a model or a predictions file on labelled data.

    Evaluates grounding on a labelled dataset: a model, or a COCO predictions file from any tool.
    Writes metrics.json (overall and per phrase kind), iou_histogram.png and examples_best_worst.png.
    For a model also predictions.json, which --predictions scores to the same numbers.
    Metrics: accuracy@0.5/0.75 and mIoU of the top box, mAP, and the no-object false-positive rate;
    with --crop-similarity, the CLIP similarity of the top box's crop to the true one.

    \b
    Example: vgtool evaluate --model runs/train/best --data data/synth --split test --out runs/eval
    """
    if predictions is not None and model is not None:
        raise typer.BadParameter("give --model or --predictions, not both", param_hint="--predictions")
    check_device(device)
    check_path(data, "--data", "dataset file or folder")
    check_path(image_root, "--image-root", "image folder")
    check_model(model)
    if crop_similarity is not None and not crop_similarity.startswith("hf:"):
        check_folder(crop_similarity, "--crop-similarity", "model folder (name hub models hf:org/name)")
    check_out_folder(out)

    from vgtool.datasets import DataConfig
    from vgtool.evaluation.evaluate import EvalConfig, evaluate_model, evaluate_predictions

    data_config = DataConfig(format=data_format.value, path=data, split=split, image_root=image_root)
    config = EvalConfig(
        threshold=threshold,
        nms_iou=nms_iou,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        num_workers=workers,
        plots=plots,
        quiet=quiet,
        crop_similarity=crop_similarity,
    )
    if predictions is not None:
        metrics = evaluate_predictions(predictions=predictions, data=data_config, out_dir=out, config=config)
        matching = metrics["matching"]
        if any(matching.values()):
            typer.echo(
                f"warning: {matching['unmatched_predictions']} predicted boxes matched no sample "
                f"({matching['unmatched_images']} image names matched no dataset image, or several); "
                f"{matching['boxed_samples_without_prediction']} samples with boxes have no prediction",
                err=True,
            )
    else:
        metrics = evaluate_model(model=model, data=data_config, out_dir=out, config=config)
    typer.echo(metrics_table(metrics))
    if not quiet:
        typer.echo(f"-> {out / 'metrics.json'}", err=True)
