"""OWLv2 and OWL-ViT exported to ONNX and run by ONNX Runtime ground as the torch grounder does.

Tiny random-weight models (:mod:`tiny_owl`), exported in well under a second each.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from onnx_parity import SCORE_ATOL, assert_same_groundings, image_batch  # tests/grounders/onnx_parity.py
from PIL import Image
from tiny_owl import SIZES, save_tiny_owl  # tests/grounders/tiny_owl.py

from vgtool.errors import CheckpointError
from vgtool.grounders import load_grounder
from vgtool.grounders.base import ModelKey
from vgtool.grounders.owl import OwlGrounder
from vgtool.grounders.owl_onnx import OnnxOwlGrounder
from vgtool.grounders.registry import model_key
from vgtool.models.postprocess import PostProcessConfig
from vgtool.onnx_export.export import export_onnx
from vgtool.onnx_runtime.folder import read_manifest

ALL = PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0)  # every box of every phrase
PHRASES = ["a photo of a cat", "dog", "the man in the red shirt", "blue square", "a star", "left car"]
# displayed (width, height): wide, tall, square, very wide
IMAGE_SIZES = [(80, 50), (40, 90), (64, 64), (150, 30), (70, 45)]


@pytest.fixture(scope="module", params=["owlv2", "owlvit"])
def exported(request, tmp_path_factory):
    """``(family, torch model folder, exported folder)``."""
    root = tmp_path_factory.mktemp(request.param)
    model = save_tiny_owl(request.param, root / "model", seed=3)
    export_onnx(model, root / "onnx")
    return request.param, model, root / "onnx"


@pytest.fixture(scope="module")
def grounders(exported) -> tuple[OwlGrounder, OnnxOwlGrounder]:
    _, model, onnx = exported
    return load_grounder(model, device="cpu"), load_grounder(onnx, device="cpu")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in IMAGE_SIZES]


def test_export_writes_graphs_processor_and_manifest(exported, grounders):
    family, _, onnx = exported
    manifest = read_manifest(onnx)
    assert manifest.family == family and manifest.graphs == {"text": "text.onnx", "image": "image.onnx"}
    assert manifest.quantization is None
    diffs = manifest.check["max_abs_diff"]
    assert diffs["query_embeds"] <= 1e-5 and diffs["logits"] <= 1e-4 and diffs["boxes_cxcywh"] <= 1e-5
    assert not list(onnx.glob("*.safetensors")) and (onnx / "config.json").is_file()
    assert manifest.source == grounders[0].identity()
    assert manifest.extra["input_size"] == SIZES[family][0] and manifest.extra["text_length"] == 16


def test_loads_as_an_onnx_grounder_with_its_own_identity(exported, grounders):
    family, _, onnx = exported
    torch_grounder, onnx_grounder = grounders
    assert isinstance(onnx_grounder, OnnxOwlGrounder) and onnx_grounder.family == family
    assert onnx_grounder.model is None
    assert onnx_grounder.identity()["model"] == torch_grounder.identity()["model"] + "+onnx"
    assert onnx_grounder.identity()["model_config"] == torch_grounder.identity()["model_config"]
    settings = onnx_grounder.settings()
    assert settings["runtime"] == "onnxruntime"
    assert settings["providers"] == {"text": ["CPUExecutionProvider"], "image": ["CPUExecutionProvider"]}
    assert onnx_grounder.default_threshold == torch_grounder.default_threshold
    assert onnx_grounder.per_image_memory_bytes(3) == torch_grounder.per_image_memory_bytes(3)
    # the same graph file names the folder too
    again = load_grounder(onnx / "image.onnx", device="cpu")
    assert isinstance(again, OnnxOwlGrounder) and again.identity() == onnx_grounder.identity()
    description = onnx_grounder.describe()
    assert set(description["parts"]) == {"text", "image"} and description["parameters"]["total"] > 0
    assert description["meta"]["onnx"]["check"] == read_manifest(onnx).check


def test_encoded_phrases_match(grounders):
    torch_grounder, onnx_grounder = grounders
    for count in (1, 2, 6):
        expected = torch_grounder.encode_phrases(PHRASES[:count])
        actual = onnx_grounder.encode_phrases(PHRASES[:count])
        assert actual.features.shape == expected.features.shape == (count, 32)
        assert torch.allclose(actual.features, expected.features, atol=1e-5)
        assert actual.texts == expected.texts and actual.warnings == expected.warnings
    assert onnx_grounder.encode_phrases([]).features.shape == (0, 32)


@pytest.mark.parametrize(
    ("indices", "num_phrases"),
    [([0], 1), ([1, 2], 3), ([0, 1, 2, 3, 4], 6), ([3, 0, 4], 2), ([2], 6)],
)
def test_predict_matches_torch(grounders, images, indices, num_phrases):
    """Batch sizes 1 to 5, images of five shapes, 1 to 6 phrases: the graphs' dynamic axes."""
    torch_grounder, onnx_grounder = grounders
    phrases = PHRASES[:num_phrases]
    expected = torch_grounder.predict(
        image_batch(torch_grounder, images, indices), torch_grounder.encode_phrases(phrases), postprocess=ALL
    )
    actual = onnx_grounder.predict(
        image_batch(onnx_grounder, images, indices), onnx_grounder.encode_phrases(phrases), postprocess=ALL
    )
    assert len(actual) == len(indices)
    for i, e, a in zip(indices, expected, actual, strict=True):
        assert len(e) > 0
        assert_same_groundings(e, a, images[i].size)


