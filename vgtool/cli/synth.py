"""``vgtool synth``: generate the procedural referring-expression dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from vgtool.cli.checks import check_out_folder
from vgtool.cli.options import OutDirOpt, QuietOpt


def synth_cli(
    out: OutDirOpt,
    n: Annotated[int, typer.Option("--n", help="Number of images over all splits.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Same n and seed give identical files.")] = 0,
    image_size: Annotated[int, typer.Option("--image-size", help="Square image side in pixels.")] = 160,
    phrases_per_image: Annotated[int, typer.Option("--phrases-per-image", help="Phrases per image.")] = 4,
    split: Annotated[
        str | None, typer.Option("--split", help="Write everything into one split, e.g. test.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes; output does not depend on it.")] = 1,
    quiet: QuietOpt = False,
) -> None:
    """Generate the procedural shapes dataset.

    A referring-expression dataset (COCO with phrases) of rendered scenes: writes images, a COCO
    file per split (80/10/10 unless --split) and scene metadata to --out.

    \b
    Example: vgtool synth --out data/synth --n 2000 --seed 0
    """
    check_out_folder(out)

    from tqdm import tqdm

    from vgtool.synth import generate_dataset

    with tqdm(total=n, desc="synth", unit="img", disable=quiet) as bar:
        summary = generate_dataset(
            out,
            n,
            seed,
            split_override=split,
            image_size=(image_size, image_size),
            phrases_per_image=phrases_per_image,
            workers=workers,
            progress=bar.update,
        )
    for name, counts in summary.items():
        typer.echo(
            f"{name}: {counts['images']} images, {counts['phrases']} phrases "
            f"({counts['single']} single, {counts['multi']} multi, {counts['none']} none), "
            f"{counts['annotations']} boxes -> {out / (name + '.json')}"
        )
