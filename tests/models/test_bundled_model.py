"""The bundled default model: small, refers to the MiniLM package, and grounds the examples right.

These run the real shipped weights on the shipped example images (made by ``vgtool synth``, with
their ground truth in ``ground_truth.json``); nothing here is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vgtool import box_ops
from vgtool.checkpoint import read_checkpoint_config
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.models.bundled import DEFAULT_MODEL_DIR
from vgtool.models.presets import MINILM

EXAMPLES = Path(__file__).resolve().parents[2] / "vgtool" / "assets" / "examples"
# The shipped model's known misses on the examples: none at present. It is right on 0.95 of the
# held-out test split's single-object phrases (README, "The default model"), so a retrained model may
# miss some; list them here (phrase id: phrase), and strict xfail keeps the list honest: a model that
# gets a listed phrase right must take it off.
KNOWN_MISSES: dict[int, str] = {}


def _cases(ids: list[int]) -> list:
    miss = pytest.mark.xfail(strict=True, reason="a known miss of the shipped model")
    return [pytest.param(i, marks=miss) if i in KNOWN_MISSES else i for i in ids]


# Phrase ids in ground_truth.json, by kind (all of them: none is left out).
SINGLE_PHRASES = _cases([10, 11, 27, 28, 31, 41, 42, 43, 44])
MULTI_PHRASES = _cases([9, 12, 25, 26, 32])
NONE_PHRASES = _cases([29, 30])


def test_bundled_model_is_small_and_refers_to_the_minilm_package():
    config, document = read_checkpoint_config(DEFAULT_MODEL_DIR)
    assert config.text.name == MINILM and config.text.pretrained and config.text.frozen
    with safe_open(DEFAULT_MODEL_DIR / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert keys and not any(key.startswith("text.") for key in keys)  # referenced, not copied
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file())
    assert size < 8 * 2**20
    assert document["meta"]["val"]["acc@0.5"] > 0.5  # it was trained, and validated


def _ground(out_dir: Path, threshold: float | None):
    truth = json.loads((EXAMPLES / "ground_truth.json").read_text())
    phrases = sorted({p["phrase"] for p in truth["phrases"]})
    config = GroundConfig(device="cpu", threshold=threshold, crops=False, overlays=False, quiet=True)
    summary = ground([EXAMPLES], phrases, out_dir=out_dir, config=config)
    return truth, json.loads((summary.out_dir / "annotations.json").read_text())


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    """Every box of every example phrase (threshold 0): what the model ranks first."""
    return _ground(tmp_path_factory.mktemp("bundled") / "ranked", threshold=0.0)


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    """The examples grounded with the default settings (the model's calibrated threshold)."""
    return _ground(tmp_path_factory.mktemp("bundled") / "default", threshold=None)


def _boxes(coco, file_name: str, phrase: str) -> torch.Tensor:
    """``[n, 4]`` xyxy pixel boxes for ``phrase`` in ``file_name``, by decreasing score."""
    (image,) = [img for img in coco["images"] if img["file_name"] == file_name]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and a["phrase"] == phrase]
    anns.sort(key=lambda a: -a.get("score", 1.0))
    return box_ops.xywh_to_xyxy(torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4))


def _truth(truth, phrase_id: int) -> tuple[str, str, torch.Tensor]:
    (phrase,) = [p for p in truth["phrases"] if p["id"] == phrase_id]
    (image,) = [img for img in truth["images"] if img["id"] == phrase["image_id"]]
    by_id = {a["id"]: a for a in truth["annotations"]}
    boxes = [by_id[i]["bbox"] for i in phrase["annotation_ids"]]
    return (
        image["file_name"],
        phrase["phrase"],
        box_ops.xywh_to_xyxy(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
    )


@pytest.mark.parametrize("phrase_id", SINGLE_PHRASES)
def test_single_object_phrase_gets_the_right_top_box(ranked, phrase_id):
    truth, predicted = ranked
    file_name, phrase, target = _truth(truth, phrase_id)
    boxes = _boxes(predicted, file_name, phrase)
    assert len(boxes), f"{file_name}: no box for {phrase!r}"
    assert box_ops.box_iou(boxes[:1], target).item() >= 0.5, f"{file_name}: wrong box for {phrase!r}"


@pytest.mark.parametrize("phrase_id", NONE_PHRASES)
def test_phrase_naming_nothing_gets_no_box(grounded, phrase_id):
    truth, predicted = grounded
    file_name, phrase, _ = _truth(truth, phrase_id)
    assert len(_boxes(predicted, file_name, phrase)) == 0, f"{file_name}: a box for absent {phrase!r}"


@pytest.mark.parametrize("phrase_id", MULTI_PHRASES)
def test_multi_object_phrase_ranks_every_object_first(ranked, phrase_id):
    """The n best boxes of a phrase naming n objects cover all n of them."""
    truth, predicted = ranked
    file_name, phrase, target = _truth(truth, phrase_id)
    boxes = _boxes(predicted, file_name, phrase)[: len(target)]
    assert len(boxes) == len(target), f"{file_name}: {len(boxes)} boxes for {len(target)} {phrase!r}"
    assert (box_ops.box_iou(target, boxes).max(dim=1).values >= 0.5).all(), f"{file_name}: {phrase!r}"