def test_selection_and_pairs_match_torch(grounders, images):
    torch_grounder, onnx_grounder = grounders
    indices, pairs = [0, 1, 3], [[0, 2], [1], []]
    config = PostProcessConfig(threshold=0.0, top_k=3, nms_iou=0.5)
    expected = torch_grounder.predict(
        image_batch(torch_grounder, images, indices),
        torch_grounder.encode_phrases(PHRASES[:3]),
        postprocess=config,
        pairs=pairs,
    )
    actual = onnx_grounder.predict(
        image_batch(onnx_grounder, images, indices),
        onnx_grounder.encode_phrases(PHRASES[:3]),
        postprocess=config,
        pairs=pairs,
    )
    for i, e, a, ids in zip(indices, expected, actual, pairs, strict=True):
        assert np.array_equal(e.phrase_ids, a.phrase_ids) and set(a.phrase_ids.tolist()) <= set(ids)
        assert_same_groundings(e, a, images[i].size)
    assert len(actual[2]) == 0


def test_ground_pipeline_writes_the_same_annotations(exported, images, tmp_path):
    from vgtool.ground.pipeline import GroundConfig, ground

    _, model, onnx = exported
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")
    config = GroundConfig(threshold=0.0, top_k=2, device="cpu", num_workers=0, quiet=True)
    documents = {}
    for name, spec in (("torch", model), ("onnx", onnx)):
        summary = ground([folder], ["cat", "dog"], out_dir=tmp_path / name, model=spec, config=config)
        assert summary.grounded == len(images)
        documents[name] = json.loads((tmp_path / name / "annotations.json").read_text())
    expected = sorted(documents["torch"]["annotations"], key=_annotation_order)
    actual = sorted(documents["onnx"]["annotations"], key=_annotation_order)
    assert len(expected) == len(actual) == len(images) * 2 * 2
    for e, a in zip(expected, actual, strict=True):
        assert (e["image_id"], e["category_id"]) == (a["image_id"], a["category_id"])
        assert np.allclose(e["bbox"], a["bbox"], atol=0.02) and abs(e["score"] - a["score"]) <= SCORE_ATOL


def _annotation_order(annotation: dict) -> tuple:
    return annotation["image_id"], annotation["category_id"], -annotation["score"]


def _damaged(onnx, tmp_path, damage) -> CheckpointError:
    copy = tmp_path / "onnx"
    shutil.copytree(onnx, copy)
    damage(copy)
    with pytest.raises(CheckpointError) as caught:
        load_grounder(copy, device="cpu")
    return caught.value


def test_truncated_graph_is_one_clear_error(exported, tmp_path):
    def truncate(folder):
        data = (folder / "image.onnx").read_bytes()
        (folder / "image.onnx").write_bytes(data[: len(data) // 2])

    error = _damaged(exported[2], tmp_path, truncate)
    message = str(error)
    assert "image.onnx" in message and "not a loadable ONNX graph" in message and "\n" not in message


def test_graph_of_another_role_is_one_clear_error(exported, tmp_path):
    def swap(folder):
        shutil.copy(folder / "text.onnx", folder / "image.onnx")

    error = _damaged(exported[2], tmp_path, swap)
    message = str(error)
    assert "image.onnx" in message and "not the graph" in message and "pixel_values" in message
    assert "\n" not in message


def test_quantized_export_runs_and_says_so(exported, images, tmp_path):
    """int8 graphs ground too; the manifest keeps their differences from torch, unenforced."""
    _, model, _ = exported
    manifest = export_onnx(model, tmp_path / "int8", quantize=True)
    assert manifest.quantization == "int8-dynamic"
    assert set(manifest.check["quantized"]["max_abs_diff"]) == {"query_embeds", "logits", "boxes_cxcywh"}
    grounder = load_grounder(tmp_path / "int8", device="cpu")
    assert grounder.identity()["model"].endswith("+onnx-int8-dynamic")
    found = grounder.predict(
        image_batch(grounder, images, [0, 1]), grounder.encode_phrases(PHRASES[:2]), postprocess=ALL
    )
    assert all(len(g) > 0 and np.isfinite(g.xyxy).all() for g in found)


def test_the_model_key_is_known_without_loading(exported, grounders):
    """What a resumed run needs of the model (source, identity, threshold), read from the files
    alone, is what the loaded grounders give, for the torch folder and its export."""
    _, model, onnx_folder = exported
    for spec, grounder in zip((model, onnx_folder), grounders, strict=True):
        assert model_key(spec) == ModelKey.of(grounder)
