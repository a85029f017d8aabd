"""``vgtool bench``: measure grounding throughput, model-only and end to end; or, with
``--train-recipe``, stage-1 training throughput with and without the vision-feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_device, check_folder, check_model, check_out_file, check_recipe
from vgtool.cli.options import OUT_FLAGS, DeviceOpt, ModelOpt, QuietOpt, SetOpt, TopKOpt, run_folder
from vgtool.errors import InputError

REPORT_NAME = "bench.json"
TRAIN_REPORT_NAME = "train_bench.json"


def bench_cli(
    model: ModelOpt = None,
    images: Annotated[
        Path | None, typer.Option("--images", "-i", help="Folder of real images to ground.")
    ] = None,
    synthetic: Annotated[
        int, typer.Option("--synthetic", min=1, help="Without --images: render this many procedural images.")
    ] = 200,
    phrases: Annotated[int, typer.Option("--phrases", min=1, help="Phrases per image.")] = 4,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=0, help="0 picks one.")] = 0,
    bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="Default: on for CUDA.")] = None,
    out: Annotated[
        Path,
        typer.Option(
            *OUT_FLAGS,
            help=f"Folder to write the report to ({REPORT_NAME}; {TRAIN_REPORT_NAME} with "
            "--train-recipe); a path ending in .json names the report file itself.",
        ),
    ] = run_folder("bench"),
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
    top_k: TopKOpt = 0,
    repeats: Annotated[
        int,
        typer.Option(
            "--repeats", min=1, help="Rounds, each timing every stage once; figures are the best round's."
        ),
    ] = 5,
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime",
            help="What runs the model: torch or onnx (ONNX Runtime; a model that is not an ONNX export "
            "is exported first), or both to compare: torch,onnx (the first one's figures are also the "
            "report's top-level ones).",
        ),
    ] = "torch",
    overrides: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Measure grounding (or training) throughput.

    Decoding, the model and writing, each timed alone, against the whole run end to end (taken in
    turns, best of --repeats rounds), and end to end over the slowest stage; time per stage,
    phrase scaling and memory. A model with random weights boxes everything: --top-k caps what it
    writes.

    With --train-recipe, train the recipe's first stage for 2 epochs with and without cached vision
    features and report samples/s (--set overrides the recipe).

    \b
    Examples:
      vgtool bench --model runs/train/best --synthetic 200 --phrases 4 --out runs/bench
      vgtool bench --phrases 4 --memory-scaling 200,2000   (the bundled model; memory flat?)
      vgtool bench --model hf:IDEA-Research/grounding-dino-tiny --synthetic 10 --baseline pipeline
      vgtool bench --train-recipe train/vlgtr_refcoco.yaml --out runs/bench/train.json
    """
    import json

    sets = [*(overrides or []), *([f"device={device}"] if device != "auto" else [])]
    report_name = TRAIN_REPORT_NAME if train_recipe is not None else REPORT_NAME
    out_json = out if out.suffix.lower() == ".json" else out / report_name
    if baseline not in (None, "pipeline"):
        raise InputError(f"--baseline {baseline!r}: the only baseline is 'pipeline'")
    check_device(device)
    check_model(model)
    check_folder(images, "--images", "image folder")
    if train_recipe is not None:
        check_recipe(train_recipe, sets, "--train-recipe")
    check_out_file(out_json)
    counts = _image_counts(memory_scaling)
    runtimes = _runtimes(runtime)
    out_json.parent.mkdir(parents=True, exist_ok=True)

    if train_recipe is not None:
        from vgtool.training.config import load_recipe
        from vgtool.training.throughput import train_throughput

        report = train_throughput(load_recipe(train_recipe, sets), out_json=out_json, quiet=quiet)
        typer.echo(json.dumps(report, indent=2))
        return

    from vgtool.bench import bench
    from vgtool.bench_table import format_report

    report = bench(
        model=model,
        images=images,
        synthetic=synthetic,
        phrases=phrases,
        device=device,
        batch_size=batch_size,
        bf16=bf16,
        out_json=out_json,
        memory_scaling=counts,
        baseline=baseline,
        top_k=top_k,
        repeats=repeats,
        runtimes=runtimes,
        quiet=quiet,
    )
    typer.echo(format_report(report))
    typer.echo(f"report: {out_json}")


def _runtimes(runtime: str) -> tuple[str, ...]:
    """``--runtime torch,onnx`` -> ``("torch", "onnx")`` (repeats dropped)."""
    names = tuple(dict.fromkeys(part.strip() for part in runtime.split(",") if part.strip()))
    if not names:
        raise typer.BadParameter("name a runtime, e.g. torch or torch,onnx", param_hint="'--runtime'")
    unknown = [name for name in names if name not in ("torch", "onnx")]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r}: runtimes are torch and onnx", param_hint="'--runtime'")
    return names


def _image_counts(memory_scaling: str | None) -> tuple[int, ...]:
    """``--memory-scaling 200,2000`` -> ``(200, 2000)``."""
    if not memory_scaling:
        return ()
    hint = "'--memory-scaling'"
    try:
        counts = tuple(int(part) for part in memory_scaling.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected counts like 200,2000, not {memory_scaling!r}", param_hint=hint
        ) from None
    if len(counts) < 2 or min(counts) < 1:
        raise typer.BadParameter("give at least two image counts >= 1, e.g. 200,2000", param_hint=hint)
    return counts
