"""The text-as-query family end to end: training on tiny synth data, then grounding (with crops)
and evaluation through the shared loops, and its recipes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vgtool.checkpoint import load_checkpoint
from vgtool.cli.main import app
from vgtool.config import load_mapping
from vgtool.datasets import DataConfig
from vgtool.evaluation.evaluate import EvalConfig, evaluate_model
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.grounders import load_grounder
from vgtool.models.textquery import TextQueryModel
from vgtool.training.config import load_recipe, recipe_from_mapping
from vgtool.training.trainer import train

TRAIN = Path(__file__).parents[2] / "train"


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 8, seed=3, image_size=(96, 96), phrases_per_image=2)
    return root


@pytest.fixture(scope="module")
def trained(synth_data, tmp_path_factory):
    """The tiny synth recipe, shortened: a frozen-backbone stage, then one with the backbone trained."""
    mapping = load_mapping(TRAIN / "textquery_tiny_synth.yaml")
    mapping["stages"][0].update(epochs=6, lr=2e-3)
    overrides = [f"data.train.path={synth_data}", f"data.val.path={synth_data}", "batch_size=4"]
    recipe = recipe_from_mapping(mapping, [*overrides, "log_every_steps=1"])
    out = tmp_path_factory.mktemp("run") / "run"
    result = train(recipe, out, quiet=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, result, records


def test_training_lowers_the_loss_and_counts_the_phrases_it_leaves_out(trained):
    _, result, records = trained
    steps = [r for r in records if r["type"] == "train"]
    assert {"loss", "loss_box", "loss_confidence", "iou", "ignored"} <= set(steps[0])
    assert all(r["ignored"] >= 0 for r in steps) and sum(r["ignored"] for r in steps) > 0
    first, last = np.mean([r["loss"] for r in steps[:4]]), np.mean([r["loss"] for r in steps[-4:]])
    assert last < first
    assert result["counters"]["stage"] == 2
    validation = [r for r in records if r["type"] == "val"]
    assert validation and 0.0 <= validation[-1]["miou"] <= 1.0


def test_the_trained_checkpoint_is_a_textquery_model_with_the_trained_backbone(trained):
    out, _, _ = trained
    model = load_checkpoint(out / "last")
    assert isinstance(model, TextQueryModel) and model.config.architecture == "textquery"
    assert not model.config.vision.frozen  # trained in stage 2, so stored


def test_a_single_box_model_keeps_one_box_per_phrase_by_default(trained):
    out, _, _ = trained
    grounder = load_grounder(out / "last", device="cpu")
    assert grounder.family == "textquery" and grounder.default_threshold == 0.0
    assert grounder.per_image_memory_bytes(3) > grounder.per_image_memory_bytes(1) > 0


def test_grounding_gives_one_box_per_phrase_per_image_and_its_crops(trained, image_folder, tmp_path):
    out, _, _ = trained
    phrases = ["red circle", "the blue square", "star"]
    config = GroundConfig(quiet=True, recursive=True, num_workers=0, merge="none")
    summary = ground([image_folder], phrases, out_dir=tmp_path / "g", model=out / "last", config=config)
    document = json.loads((tmp_path / "g" / "annotations.json").read_text())
    assert summary.grounded == len(document["images"]) == 5
    per_image: dict[int, list[str]] = {}
    for annotation in document["annotations"]:
        per_image.setdefault(annotation["image_id"], []).append(annotation["attributes"]["phrase"])
    assert all(sorted(found) == sorted(phrases) for found in per_image.values()) and len(per_image) == 5
    assert len(list((tmp_path / "g" / "crops").rglob("*.jpg"))) == 15


def test_ground_cli_with_a_textquery_checkpoint(trained, image_folder, tmp_path):
    out, _, _ = trained
    model, images, target = str(out / "last"), str(image_folder), str(tmp_path / "o")
    arguments = ["ground", images, "-p", "dog", "--model", model, "--out", target, "--quiet", "--recursive"]
    result = CliRunner().invoke(app, [*arguments, "--workers", "0"])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert len(document["annotations"]) == 5


def test_evaluation_reports_every_kind_and_a_box_for_every_phrase(trained, synth_data, tmp_path):
    out, _, _ = trained
    metrics = evaluate_model(
        model=out / "last",
        data=DataConfig(format="coco", path=str(synth_data), split="train"),
        out_dir=tmp_path / "eval",
        config=EvalConfig(device="cpu", quiet=True, plots=False),
    )
    overall = metrics["overall"]
    assert {"acc@0.5", "acc@0.75", "miou"} <= set(overall) and overall["n_without_prediction"] == 0
    assert {"none", "single", "multi"} <= set(metrics["by_kind"])
    # a single-box model cannot say "not there": every no-object phrase gets a box
    assert metrics["by_kind"]["none"]["no_object_fp_rate"] == 1.0


def test_info_names_the_family(trained):
    out, _, _ = trained
    result = CliRunner().invoke(app, ["info", str(out / "last"), "--json"])
    assert result.exit_code == 0, result.output
    description = json.loads(result.output)
    assert description["architecture"] == "textquery" and description["default_threshold"] == 0.0
    assert "decoder" not in description["config"] and "textquery" in description["config"]


# ---- recipes ------------------------------------------------------------------------------------
def test_seed_recipe_is_the_seed_setup():
    recipe = load_recipe(TRAIN / "dinov3_bge_refcoco.yaml")
    assert recipe.model.architecture == "textquery"
    assert recipe.model.vision.name == "facebook/dinov3-vitb16-pretrain-lvd1689m"
    assert recipe.model.text.name == "BAAI/bge-small-en-v1.5"
    assert recipe.model.vision.frozen and recipe.model.text.frozen
    (stage,) = recipe.stages
    assert stage.epochs == 10 and stage.vision_lr == 0 and stage.text_lr == 0
    assert recipe.optimizer == "adamw" and recipe.single_box_loss.box_loss == "diou"
    assert recipe.data.train.format == "refcoco-parquet" and recipe.cache_features
