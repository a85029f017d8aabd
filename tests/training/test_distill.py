"""``vgtool distill``: teacher labels (no-object samples included), the split, the student, the report,
and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vgtool.cli.main import app, main
from vgtool.errors import InputError
from vgtool.training.distill import (
    DistillConfig,
    distill,
    label_counts,
    labels_from_annotations,
    split_image_ids,
)

RECIPE = Path(__file__).resolve().parents[2] / "train" / "distill_student.yaml"
PHRASES = ["the red circle", "all squares", "the leftmost shape", "all purple stars"]
# a tiny student for one short epoch, fp32 and in-process data loading (fast and portable on a CPU)
TINY_STUDENT = ["batch_size=8", "amp=none", "num_workers=0", "group_by_image=false"]
runner = CliRunner()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Eight rendered synth scenes (their ground truth is not used)."""
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 8, seed=21, image_size=(96, 96), splits=(("all", 1.0),))
    return root / "images" / "all"


@pytest.fixture(scope="module")
def run(images, tmp_path_factory) -> tuple[Path, dict]:
    """One whole distillation: the bundled model teaches a vlgtr-tiny student for one epoch."""
    out = tmp_path_factory.mktemp("distill") / "run"
    report = distill(
        teacher="default",
        images=images,
        phrases=PHRASES,
        out_dir=out,
        recipe=RECIPE,
        preset="vlgtr-tiny",
        epochs=1,
        overrides=TINY_STUDENT,
        config=DistillConfig(val_fraction=0.25, seed=3, device="cpu", quiet=True),
    )
    return out, report


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ---- labels and split: pure functions -------------------------------------------------------------


def test_labels_hold_every_phrase_of_every_image_and_no_object_samples():
    coco = {
        "images": [{"id": 2, "file_name": "b.png"}, {"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "phrase": "dog"},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [4, 4, 2, 2], "phrase": "dog"},
            {"id": 3, "image_id": 2, "category_id": 2, "bbox": [1, 1, 3, 3], "phrase": "cat"},
        ],
    }
    labels = labels_from_annotations(coco, ["dog", "cat"])
    entries = [
        (e["id"], e["image_id"], e["phrase"], e["annotation_ids"], e["kind"]) for e in labels["phrases"]
    ]
    assert entries == [
        (1, 1, "dog", [1, 2], "multi"),
        (2, 1, "cat", [], "none"),
        (3, 2, "dog", [], "none"),
        (4, 2, "cat", [3], "single"),
    ]
    assert label_counts(labels) == {
        "images": 2,
        "samples": 4,
        "boxes": 3,
        "by_kind": {"single": 1, "multi": 1, "none": 2},
    }
    coco["annotations"][0]["phrase"] = "wolf"
    with pytest.raises(InputError, match="not a run phrase"):
        labels_from_annotations(coco, ["dog", "cat"])


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(10, 0.2, 2), (10, 0.0, 0), (1, 0.5, 0), (2, 0.01, 1), (3, 0.9, 2), (101, 0.2, 20)],
)
def test_split_sizes(n, fraction, n_val):
    train, val = split_image_ids(list(range(1, n + 1)), fraction, seed=0)
    assert len(val) == n_val and len(train) == n - n_val
    assert sorted(train + val) == list(range(1, n + 1)) and train == sorted(train) and val == sorted(val)


