"""``vgtool distill``: parse options, call :func:`vgtool.training.distill.distill`, print a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vgtool.cli.checks import check_device, check_model, check_out_folder
from vgtool.cli.options import (
    OUT_FLAGS,
    THRESHOLD_FLAGS,
    DeviceOpt,
    PhraseOpt,
    PhrasesFileOpt,
    QuietOpt,
    RecursiveOpt,
    SetOpt,
    run_folder,
)
from vgtool.errors import InputError, Interrupted


def distill_cli(
    teacher: Annotated[
        str,
        typer.Option(
            "--teacher",
            help="The model that labels the images: a checkpoint folder, 'default' (bundled), or hf:<id>.",
        ),
    ],
    images: Annotated[Path, typer.Option("--images", "-i", help="Folder of images to label and learn from.")],
    phrase: PhraseOpt = None,
    phrases_file: PhrasesFileOpt = None,
    out: Annotated[
        Path,
        typer.Option(*OUT_FLAGS, help="Run folder: teacher/, labels/, student/, eval/, distill.json."),
    ] = run_folder("distill"),
    student: Annotated[
        str | None,
        typer.Option(
            "--student", help="Start the student from this checkpoint (fine-tune; 'default' = bundled)."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="Student architecture: this preset instead of the recipe's."),
    ] = None,
    from_teacher: Annotated[
        bool,
        typer.Option(
            "--from-teacher",
            help="Start the student from the teacher's weights wherever they fit (its backbone at a "
            "smaller input size, its first decoder layers); the rest starts new. VL-GTR teachers only.",
        ),
    ] = False,
    recipe: Annotated[
        Path,
        typer.Option("--recipe", help="Student training recipe (YAML); data paths are set for you."),
    ] = Path("train/distill_student.yaml"),
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.95,
            help="Share of the images held out to compare the two models.",
        ),
    ] = 0.2,
    threshold: Annotated[
        float | None,
        typer.Option(
            *THRESHOLD_FLAGS,
            min=0.0,
            max=1.0,
            help="Teacher's score threshold. Default: its calibrated one.",
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Train every stage of the recipe this many epochs.")
    ] = None,
    overrides: SetOpt = None,
    recursive: RecursiveOpt = False,
    data_only: Annotated[
        bool, typer.Option("--data-only", help="Stop after writing the labels (labels/train.json, val.json).")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the student's training in --out where it stopped.")
    ] = False,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/val split and of training.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Distil a teacher into a small fast student.

    The teacher labels --images (no-object phrases included), a VL-GTR student trains on those
    labels, and both are compared on held-out images (agreement Acc@0.5 and mAP50, and images/s of
    each).

    Re-running the same command resumes the teacher's grounding; add --resume to continue training.

    \b
    Example: vgtool distill --teacher default --images photos/ --phrases-file phrases.txt --out runs/distill --epochs 10
    """
    if not phrase and not phrases_file:
        raise typer.BadParameter("give at least one --phrase or --phrases-file", param_hint="--phrase")
    if student is not None and (preset is not None or from_teacher):
        raise typer.BadParameter(
            "give --student, or --preset / --from-teacher, not both", param_hint="--student"
        )
    from vgtool.config import load_mapping
    from vgtool.ground.phrases import build_ontology

    check_device(device)
    build_ontology(phrase or [], phrases_file or [])
    check_model(teacher, "--teacher")
    if student is not None:
        check_model(student, "--student")
    if not images.expanduser().is_dir():
        raise InputError(f"{images}: not a folder of images (--images)")
    load_mapping(recipe)  # readable YAML
    check_out_folder(out)

    from vgtool.training.distill import DistillConfig, distill

    config = DistillConfig(
        threshold=threshold,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        recursive=recursive,
        data_only=data_only,
        resume=resume,
        quiet=quiet,
    )
    try:
        report = distill(
            teacher=teacher,
            images=images,
            phrases=phrase or [],
            phrase_files=phrases_file or [],
            out_dir=out,
            recipe=recipe,
            student=student,
            preset=preset,
            from_teacher=from_teacher,
            overrides=overrides or [],
            epochs=epochs,
            config=config,
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; finished work is kept in {out} (re-run the same command with --resume)"
        ) from None
    typer.echo(summary_lines(report))
    if not quiet:
        typer.echo(f"-> {out / 'distill.json'}", err=True)


def summary_lines(report: dict[str, Any]) -> str:
    """A few lines: labels, the student, its agreement with the teacher, speeds."""
    labels = report["labels"]
    kinds = labels["all"]["by_kind"]
    lines = [
        f"labels: {labels['all']['images']} images x {len(report['phrases'])} phrases = "
        f"{labels['all']['samples']} samples ({kinds['single']} single, {kinds['multi']} multi, "
        f"{kinds['none']} none); train {labels['train']['images']} / val {labels['val']['images']} images"
    ]
    student = report.get("student")
    if student:
        minutes = report["timings_s"]["train_s"] / 60
        lines.append(f"student: {student['steps']} steps in {minutes:.1f} min -> {student['checkpoint']}")
    agreement = report.get("agreement")
    if agreement:
        shown = ", ".join(
            f"{name} {agreement[key]:.3f}"
            for name, key in (
                ("Acc@0.5 single", "acc@0.5_single"),
                ("mAP50", "map50"),
                ("no-object boxes", "no_object_fp_rate"),
            )
            if agreement.get(key) is not None
        )
        lines.append(f"student vs teacher (val): {shown}")
    speed = report.get("speed")
    if speed:
        lines.append(
            f"speed (model only, {speed['images']} images x {speed['phrases']} phrases): teacher "
            f"{speed['teacher']['images_per_s']:.0f} img/s, student {speed['student']['images_per_s']:.0f} "
            f"img/s ({speed['speedup']:.2f}x)"
        )
    return "\n".join(lines)
