"""The fusion family end to end: training on tiny synth data (from cached features while the
encoders are frozen, then with the vision encoder trained), grounding and evaluation through the
shared loops, and the seed recipe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vgtool.checkpoint import load_checkpoint
from vgtool.config import load_mapping
from vgtool.datasets import DataConfig
from vgtool.evaluation.evaluate import EvalConfig, evaluate_model
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.grounders import load_grounder
from vgtool.models.presets import get_preset
from vgtool.torchvision_compat import ensure_torchvision_importable
from vgtool.training.config import load_recipe, recipe_from_mapping
from vgtool.training.search_space import check_fields, load_search_space
from vgtool.training.trainer import train

ensure_torchvision_importable()  # open_clip imports torchvision
pytest.importorskip("open_clip")

TRAIN = Path(__file__).parents[2] / "train"


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    from vgtool.synth import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, 8, seed=3, image_size=(96, 96), phrases_per_image=2)
    return root


@pytest.fixture(scope="module")
def trained(synth_data, tmp_path_factory):
    """fusion-tiny with both encoders frozen and cached, then a stage that trains the vision encoder."""
    recipe = recipe_from_mapping(
        {
            "model": {"preset": "fusion-tiny", "vision": {"frozen": True}, "text": {"frozen": True}},
            "data": {
                "train": {"format": "coco", "path": str(synth_data), "split": "train"},
                "val": {"format": "coco", "path": str(synth_data), "split": "val"},
            },
            "single_box_loss": {"box_loss": "smooth_l1", "smooth_l1_beta": 0.1},
            "augment": {"hflip": 0.5, "random_resized_crop": 0.0},
            "stages": [
                {"name": "frozen", "epochs": 6, "lr": 3e-3},
                {"name": "vision", "epochs": 1, "lr": 1e-3, "vision_lr": 1e-4},
            ],
            "batch_size": 4,
            "cache_features": True,
            "log_every_steps": 1,
        }
    )
    out = tmp_path_factory.mktemp("run") / "run"
    result = train(recipe, out, quiet=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, result, records


def test_training_from_cached_features_lowers_the_loss(trained):
    _, result, records = trained
    steps = [r for r in records if r["type"] == "train"]
    assert {"loss", "loss_box", "loss_confidence", "iou", "ignored"} <= set(steps[0])
    first, last = np.mean([r["loss"] for r in steps[:4]]), np.mean([r["loss"] for r in steps[-4:]])
    assert last < first
    assert result["counters"]["stage"] == 2
    validation = [r for r in records if r["type"] == "val"]
    assert validation and 0.0 <= validation[-1]["miou"] <= 1.0


def test_the_trained_checkpoint_is_a_fusion_model_with_its_trained_vision_encoder(trained):
    out, _, _ = trained
    model = load_checkpoint(out / "last")
    assert model.config.architecture == "fusion" and type(model).__name__ == "FusionModel"
    assert not model.config.vision.frozen and model.config.text.frozen
    assert model.vision.clip is not None  # the CLIP image tower travels with the vision encoder
    grounder = load_grounder(out / "last", device="cpu")
    assert grounder.family == "fusion" and grounder.default_threshold == 0.0
    assert grounder.per_image_memory_bytes(3) > grounder.per_image_memory_bytes(1) > 0


def test_grounding_gives_one_box_per_phrase_per_image(trained, image_folder, tmp_path):
    out, _, _ = trained
    phrases = ["red circle", "the blue square on the left", "star"]
    config = GroundConfig(
        quiet=True, recursive=True, num_workers=0, merge="none", crops=False, overlays=False
    )
    summary = ground([image_folder], phrases, out_dir=tmp_path / "g", model=out / "last", config=config)
    document = json.loads((tmp_path / "g" / "annotations.json").read_text())
    assert summary.grounded == len(document["images"]) == 5
    per_image: dict[int, list[str]] = {}
    for annotation in document["annotations"]:
        per_image.setdefault(annotation["image_id"], []).append(annotation["attributes"]["phrase"])
    assert len(per_image) == 5 and all(sorted(found) == sorted(phrases) for found in per_image.values())


def test_evaluation_gives_every_phrase_a_box(trained, synth_data, tmp_path):
    out, _, _ = trained
    metrics = evaluate_model(
        model=out / "last",
        data=DataConfig(format="coco", path=str(synth_data), split="val"),
        out_dir=tmp_path / "eval",
        config=EvalConfig(device="cpu", quiet=True, plots=False),
    )
    assert 0.0 <= metrics["overall"]["miou"] <= 1.0 and metrics["overall"]["n_without_prediction"] == 0


# ---- the seed recipe ----------------------------------------------------------------------------
def test_seed_recipe_is_the_seed_setup():
    recipe = load_recipe(TRAIN / "clip_hrnet_refcocog.yaml")
    assert recipe.model == get_preset("fusion-clip-rn50-hrnet")
    assert recipe.model.vision.frozen and recipe.model.text.frozen and recipe.cache_features
    (stage,) = recipe.stages
    assert stage.vision_lr == 0 and stage.text_lr == 0
    assert recipe.optimizer == "adamw" and recipe.single_box_loss.box_loss == "smooth_l1"
    assert recipe.data.train.format == "refer" and recipe.data.train.split_by == "umd"
    assert recipe.data.val.split == "val" and recipe.augment.random_resized_crop == 0


def test_the_fusion_search_space_fits_the_seed_recipe():
    space = load_search_space(TRAIN / "tune_space_fusion.yaml")
    check_fields(space, load_mapping(TRAIN / "clip_hrnet_refcocog.yaml"))
    assert "model.fusion.dropout" in {param.field for param in space.params}
