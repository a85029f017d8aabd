"""``vgtool export-labels``: parse options, call :func:`vgtool.exports.export_labels`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.options import QuietOpt


def export_labels_cli(
    run: Annotated[
        Path, typer.Argument(metavar="RUN", help="A finished run folder (what `vgtool ground --out` wrote).")
    ],
    to: Annotated[
        list[str],
        typer.Option(
            "--to",
            help="Format (repeatable): labelstudio, yolo, voc, coco (datumaro/CVAT layout), odvg, labelme.",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Export folder; with several --to, one sub-folder per format. Default: RUN/exports/<format>.",
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            "-i",
            help="Folder the run's file names are relative to, if the images moved (default: run.json's image_root).",
        ),
    ] = None,
    min_score: Annotated[
        float, typer.Option("--min-score", min=0.0, max=1.0, help="Keep boxes scoring at least this.")
    ] = 0.0,
    classes: Annotated[
        list[str] | None, typer.Option("--classes", help="Keep only boxes of this class (repeatable).")
    ] = None,
    keep_empty: Annotated[
        bool, typer.Option("--keep-empty/--drop-empty", help="Keep images left without boxes.")
    ] = True,
    images_mode: Annotated[
        str,
        typer.Option(
            "--images-mode",
            help="copy: images beside the labels (EXIF-rotated ones written upright); link: symlinks; "
            "none: labels only.",
        ),
    ] = "copy",
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.99,
            help="Share of images in subset val, the rest in train (yolo, voc, coco, odvg).",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/val draw.")] = 0,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence/--no-confidence",
            help="yolo: add the score as a sixth column (for viewers; training wants five).",
        ),
    ] = False,
    url_prefix: Annotated[
        str,
        typer.Option(
            "--url-prefix",
            help="labelstudio: put before each URL-quoted file name, e.g. s3://bucket/photos/ or "
            "https://host/photos/. The default serves the images through Label Studio's local files "
            "(the command prints the settings).",
        ),
    ] = "/data/local-files/?d=",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier export in the output folder.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a run's labels to annotation-tool formats.

    Boxes keep their class, and their score and phrase wherever the format has room for them.

    Boxes stay in the displayed frame of each image. Names: images in sub-folders are flattened to
    sub__name for yolo and voc; same-stem files (a.jpg, a.png) become a_jpg, a_png. export.json maps
    each run file name to what was written. Images the run skipped are not exported.

    \b
    Examples, one per format:
      vgtool export-labels runs/pets --to labelstudio
      vgtool export-labels runs/pets --to yolo --val-fraction 0.2 --min-score 0.35
      vgtool export-labels runs/pets --to voc --classes dog --drop-empty
      vgtool export-labels runs/pets --to coco
      vgtool export-labels runs/pets --to odvg --images-mode link
      vgtool export-labels runs/pets --to labelme --out pets-labelme

    Label Studio: create a project with labeling_config.xml and import tasks.json. With the default --url-prefix, the images are served by Label Studio's local files: the command prints the LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT to start it with and the "Local files" storage folder to add to the project. coco is the layout datumaro and CVAT ("COCO 1.0") import. odvg trains GroundingDINO. labelme opens in LabelMe and X-AnyLabeling.
    """
    from vgtool.exports import ExportOptions, ExportResult, export_labels

    options = ExportOptions(
        min_score=min_score,
        classes=tuple(classes or ()),
        keep_empty=keep_empty,
        images_mode=images_mode,  # type: ignore[arg-type]  # checked by ExportOptions
        val_fraction=val_fraction,
        seed=seed,
        confidence=confidence,
        url_prefix=url_prefix,
    )

    def report(result: ExportResult) -> None:
        line = f"{result.format}: {result.images} images, {result.boxes} boxes"
        if result.dropped_boxes or result.dropped_images:
            line += f" (dropped {result.dropped_boxes} boxes, {result.dropped_images} images)"
        if result.upright:
            line += f", {result.upright} EXIF-rotated images written upright"
        typer.echo(f"{line} -> {result.out_dir}")
        if result.serving is not None:
            root, storage = result.serving
            typer.echo(
                "  serve the images: start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
                f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}; in the project add a "
                f'"Local files" storage with path {storage}, then import tasks.json'
            )

    export_labels(
        run,
        to=to,
        out=out,
        images=images,
        options=options,
        overwrite=overwrite,
        quiet=quiet,
        progress=report,
    )
