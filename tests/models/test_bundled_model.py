"""The bundled default model: small, refers to the MiniLM package, and grounds the examples right.

These run the real shipped weights on the shipped example images (made by ``vgtool synth``, with
their ground truth in ``ground_truth.json``); nothing here is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from vgtool import box_ops
from vgtool.checkpoint import read_checkpoint_config
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.models.bundled import DEFAULT_MODEL_DIR
from vgtool.models.presets import MINILM

EXAMPLES = Path(__file__).resolve().parents[2] / "vgtool" / "assets" / "examples"


def test_bundled_model_is_small_and_refers_to_the_minilm_package():
    config, document = read_checkpoint_config(DEFAULT_MODEL_DIR)
    assert config.text.name == MINILM and config.text.pretrained and config.text.frozen
    with safe_open(DEFAULT_MODEL_DIR / "model.safetensors", "pt") as weights:
        keys = list(weights.keys())
    assert keys and not any(key.startswith("text.") for key in keys)  # referenced, not copied
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.is_file())
    assert size < 8 * 2**20
    assert document["meta"]["val"]["acc@0.5"] > 0.5  # it was trained, and validated


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    """Ground every example image with all the example phrases, with the default settings."""
    truth = json.loads((EXAMPLES / "ground_truth.json").read_text())
    phrases = sorted({p["phrase"] for p in truth["phrases"]})
    out = tmp_path_factory.mktemp("bundled") / "out"
    summary = ground(
        [EXAMPLES],
        phrases,
        out_dir=out,
        config=GroundConfig(device="cpu", crops=False, overlays=False, quiet=True),
    )
    predicted = json.loads((summary.out_dir / "annotations.json").read_text())
    return truth, predicted


def _boxes(coco, file_name, phrase):
    (image,) = [img for img in coco["images"] if img["file_name"] == file_name]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and a["phrase"] == phrase]
    anns.sort(key=lambda a: -a.get("score", 1.0))
    return [box_ops.xywh_to_xyxy(box_ops.torch_tensor(a["bbox"])) for a in anns]