def test_split_is_seeded():
    ids = list(range(1, 51))
    assert split_image_ids(ids, 0.2, seed=1) == split_image_ids(list(reversed(ids)), 0.2, seed=1)
    assert split_image_ids(ids, 0.2, seed=1) != split_image_ids(ids, 0.2, seed=2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"val_fraction": 1.0}, "val fraction"),
        ({"val_fraction": -0.1}, "val fraction"),
        ({"threshold": 1.5}, "threshold"),
        ({"speed_images": 0}, "speed images"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(InputError, match=message):
        DistillConfig(**settings)


def test_a_student_starts_from_the_teacher_weights_that_fit(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file

    from vgtool.models.presets import config_from_preset
    from vgtool.training.distill import init_from_teacher

    # one decoder layer of two, and a smaller input (the ViT's position table changes shape)
    student = config_from_preset("vlgtr-tiny", ["decoder.num_layers=1", "vision.image_size=32"])
    summary = init_from_teacher(tiny_checkpoint, student, tmp_path / "init")
    teacher, started = (
        load_file(tiny_checkpoint / "model.safetensors"),
        load_file(tmp_path / "init" / "model.safetensors"),
    )
    assert summary["copied"] + summary["new"] == len(started) and summary["new"] >= 1
    assert not any(key.startswith("decoder.layers.1.") for key in started)
    same = [key for key in started if key in teacher and started[key].shape == teacher[key].shape]
    assert len(same) == summary["copied"] and all(started[key].equal(teacher[key]) for key in same)
    assert started["vision.model.pos_embed"].shape != teacher["vision.model.pos_embed"].shape


# ---- one whole run --------------------------------------------------------------------------------


def test_labels_split_by_image_with_every_phrase(run, images):
    out, _ = run
    from vgtool.datasets.coco_phrases import load_coco_phrases

    teacher = _read(out / "teacher" / "annotations.json")
    train, val = _read(out / "labels" / "train.json"), _read(out / "labels" / "val.json")
    train_ids = {image["id"] for image in train["images"]}
    val_ids = {image["id"] for image in val["images"]}
    assert not train_ids & val_ids
    assert train_ids | val_ids == {image["id"] for image in teacher["images"]} and len(val_ids) == 2
    boxes = 0
    for labels, ids in ((train, train_ids), (val, val_ids)):
        pairs = [(entry["image_id"], entry["phrase"]) for entry in labels["phrases"]]
        assert sorted(pairs) == sorted((i, p) for i in ids for p in PHRASES)  # each pair exactly once
        annotations = {ann["id"]: ann for ann in labels["annotations"]}
        assert all(ann["image_id"] in ids for ann in annotations.values())
        for entry in labels["phrases"]:
            listed = [annotations[a] for a in entry["annotation_ids"]]
            assert all(a["image_id"] == entry["image_id"] and a["phrase"] == entry["phrase"] for a in listed)
        boxes += len(annotations)
    assert boxes == len(teacher["annotations"])
    everything = train["phrases"] + val["phrases"]
    assert {entry["kind"] for entry in everything} >= {"none", "single"}  # no-object samples are there
    samples = load_coco_phrases(out / "labels", "train", image_root=images)
    assert len(samples) == len(train_ids) * len(PHRASES)
    assert any(len(s.boxes_xyxy) == 0 for s in samples) and all(s.image_path.is_file() for s in samples)


def test_student_checkpoint_is_written(run):
    out, _ = run
    from vgtool.checkpoint import load_checkpoint

    model = load_checkpoint(out / "student" / "best")
    assert model.config.vision.name == "test_vit"  # the preset, not the recipe's model
    assert (out / "student" / "last" / "train_state.json").is_file()
    assert (out / "eval" / "metrics.json").is_file()


def test_report_counts_metrics_and_speeds(run):
    out, report = run
    assert _read(out / "distill.json") == report
    assert report["teacher"]["spec"] == "default" and report["teacher"]["threshold"] == pytest.approx(0.87)
    assert report["phrases"] == PHRASES
    labels = report["labels"]
    assert labels["all"]["images"] == report["images"]["listed"] == 8
    assert labels["all"]["samples"] == 8 * len(PHRASES) == sum(labels["all"]["by_kind"].values())
    for key in ("images", "samples", "boxes"):
        assert labels["train"][key] + labels["val"][key] == labels["all"][key]
    assert (labels["train"]["images"], labels["val"]["images"]) == (6, 2)
    agreement = report["agreement"]
    assert agreement["n_samples"] == _val_kinds(out)
    for key in ("acc@0.5_single", "acc@0.5", "map50", "no_object_fp_rate"):
        assert agreement[key] is None or 0.0 <= agreement[key] <= 1.0
    speed = report["speed"]
    assert speed["images"] == 2 and speed["phrases"] == len(PHRASES)
    assert speed["teacher"]["images_per_s"] > 0 and speed["student"]["images_per_s"] > 0
    ratio = speed["student"]["images_per_s"] / speed["teacher"]["images_per_s"]
    assert speed["speedup"] == pytest.approx(ratio, abs=0.01)
    assert report["student"]["steps"] > 0 and report["student"]["parameters"] > 0


def _val_kinds(out: Path) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for entry in _read(out / "labels" / "val.json")["phrases"]:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    return kinds


def test_a_second_run_needs_resume_to_train_again(run, images, capsys):
    out, _ = run
    argv = ["distill", "--teacher", "default", "--images", str(images), "--out", str(out), "--quiet"]
    argv += [f"--phrase={p}" for p in PHRASES] + ["--recipe", str(RECIPE), "--device", "cpu", "--seed", "3"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--val-fraction", "0.25", "--preset", "vlgtr-tiny", "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and err.startswith("error: ") and "--resume" in err
    assert len(err.splitlines()) == 1


# ---- the command line -----------------------------------------------------------------------------


def test_data_only_cli_writes_labels_and_a_summary(images, tmp_path):
    out = tmp_path / "run"
    argv = ["distill", "--teacher", "default", "--images", str(images), "-p", "all squares"]
    argv += ["-p", "the red circle", "--out", str(out), "--data-only", "--quiet", "--device", "cpu"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert "labels: 8 images x 2 phrases = 16 samples" in result.output
    assert (out / "labels" / "train.json").is_file() and (out / "labels" / "val.json").is_file()
    assert not (out / "student").exists()
    report = _read(out / "distill.json")
    assert "student" not in report and report["labels"]["val"]["images"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--teacher", "default", "-p", "dog"], "Missing option '--images'"),
        (["--teacher", "default", "--images", "{images}"], "give at least one --phrase or --phrases-file"),
        (
            ["--teacher", "default", "--images", "{images}", "-p", "dog", "--student", "a", "--preset", "b"],
            "give --student, or --preset / --from-teacher, not both",
        ),
        (["--images", "{images}", "-p", "dog"], "Missing option '--teacher'"),
        (
            ["--teacher", "default", "--images", "{images}", "-p", "dog", "--val-fraction", "2"],
            "--val-fraction",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_error_line(argv, message, images, tmp_path, capsys):
    argv = [a.format(images=images) for a in argv]
    with pytest.raises(SystemExit) as info:
        main(["distill", *argv, "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    errors = [line for line in text.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "/no/such/folder", "-p", "dog"], "not a folder of images"),
        (["--images", "{images}", "-p", "dog", "--recipe", "/no/such.yaml"], "cannot read"),
        (["--images", "{images}", "-p", "dog", "--preset", "nope"], "unknown model preset 'nope'"),
        (["--images", "{images}", "-p", "dog", "--set", "nope=1"], "unknown config key nope"),
    ],
)
def test_known_errors_are_one_clean_line_before_any_work(argv, message, images, tmp_path, capsys):
    argv = [a.format(images=images) for a in argv]
    with pytest.raises(SystemExit) as info:
        # the case's own --recipe, if any, comes last and wins
        main(
            ["distill", "--teacher", "default", "--recipe", str(RECIPE), "--out", str(tmp_path / "o"), *argv]
        )
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "teacher").exists()  # nothing was grounded


def test_help_shows_an_example():
    result = subprocess.run(
        [sys.executable, "-m", "vgtool", "distill", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "Example: vgtool distill --teacher" in result.stdout
