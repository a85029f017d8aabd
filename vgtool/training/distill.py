"""``distill()``: a big grounder labels a folder of images, and a small fast VL-GTR student learns
from those labels (the idea of autodistill).

The steps, each writing under ``out_dir``:

1. ``teacher/``: :func:`~vgtool.ground.pipeline.ground` of the folder with the teacher (journaled, so
   re-running the same command resumes it), at the teacher's threshold or the one given.
2. ``labels/``: ``train.json`` and ``val.json``, COCO with phrases (see
   :mod:`vgtool.datasets.coco_phrases`): the teacher's boxes, and a top-level ``phrases`` list with
   one entry per (image, phrase), including every phrase that got no box in an image (a no-object
   sample, so the student learns to say nothing). Images are split at random, seeded.
3. ``student/``: :func:`~vgtool.training.trainer.train` of a VL-GTR student on those labels
   (``best/`` and ``last/`` as the trainer writes them): a new model of the recipe's (or a preset's)
   architecture, a checkpoint fine-tuned, or that architecture started from the teacher's weights
   (``student-init/``, see :func:`init_from_teacher`).
4. ``eval/``: :func:`~vgtool.evaluation.evaluate.evaluate_model` of ``student/best`` on the
   validation labels: how far the student agrees with the teacher. Then both models are timed on
   the same validation images and phrases (model only, as ``vgtool bench`` times it).
5. ``distill.json``: teacher, counts, split sizes, agreement, speeds and speed-up.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vgtool import __version__
from vgtool.atomic import write_bytes_atomic
from vgtool.errors import InputError
from vgtool.models.config import ModelConfig

if TYPE_CHECKING:
    from vgtool.ground.pipeline import RunSummary
    from vgtool.grounders import Grounder

DEFAULT_RECIPE = Path("train/distill_student.yaml")


@dataclass(frozen=True)
class DistillConfig:
    """Settings of a distillation run (everything but the inputs, phrases and models).

    Attributes:
        threshold: the teacher's score threshold for its labels; None uses its default (calibrated).
        val_fraction: share of the images held out to compare the student with the teacher.
        seed: seeds the split of the images and the student's training.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, for both models.
        recursive: search the image folder recursively.
        data_only: stop after writing the labels.
        resume: continue the student's training from ``student/last`` (the teacher's grounding
            resumes from its journal in any case).
        speed_images: at most this many validation images (decoded ahead) for the timing.
        quiet: no progress bars or progress lines.
    """

    threshold: float | None = None
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    recursive: bool = False
    data_only: bool = False
    resume: bool = False
    speed_images: int = 64
    quiet: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val fraction must be in [0, 1), got {self.val_fraction}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.speed_images < 1:
            raise InputError(f"speed images must be at least 1, got {self.speed_images}")


# ---- labels: pure converters ----------------------------------------------------------------------


def labels_from_annotations(coco: dict[str, Any], phrases: Sequence[str]) -> dict[str, Any]:
    """The teacher's ``annotations.json`` as COCO with phrases, no-object samples included.

    Args:
        coco: the teacher's ``annotations.json`` (annotations carry their ``phrase``).
        phrases: every phrase the teacher grounded in every image.

    Returns:
        ``images``, ``categories`` and ``annotations`` as the teacher wrote them, and a ``phrases``
        list with one entry per image and phrase (image-major, ids from 1): ``annotation_ids`` of the
        teacher's boxes (empty where it found nothing) and ``kind`` ``single``/``multi``/``none`` by
        their count.
    """
    known = set(phrases)
    boxes: dict[tuple[int, str], list[int]] = defaultdict(list)
    for ann in coco["annotations"]:
        if ann.get("phrase") not in known:
            raise InputError(
                f"teacher annotation {ann.get('id')} has phrase {ann.get('phrase')!r}, not a run phrase"
            )
        boxes[(ann["image_id"], ann["phrase"])].append(ann["id"])
    entries = []
    for image in sorted(coco["images"], key=lambda image: image["id"]):
        for phrase in phrases:
            ids = boxes.get((image["id"], phrase), [])
            kind = "none" if not ids else "single" if len(ids) == 1 else "multi"
            entries.append(
                {
                    "id": len(entries) + 1,
                    "image_id": image["id"],
                    "phrase": phrase,
                    "annotation_ids": ids,
                    "kind": kind,
                }
            )
    return {
        "images": coco["images"],
        "categories": coco["categories"],
        "annotations": coco["annotations"],
        "phrases": entries,
    }


def split_image_ids(image_ids: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split images into train and val at random (seeded; the same ids and seed give the same split).

    Val gets ``round(n * val_fraction)`` images, at least one when ``val_fraction`` > 0 and there are
    two or more, and train always keeps one. Both lists are sorted.
    """
    ids = sorted(image_ids)
    n_val = round(len(ids) * val_fraction)
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    held = set(val)
    return [i for i in ids if i not in held], val


