"""``vgtool export``: a slim copy of a checkpoint for shipping (fp16 weights, referenced backbones),
or, with ``--onnx``, the model as ONNX graphs for ONNX Runtime (optionally int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgtool.cli.checks import check_device, check_folder, check_model, check_out_folder, check_path
from vgtool.cli.options import OUT_FLAGS, DeviceOpt, QuietOpt


def export_cli(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="Checkpoint folder, e.g. runs/train/best; with --onnx also `default` (the bundled "
            "model) or a Hugging Face model (hf:<id> or a save_pretrained folder)."
        ),
    ],
    out: Annotated[Path, typer.Option(*OUT_FLAGS, help="Folder to write the exported model to.")],
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx",
            help="Write the model as ONNX graphs for ONNX Runtime instead (any batch size and phrase "
            "count), checked against torch; ground with --model OUT. VL-GTR checkpoints, OWLv2, "
            "OWL-ViT, Grounding DINO and MM-Grounding-DINO.",
        ),
    ] = False,
    quantize: Annotated[
        bool,
        typer.Option(
            "--quantize", help="With --onnx: int8 weights (dynamic quantisation); a quarter the size."
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="With --onnx: replace what is in --out.")
    ] = False,
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
    """Write a slim checkpoint for shipping, or ONNX graphs.

    fp16 weights, frozen pretrained parts referenced by name. Its metadata (training step,
    validation metrics) is kept. With --calibrate, the model's default score threshold is chosen on
    that data (use a validation split, never the test split).

    With --onnx, the graphs, the config and the tokenizer go to --out, and onnxruntime's outputs are
    compared with torch's before the export is declared done (the differences are stored in
    OUT/onnx.json). `vgtool ground DIR --model OUT` then runs on ONNX Runtime (CPU; CUDA where
    onnxruntime-gpu is installed).

    \b
    Examples:
      vgtool export runs/train/best --out models/shipped --calibrate data/calib --split val
      vgtool export default --onnx --out models/default-onnx
      vgtool export runs/train/best --onnx --quantize --out models/best-int8
    """
    check_device(device)
    if onnx:
        if calibrate is not None:
            raise typer.BadParameter(
                "calibrate the checkpoint first, then export it with --onnx", param_hint="--calibrate"
            )
        check_model(checkpoint, "CHECKPOINT")
        check_out_folder(out)
        from vgtool.onnx_export.export import export_onnx

        manifest = export_onnx(checkpoint, out, quantize=quantize, overwrite=overwrite)
        size = sum((out / name).stat().st_size for name in manifest.graphs.values())
        check = manifest.check.get("quantized", manifest.check)  # int8: its own differences
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in check.get("max_abs_diff", {}).items())
        typer.echo(
            f"wrote {out} ({len(manifest.graphs)} graphs, {size / 2**20:.1f} MiB"
            + (f", {manifest.quantization}" if manifest.quantization else "")
            + f"; largest difference from torch: {diffs or 'not checked'})"
        )
        return
    if quantize or overwrite:
        raise typer.BadParameter("--quantize and --overwrite go with --onnx", param_hint="--quantize")
    checkpoint_path = Path(checkpoint)
    check_folder(checkpoint_path, "CHECKPOINT", "checkpoint folder")
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
            load_grounder(checkpoint_path, device=device),
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
    path, size = export_checkpoint(checkpoint_path, out, fp16=fp16, postprocess=postprocess)
    typer.echo(f"wrote {path} ({size / 2**20:.1f} MiB)")
