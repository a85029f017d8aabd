"""``vgtool bench``: measure grounding throughput, model-only and end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.options import DeviceOpt, ModelOpt, QuietOpt


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
    quiet: QuietOpt = False,
) -> None:
    """Measure grounding speed: model-only vs end-to-end images/s, time per stage, phrase scaling, memory.

    Example: vgtool bench --model runs/train/best --synthetic 200 --phrases 4 --out bench.json
    """
    import json

    from vgtool.bench import bench

    report = bench(
        model=model,
        images=images,
        synthetic=synthetic,
        phrases=phrases,
        device=device,
        batch_size=batch_size,
        bf16=bf16,
        out_json=out,
        quiet=quiet,
    )
    typer.echo(json.dumps(report, indent=2))