def select_images(labels: dict[str, Any], image_ids: Sequence[int], info: dict[str, Any]) -> dict[str, Any]:
    """The part of ``labels`` about ``image_ids`` (ids unchanged), with ``info`` on top."""
    keep = set(image_ids)
    return {
        "info": info,
        "images": [image for image in labels["images"] if image["id"] in keep],
        "categories": labels["categories"],
        "annotations": [ann for ann in labels["annotations"] if ann["image_id"] in keep],
        "phrases": [entry for entry in labels["phrases"] if entry["image_id"] in keep],
    }


def label_counts(labels: dict[str, Any]) -> dict[str, Any]:
    """Images, samples (image x phrase), boxes and samples of each kind."""
    kinds = {"single": 0, "multi": 0, "none": 0}
    for entry in labels["phrases"]:
        kinds[entry["kind"]] += 1
    return {
        "images": len(labels["images"]),
        "samples": len(labels["phrases"]),
        "boxes": len(labels["annotations"]),
        "by_kind": kinds,
    }


# ---- the run ----------------------------------------------------------------------------------------


def distill(
    *,
    teacher: str | Path | None,
    images: str | Path,
    phrases: Sequence[str],
    out_dir: str | Path,
    phrase_files: Sequence[str | Path] = (),
    recipe: str | Path = DEFAULT_RECIPE,
    student: str | Path | None = None,
    preset: str | None = None,
    from_teacher: bool = False,
    overrides: Sequence[str] = (),
    epochs: int | None = None,
    config: DistillConfig | None = None,
) -> dict[str, Any]:
    """Label ``images`` with ``teacher``, train a student on the labels, and compare the two.

    Args:
        teacher: any ``--model`` spec (a checkpoint folder, ``default``/None, ``hf:<id>``, ...).
        images: the folder of images to label.
        phrases: phrases to ground in every image (``"text=class"`` files boxes under ``class``).
        out_dir: the run folder (see the module docstring).
        phrase_files: files with one phrase per line.
        recipe: the student's training recipe; its ``data`` paths are set to the labels, its
            ``seed`` and ``device`` to the run's, before ``overrides``.
        student: start from this checkpoint (``default``: the bundled model), with its architecture.
        preset: the student's architecture is this preset instead of the recipe's ``model``.
        from_teacher: start the student from the teacher's weights wherever a name and shape fit
            (see :func:`init_from_teacher`); the teacher must be a VL-GTR checkpoint.
        overrides: ``key.path=value`` changes to the recipe (``model.decoder.num_layers=2``, ...).
        epochs: train every stage of the recipe for this many epochs instead.
        config: run settings.

    Returns:
        The report, as written to ``out_dir/distill.json``.

    Raises:
        InputError, ConfigError, CheckpointError: bad inputs, recipe or models, before any training.
    """
    from vgtool.ground.phrases import build_ontology
    from vgtool.grounders import load_grounder

    config = config or DistillConfig()
    if student is not None and (preset is not None or from_teacher):
        raise InputError(
            "a student checkpoint brings its own architecture and weights: no preset or teacher start with it"
        )
    out_dir = Path(out_dir)
    image_root = Path(images).expanduser().resolve()
    if not image_root.is_dir():
        raise InputError(f"{images}: not a folder of images")
    ontology = build_ontology(phrases, phrase_files)  # cheap checks before any model loads
    student_setup = StudentSetup(recipe, student, preset, from_teacher, tuple(overrides), epochs)
    if not config.data_only:
        student_setup.recipe(out_dir / "labels", image_root, config, has_val=True)  # fail early
    timings: dict[str, float] = {}

    _say(config, f"1/5 teacher: grounding {image_root} with {len(ontology.phrases)} phrases")
    start = time.perf_counter()
    teacher_model = load_grounder(teacher, device=config.device)
    if from_teacher and teacher_model.family != "vlgtr":
        raise InputError(
            f"the student can start from a VL-GTR teacher only, not a {teacher_model.family} one"
        )
    summary = _ground_with_teacher(teacher_model, image_root, phrases, phrase_files, out_dir, config)
    timings["teacher_s"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    coco = json.loads((out_dir / "teacher" / "annotations.json").read_text(encoding="utf-8"))
    splits = _write_labels(coco, ontology.texts, out_dir / "labels", config, teacher_model.identity())
    timings["labels_s"] = round(time.perf_counter() - start, 2)
    report: dict[str, Any] = {
        "vgtool_version": __version__,
        "teacher": {
            "spec": "default" if teacher is None else str(teacher),
            "source": str(teacher_model.source),
            "family": teacher_model.family,
            **teacher_model.identity(),
            "threshold": teacher_model.default_threshold if config.threshold is None else config.threshold,
        },
        "images": {"root": str(image_root), "listed": summary.images, "skipped": len(summary.skipped)},
        "phrases": ontology.texts,
        "labels": {
            "dir": str(out_dir / "labels"),
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "all": label_counts(splits["all"]),
            "train": label_counts(splits["train"]),
            "val": label_counts(splits["val"]),
        },
    }
    _say(config, _labels_line(report["labels"]))
    if config.data_only:
        report["timings_s"] = timings
        return _write_report(out_dir, report)

    _say(config, "3/5 student: training")
    start = time.perf_counter()
    report["student"] = _train_student(
        student_setup,
        out_dir,
        image_root,
        config,
        has_val=bool(splits["val"]["phrases"]),
        teacher=teacher_model,
    )
    timings["train_s"] = round(time.perf_counter() - start, 2)
    student_path = out_dir / "student" / "best"

    if splits["val"]["phrases"]:
        _say(config, "4/5 agreement with the teacher on the validation images")
        start = time.perf_counter()
        report["agreement"] = _agreement(student_path, out_dir, image_root, config)
        timings["evaluate_s"] = round(time.perf_counter() - start, 2)
    else:
        report["agreement"] = None

    _say(config, "5/5 speed: teacher and student on the same images and phrases")
    start = time.perf_counter()
    student_model = load_grounder(student_path, device=config.device)
    timed = splits["val"]["images"] or splits["train"]["images"]
    files = [image_root / image["file_name"] for image in timed[: config.speed_images]]
    report["speed"] = model_only_speed(
        {"teacher": teacher_model, "student": student_model}, files, ontology.texts
    )
    report["teacher"]["parameters"] = teacher_model.describe()["parameters"]["total"]
    report["student"]["parameters"] = student_model.describe()["parameters"]["total"]
    timings["speed_s"] = round(time.perf_counter() - start, 2)
    report["timings_s"] = timings
    return _write_report(out_dir, report)


def _say(config: DistillConfig, message: str) -> None:
    if not config.quiet:
        from tqdm import tqdm

        tqdm.write(f"distill: {message}", file=sys.stderr)


def _ground_with_teacher(
    teacher_model: Grounder,
    image_root: Path,
    phrases: Sequence[str],
    phrase_files: Sequence[str | Path],
    out_dir: Path,
    config: DistillConfig,
) -> RunSummary:
    from vgtool.ground.pipeline import GroundConfig, ground

    ground_config = GroundConfig(
        threshold=config.threshold,
        device=config.device,
        crops=False,
        overlays=False,
        recursive=config.recursive,
        quiet=config.quiet,
    )
    return ground(
        [image_root],
        phrases,
        out_dir=out_dir / "teacher",
        model=teacher_model,
        phrase_files=phrase_files,
        config=ground_config,
    )


def _write_labels(
    coco: dict[str, Any], phrases: Sequence[str], labels_dir: Path, config: DistillConfig, teacher: dict
) -> dict[str, dict[str, Any]]:
    """Write ``labels/train.json`` and ``labels/val.json``; return all labels and both splits."""
    labels = labels_from_annotations(coco, phrases)
    if not labels["images"]:
        raise InputError("the teacher grounded no image (every file was skipped); nothing to learn from")
    train_ids, val_ids = split_image_ids(
        [image["id"] for image in labels["images"]], config.val_fraction, config.seed
    )
    labels_dir.mkdir(parents=True, exist_ok=True)
    splits = {"all": labels}
    for split, ids in (("train", train_ids), ("val", val_ids)):
        info = {
            "description": "vgtool distill labels",
            "teacher": teacher["model"],
            "split": split,
            "seed": config.seed,
        }
        splits[split] = select_images(labels, ids, info)
        _write_json(labels_dir / f"{split}.json", splits[split])
    return splits


def _labels_line(labels: dict[str, Any]) -> str:
    kinds = labels["all"]["by_kind"]
    return (
        f"2/5 labels: {labels['all']['samples']} samples ({kinds['single']} single, {kinds['multi']} multi, "
        f"{kinds['none']} none), {labels['train']['images']} train / {labels['val']['images']} val images"
    )


@dataclass(frozen=True)
class StudentSetup:
    """How the student is made: a recipe file and the options that change it (see :func:`distill`)."""

    recipe_path: str | Path = DEFAULT_RECIPE
    student: str | Path | None = None
    preset: str | None = None
    from_teacher: bool = False
    overrides: tuple[str, ...] = ()
    epochs: int | None = None

    def recipe(self, labels_dir: Path, image_root: Path, config: DistillConfig, *, has_val: bool):
        """The student's :class:`~vgtool.training.config.RecipeConfig`: the recipe file with its data
        set to the labels and its seed and device to the run's; then ``init_from`` set to the student
        checkpoint or the model to the preset, the epochs of every stage, and the overrides."""
        from vgtool.config import load_mapping
        from vgtool.models.bundled import resolve_model_path
        from vgtool.training.config import recipe_from_mapping

        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        mapping = load_mapping(self.recipe_path)

        def split(name: str) -> dict[str, Any]:
            return {"format": "coco", "path": str(labels_dir), "split": name, "image_root": str(image_root)}

        data = dict(mapping.get("data") or {})
        data.update(train=split("train"), val=split("val") if has_val else None)
        mapping.update(data=data, seed=config.seed, device=config.device)
        if self.student is not None:
            mapping["init_from"] = str(resolve_model_path(self.student))
        if self.preset is not None:
            mapping["model"] = {"preset": self.preset}
        if self.epochs is not None:
            stages = mapping.get("stages") or [{}]
            mapping["stages"] = [{**stage, "epochs": self.epochs} for stage in stages]
        return recipe_from_mapping(mapping, self.overrides)


def init_from_teacher(
    teacher: str | Path, student: ModelConfig, out: str | Path, seed: int = 0
) -> dict[str, Any]:
    """Write a checkpoint of architecture ``student`` to ``out``, holding every weight of the
    ``teacher`` checkpoint whose name and shape fit, and new ones (seeded) for the rest.

    A student with a smaller input size keeps the teacher's whole (convolutional) backbone; one with
    fewer decoder layers keeps the teacher's first ones and its heads, which every layer shares.
    The student starts from the teacher's answers, not from nothing (as DistilBERT starts from
    every other layer of BERT).

    Returns:
        ``{"from", "copied", "new"}``: the teacher and the counts of tensors copied and made new.
    """
    import torch

    from vgtool.checkpoint import load_checkpoint, save_checkpoint
    from vgtool.models.build import build_model

    given = load_checkpoint(teacher).state_dict()
    torch.manual_seed(seed)
    model = build_model(student)
    own = model.state_dict()
    fits = {key: given[key] for key, value in own.items() if key in given and given[key].shape == value.shape}
    model.load_state_dict({**own, **fits})
    summary = {"from": str(teacher), "copied": len(fits), "new": len(own) - len(fits)}
    save_checkpoint(model, out, extra={"init": summary})
    return summary


def _train_student(
    setup: StudentSetup,
    out_dir: Path,
    image_root: Path,
    config: DistillConfig,
    *,
    has_val: bool,
    teacher: Grounder,
) -> dict[str, Any]:
    from vgtool.checkpoint import read_checkpoint_config
    from vgtool.training.trainer import train

    recipe = setup.recipe(out_dir / "labels", image_root, config, has_val=has_val)
    init = f"checkpoint {recipe.init_from}" if recipe.init_from else "new"
    if setup.from_teacher:
        start = init_from_teacher(teacher.source, recipe.model, out_dir / "student-init", seed=config.seed)
        recipe = replace(recipe, init_from=str(out_dir / "student-init"))
        init = f"teacher ({start['copied']} tensors copied, {start['new']} new)"
    resume = config.resume and (out_dir / "student" / "last" / "train_state.json").is_file()
    result = train(recipe, out_dir / "student", resume=resume, quiet=config.quiet)
    _, document = read_checkpoint_config(out_dir / "student" / "best")
    return {
        "checkpoint": str(out_dir / "student" / "best"),
        "recipe": str(setup.recipe_path),
        "init": init,
        "architecture": document["model"],
        "steps": result["counters"]["step"],
        "best_val": (document.get("meta") or {}).get("val"),
    }


def _agreement(student_path: Path, out_dir: Path, image_root: Path, config: DistillConfig) -> dict[str, Any]:
    """The student scored against the teacher's validation labels (``eval/metrics.json``)."""
    from vgtool.datasets import DataConfig
    from vgtool.evaluation.evaluate import EvalConfig, evaluate_model

    data = DataConfig(format="coco", path=str(out_dir / "labels"), split="val", image_root=str(image_root))
    eval_config = EvalConfig(device=config.device, quiet=config.quiet)
    metrics = evaluate_model(model=student_path, data=data, out_dir=out_dir / "eval", config=eval_config)
    kinds = metrics["by_kind"]

    def value(kind: str, key: str) -> float | None:
        return kinds[kind][key] if kind in kinds else None

    return {
        "acc@0.5_single": value("single", "acc@0.5"),
        "acc@0.5": metrics["overall"]["acc@0.5"],
        "map50": metrics["overall"]["map50"],
        "map50_multi": value("multi", "map50"),
        "no_object_fp_rate": value("none", "no_object_fp_rate"),
        "threshold": metrics["settings"]["threshold"],
        "n_samples": {kind: table["n_samples"] for kind, table in kinds.items()},
        "metrics": str(out_dir / "eval" / "metrics.json"),
    }


# ---- speed ------------------------------------------------------------------------------------------


def model_only_speed(
    grounders: dict[str, Grounder], files: Sequence[Path], phrases: Sequence[str]
) -> dict[str, Any]:
    """Images per second of each grounder's ``predict`` on the same decoded images and phrases.

    As ``vgtool bench`` measures model-only speed: inputs are decoded and resized ahead of time, so
    only the backbone, decoder and postprocessing (at each model's default threshold) are timed, in
    each model's automatic batch size. The models take turns within each of ``vgtool bench``'s
    repeats, and each keeps its best repeat, so a slow spell of the machine touches all alike.
    """
    import torch

    from vgtool.bench import REPEATS
    from vgtool.data.decode import load_rgb
    from vgtool.data.image_dataset import ImageBatch
    from vgtool.models.postprocess import PostProcessConfig
    from vgtool.prediction.batching import auto_batch_size
    from vgtool.prediction.timer import best_of_turns

    decoded = [load_rgb(path) for path in files]
    prepared = {}
    for name, grounder in grounders.items():
        size = auto_batch_size(grounder.device, grounder.per_image_memory_bytes(len(phrases)))
        batches = []
        for start in range(0, len(decoded), size):
            chunk = decoded[start : start + size]
            batches.append(
                ImageBatch(
                    indices=list(range(len(chunk))),
                    pixels=torch.stack([grounder.image_transform(image) for image in chunk]),
                    sizes_wh=torch.tensor([image.size for image in chunk], dtype=torch.float32),
                    images=None,
                    failures=[],
                )
            )
        postprocess = PostProcessConfig(threshold=grounder.default_threshold)
        encoded = grounder.encode_phrases(list(phrases))
        grounder.predict(batches[0], encoded, postprocess=postprocess)  # warm-up

        def run(grounder=grounder, batches=batches, encoded=encoded, postprocess=postprocess) -> None:
            for batch in batches:
                grounder.predict(batch, encoded, postprocess=postprocess)

        prepared[name] = (grounder, run, size)
    device = next(iter(grounders.values())).device
    best = best_of_turns({name: run for name, (_, run, _) in prepared.items()}, REPEATS, device)
    report: dict[str, Any] = {"images": len(decoded), "phrases": len(phrases), "repeats": REPEATS}
    for name, (grounder, _, size) in prepared.items():
        report[name] = {
            "images_per_s": round(len(decoded) / best[name], 2),
            "batch_size": size,
            "device": str(grounder.device),
        }
    if {"teacher", "student"} <= set(report):
        report["speedup"] = round(report["student"]["images_per_s"] / report["teacher"]["images_per_s"], 2)
    return report


def _write_json(path: Path, document: Any) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))


def _write_report(out_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    _write_json(out_dir / "distill.json", report)
    return report
