"""``vgtool bench``: measure grounding throughput, model-only and end to end; or, with
``--train-recipe``, stage-1 training throughput with and without the vision-feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.options import DeviceOpt, ModelOpt, QuietOpt, SetOpt


def bench_cli(
    model: ModelOpt = None,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of real images to ground.")] = None,
    synthetic: Annotated[
        int, typer.Option("--synthetic", min=1, help="Without --images: render this many procedural images.")
    ] = 200,
    phrases: Annotated[int, typer.Option("--phrases", "-k", min=1, help="Phrases per image.")] = 4,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=0, help="0 picks one.")] = 0,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="Default: on for CUDA.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the report as JSON here.")] = Path(
        "bench.json"
    ),
    memory_scaling: Annotated[
        str | None,
        typer.Option(
            "--memory-scaling",
            help="Also run separate grounding jobs over these image counts (e.g. 200,2000) and report peak memory of each.",
        ),
    ] = None,
    train_recipe: Annotated[
        Path | None,
        typer.Option(
            "--train-recipe",
            help="Instead: time the recipe's frozen-backbone first stage with and without the feature cache.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="'pipeline': also time transformers' zero-shot-object-detection pipeline on the same "
            "Hugging Face model, images and phrases, and report the speed-up.",
        ),
    ] = None,
    top_k: Annotated[
        int,
        typer.Option(
            "--top-k",
            "-t",
            min=0,
            help="At most K boxes per phrase and image (0: all); caps random-weight models.",
        ),
    ] = 0,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Model-only timings: best of this many.")
    ] = 5,
    overrides: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure grounding speed: model-only vs end-to-end images/s, time per stage, phrase scaling, memory.

    With --train-recipe, train the recipe's first stage for 2 epochs with and without cached vision
    features and report samples/s (--set overrides the recipe).

    Example: vgtool bench --model runs/train/best --synthetic 200 --phrases 4 --out bench.json

    Example: vgtool bench --phrases 4 --memory-scaling 200,2000   (the bundled model; memory flat?)

    Example: vgtool bench --model hf:IDEA-Research/grounding-dino-tiny --synthetic 10 --baseline pipeline

    Example: vgtool bench --train-recipe train/vlgtr_refcoco.yaml --out train_bench.json
    """
    import json

    if train_recipe is not None:
        from vgtool.training.config import load_recipe
        from vgtool.training.throughput import train_throughput

        sets = [*(overrides or []), *([f"device={device}"] if device != "auto" else [])]
        report = train_throughput(load_recipe(train_recipe, sets), out_json=out, quiet=quiet)
        typer.echo(json.dumps(report, indent=2))
        return

    from vgtool.bench import bench

    counts: tuple[int, ...] = ()
    if memory_scaling:
        try:
            counts = tuple(int(part) for part in memory_scaling.split(",") if part.strip())
        except ValueError:
            raise typer.BadParameter(f"expected counts like 200,2000, not {memory_scaling!r}") from None
        if len(counts) < 2 or min(counts) < 1:
            raise typer.BadParameter("give at least two image counts >= 1, e.g. 200,2000")
    report = bench(
        model=model,
        images=images,
        synthetic=synthetic,
        phrases=phrases,
        device=device,
        batch_size=batch_size,
        bf16=bf16,
        out_json=out,
        memory_scaling=counts,
        baseline=baseline,
        top_k=top_k,
        repeats=repeats,
        quiet=quiet,
    )
    typer.echo(json.dumps(report, indent=2))
