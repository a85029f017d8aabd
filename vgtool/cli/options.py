"""Option types shared by several commands, declared once.

A short flag means one thing in every command (``tests/cli/test_options.py`` checks it):

    -p --phrase       -m --model        -o --out          -b --batch-size   -t --threshold
    -k --top-k        -r --recursive    -q --quiet        -d --data         -i --images
    -h --help

Aliases people know from other detectors: ``--conf`` for ``--threshold``, ``--iou`` for
``--nms-iou``, ``--max-det`` for ``--top-k``. Run outputs default to ``runs/<command>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

THRESHOLD_FLAGS = ("--threshold", "--conf", "-t")
TOP_K_FLAGS = ("--top-k", "--max-det", "-k")
NMS_IOU_FLAGS = ("--nms-iou", "--iou")
OUT_FLAGS = ("--out", "-o")
RUNS = Path("runs")


def run_folder(command: str) -> Path:
    """The default ``--out`` of a command that writes a run: ``runs/<command>``."""
    return RUNS / command


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A vgtool checkpoint folder; 'default' (the bundled model, synthetic shapes only); or a "
        "zero-shot model: hf:<hub id>[@revision] (hf:IDEA-Research/grounding-dino-tiny, "
        "hf:google/owlv2-base-patch16-ensemble, hf:google/owlvit-base-patch32, "
        "hf:omlab/omdet-turbo-swin-tiny-hf) or a folder saved with save_pretrained; or a folder "
        "written by `vgtool export MODEL --onnx` (runs on ONNX Runtime). Default: the bundled model.",
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
OutDirOpt = Annotated[Path, typer.Option(*OUT_FLAGS, help="Output folder.")]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Search folders (and ** in globs) recursively.")
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option(
        *THRESHOLD_FLAGS,
        min=0.0,
        max=1.0,
        help="Keep boxes scoring at least this. Default: the model's calibrated threshold "
        "(vgtool info shows it), else 0.5 (0 for single-box models, which keep their one box).",
    ),
]
TopKOpt = Annotated[
    int, typer.Option(*TOP_K_FLAGS, min=0, help="At most K boxes per phrase and image; 0 = all.")
]
NmsIouOpt = Annotated[
    float,
    typer.Option(
        *NMS_IOU_FLAGS,
        min=0.0,
        max=1.0,
        help="IoU above which overlapping boxes of one phrase are merged (NMS); 1 = off.",
    ),
]
