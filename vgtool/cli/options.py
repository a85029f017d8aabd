"""Option types shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A vgtool checkpoint folder; 'default' (the bundled model, synthetic shapes only); or a "
        "zero-shot model: hf:<hub id>[@revision] (hf:IDEA-Research/grounding-dino-tiny, "
        "hf:google/owlv2-base-patch16-ensemble, hf:google/owlvit-base-patch32, "
        "hf:omlab/omdet-turbo-swin-tiny-hf) or a folder saved with save_pretrained. "
        "Default: the bundled model.",
    ),
]
PhraseOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--phrase",
        "-p",
        help="Phrase to ground (repeatable). 'red car=car' files its boxes under class 'car'.",
    ),
]
PhrasesFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--phrases-file", help="Text file with one phrase per line (repeatable)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: key.path=value (repeatable; value parsed as YAML)."),
]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
