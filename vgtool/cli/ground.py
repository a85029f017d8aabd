"""``vgtool ground``: parse options, check the inputs, call :func:`vgtool.ground.pipeline.ground`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_device, check_file, check_model, check_out_folder
from vgtool.cli.options import (
    OUT_FLAGS,
    DeviceOpt,
    ModelOpt,
    NmsIouOpt,
    PhraseOpt,
    PhrasesFileOpt,
    QuietOpt,
    RecursiveOpt,
    ThresholdOpt,
    TopKOpt,
    run_folder,
)
from vgtool.errors import InputError, Interrupted, Terminated

EXIT_SKIPPED = 3


class MergeChoice(str, Enum):
    class_ = "class"
    all = "all"
    none = "none"


def ground_cli(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH",
            help="Images: folders, files, glob patterns, or .txt files listing one image per line.",
        ),
    ],
    phrase: PhraseOpt = None,
    phrases_file: PhrasesFileOpt = None,
    model: ModelOpt = None,
    out: Annotated[
        Path, typer.Option(*OUT_FLAGS, help="Output folder; the same command again resumes it.")
    ] = run_folder("ground"),
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            "-b",
            min=0,
            help="Images per batch; 0 picks the most that fit memory (capped at 16 on CPU, 128 on CUDA).",
        ),
    ] = 0,
    device: DeviceOpt = "auto",
    threshold: ThresholdOpt = None,
    top_k: TopKOpt = 0,
    nms_iou: NmsIouOpt = 0.7,
    merge: Annotated[
        MergeChoice,
        typer.Option(
            "--merge",
            help="Merge boxes of different phrases on one object (IoU above --merge-iou), keeping the "
            "best-scoring one: 'class' among phrases filed under one class ('red car=car', "
            "'blue car=car'), 'all' whatever their class, 'none' never.",
        ),
    ] = MergeChoice.class_,
    merge_iou: Annotated[
        float,
        typer.Option(
            "--merge-iou", min=0.0, max=1.0, help="IoU above which --merge treats two boxes as one object."
        ),
    ] = 0.5,
    categories: Annotated[
        Path | None,
        typer.Option(
            "--categories",
            help="Use the category ids and names of this file in annotations.json: a COCO file (its "
            "'categories') or a names list, one per line (ids from 1). Every phrase's class must be "
            "one of them; categories no phrase uses are listed all the same, so ids match the dataset.",
        ),
    ] = None,
    crops: Annotated[
        bool, typer.Option("--crops/--no-crops", help="Write crops/<class>/<image>_<id>.jpg.")
    ] = True,
    overlays: Annotated[
        bool, typer.Option("--overlays/--no-overlays", help="Write overlays/<image>.jpg.")
    ] = True,
    recursive: RecursiveOpt = False,
    ext: Annotated[
        list[str] | None, typer.Option("--ext", help="Image extensions to accept, e.g. --ext jpg --ext png.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Decoding processes; -1 picks a number.")] = -1,
    bf16: Annotated[
        bool | None,
        typer.Option("--bf16/--no-bf16", help="bf16 autocast (default: on for CUDA, off for CPU)."),
    ] = None,
    compile_model: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the model: slow first batches, faster long GPU runs."),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace outputs of a different earlier run in --out.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the earlier run in --out; fail if there is none or its settings differ.",
        ),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on the first unreadable image instead of skipping it.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Ground phrases in images: COCO boxes, crops, overlays.

    Writes annotations.json (COCO), crops/, overlays/ and run.json to --out. Re-running the same
    command with the same --out resumes an interrupted run; --resume insists on resuming: it fails
    if --out holds no run, or one with other model/phrases/postprocess. One run at a time writes
    into a folder; nothing under --out, nor other runs' output folders met with -r, is read as input.

    Under torchrun (`torchrun --nproc-per-node N -m vgtool ground ...`) the ranks split the images,
    one device each, and rank 0 writes the same outputs one process would (docs/robustness.md).

    Exit status: 0 done; 3 done but some files were skipped (listed in run.json); 1 error (also a
    full disk: free space and re-run); 2 usage error; 130 interrupted (Ctrl-C); 143 terminated
    (SIGTERM).

    Without --model the bundled model runs: it knows only the shapes of `vgtool synth`. For
    photos, use a zero-shot model from the Hugging Face hub (or its cache, or a save_pretrained
    folder).

    \b
    Examples:
      vgtool ground photos/ -p "red car=car" -p "blue car=car" -p dog --model hf:IDEA-Research/grounding-dino-tiny --out runs/pets
      vgtool ground photos/ -p person --model hf:google/owlv2-base-patch16-ensemble --conf 0.2
    """
    from vgtool.data.listing import list_images
    from vgtool.ground.folder_lock import check_unlocked
    from vgtool.ground.phrases import build_ontology
    from vgtool.ground.shard import shard_from_env

    # usage errors first, within a fraction of a second: torch is not imported yet
    if resume and overwrite:
        raise InputError("--resume and --overwrite cannot be used together")
    check_device(device)
    check_file(categories, "--categories")
    build_ontology(phrase or [], phrases_file or [], categories)
    check_model(model)
    check_out_folder(out)
    shard = shard_from_env()  # under torchrun: this process's rank
    check_unlocked(out, shard.run_id)  # the ranks of one launch share --out
    entries = list_images(paths, recursive=recursive, extensions=ext or None, exclude=[out], warn=_warn)

    from vgtool.ground.pipeline import GroundConfig, ground
    from vgtool.models.bundled import DEFAULT_MODEL_DOMAIN, SUGGESTED_PHOTO_MODEL, is_default_model

    config = GroundConfig(
        threshold=threshold,
        top_k=top_k,
        nms_iou=nms_iou,
        batch_size=batch_size,
        device=device,
        num_workers=workers,
        crops=crops,
        overlays=overlays,
        recursive=recursive,
        extensions=tuple(ext or ()),
        bf16=bf16,
        overwrite=overwrite,
        resume=resume,
        strict=strict,
        compile=compile_model,
        quiet=quiet,
        merge=merge.value,
        merge_iou=merge_iou,
        categories_file=categories,
    )
    if is_default_model(model):
        typer.echo(
            f"note: the bundled model knows only {DEFAULT_MODEL_DOMAIN}; for photos use a zero-shot "
            f"model (--model {SUGGESTED_PHOTO_MODEL}) or a checkpoint you trained",
            err=True,
        )
    try:
        summary = ground(
            paths,
            phrase or [],
            out_dir=out,
            model=model,
            phrase_files=phrases_file or [],
            config=config,
            entries=entries,
            shard=shard,
        )
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM: Terminated
        terminated = isinstance(err, Terminated)
        raise Interrupted(
            f"{'terminated' if terminated else 'interrupted'}; finished images are kept in {out} "
            "(re-run the same command, or add --resume)",
            exit_code=Terminated.exit_code if terminated else Interrupted.exit_code,
        ) from None
    if not shard.is_main:
        return  # another rank of a sharded run: rank 0 reports for all
    if not quiet:
        resumed = f" ({summary.resumed} done by an earlier run)" if summary.resumed else ""
        if summary.repaired:
            resumed += f", {summary.repaired} images' crops/overlays re-written"
        typer.echo(
            f"{summary.grounded} images grounded{resumed}, {summary.annotations} boxes in annotations.json, "
            f"{len(summary.skipped)} skipped -> {summary.out_dir}",
            err=True,
        )
    if summary.grounded and not summary.annotations:
        typer.echo(
            f"no boxes in {summary.grounded} images at threshold {summary.threshold:g}: try a lower "
            "--threshold, other phrases, or a model that knows these objects"
            + (f" (--model {SUGGESTED_PHOTO_MODEL})" if is_default_model(model) else ""),
            err=True,
        )
    if summary.skipped:
        raise typer.Exit(code=EXIT_SKIPPED)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)
