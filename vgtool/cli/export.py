"""``vgtool export``: a slim copy of a checkpoint for shipping (fp16 weights, referenced backbones)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_device, check_folder, check_out_folder, check_path
from vgtool.cli.options import OUT_FLAGS, DeviceOpt, QuietOpt


def export_cli(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/train/best.")],
    out: Annotated[Path, typer.Option(*OUT_FLAGS, help="Folder to write the exported checkpoint to.")],
    fp16: Annotated[
        bool, typer.Option("--fp16/--fp32", help="Store weights in fp16 (half the size; loads back as fp32).")
    ] = True,
    calibrate: Annotated[
        str | None,
        typer.Option(
            "--calibrate",
            help="Validation data: store the lowest threshold at which at most --max-no-object-fp of its "
            "phrases that name nothing get a box (with --confidence), as the model's default --threshold.",
        ),
    ] = None,
    split: Annotated[str | None, typer.Option("--split", help="Split of --calibrate data, e.g. val.")] = None,
    max_no_object_fp: Annotated[
        float, typer.Option("--max-no-object-fp", min=0.0, max=1.0, help="See --calibrate.")
    ] = 0.1,
    confidence: Annotated[
        float,
        typer.Option(
            "--confidence",
            min=0.0,
            max=0.999,
            help="Hold the one-sided upper bound of the false-box rate at this confidence to "
            "--max-no-object-fp, so the target also holds on new data; 0: the rate seen.",
        ),
    ] = 0.95,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Write a slim copy of a checkpoint for shipping.

    fp16 weights, frozen pretrained parts referenced by name. Its metadata (training step,
    validation metrics) is kept. With --calibrate, the model's default score threshold is chosen on
    that data (use a validation split, never the test split).

    \b
    Example: vgtool export runs/train/best --out models/shipped --calibrate data/calib --split val
    """
    check_device(device)
    check_folder(checkpoint, "CHECKPOINT", "checkpoint folder")
    check_path(calibrate, "--calibrate", "dataset file or folder")
    check_out_folder(out)

    from vgtool.checkpoint import export_checkpoint

    postprocess = None
    if calibrate is not None:
        from vgtool.datasets import DataConfig, load_samples
        from vgtool.evaluation.calibrate import calibrate as choose_threshold
        from vgtool.grounders import load_grounder

        samples = load_samples(DataConfig(path=calibrate, split=split))
        postprocess = choose_threshold(
            load_grounder(checkpoint, device=device),
            samples,
            max_no_object_fp=max_no_object_fp,
            confidence=confidence,
            quiet=quiet,
        )
        postprocess["calibrated_on"] = f"{calibrate}" + (f" (split {split})" if split else "")
        typer.echo(
            f"threshold {postprocess['threshold']}: {postprocess['no_object_fp_rate']:.1%} of "
            f"{postprocess['n_no_object']} phrases that name nothing get a box (upper bound at "
            f"{confidence:.0%} confidence: {postprocess['no_object_fp_bound']:.1%})",
            err=True,
        )
    path, size = export_checkpoint(checkpoint, out, fp16=fp16, postprocess=postprocess)
    typer.echo(f"wrote {path} ({size / 2**20:.1f} MiB)")
