"""Grounding DINO and MM-Grounding-DINO exported to ONNX and run by ONNX Runtime ground as the torch
grounder does, for images of any size, any batch and captions of any length.

Tiny random-weight models (:mod:`tiny_grounding_dino`), exported in a few seconds each. Their
processor resizes the short side to 96 px (not 64): with ``d_model`` 32, the input projection's
GroupNorm has one channel per group, which on a 1 x 1 feature map (a 64 x 64 input) normalises a
single value, rounding noise that neither runtime reproduces.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx_parity import assert_same_groundings, image_batch  # tests/grounders/onnx_parity.py
from PIL import Image
from tiny_grounding_dino import random_image, save_tiny_grounding_dino

from vgtool.errors import CheckpointError
from vgtool.grounders import load_grounder
from vgtool.grounders.base import ModelKey
from vgtool.grounders.grounding_dino import GroundingDinoGrounder
from vgtool.grounders.grounding_dino_onnx import OnnxGroundingDinoGrounder
from vgtool.grounders.registry import model_key
from vgtool.models.postprocess import PostProcessConfig
from vgtool.onnx_export.export import export_onnx
from vgtool.onnx_runtime.folder import read_manifest

EVERYTHING = PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0)  # every query of every pair
PHRASES = ["red car", "a dog on a bench", "car", "person", "the man in the blue shirt"]
# displayed (width, height): two of one size, then wide, tall, square, very wide
IMAGE_SIZES = [(120, 80), (120, 80), (150, 90), (64, 100), (100, 100), (200, 60)]
# (model type, max_text_len): the second needs several captions for PHRASES
MODELS = [("grounding-dino", 256), ("mm-grounding-dino", 16)]


@pytest.fixture(scope="module", params=MODELS, ids=[model_type for model_type, _ in MODELS])
def exported(request, tmp_path_factory):
    """``(model type, torch model folder, exported folder)``."""
    model_type, max_text_len = request.param
    root = tmp_path_factory.mktemp(model_type)
    model = save_tiny_grounding_dino(
        root / "model", model_type, seed=2, shortest_edge=96, longest_edge=160, max_text_len=max_text_len
    )
    export_onnx(model, root / "onnx")
    return model_type, model, root / "onnx"


@pytest.fixture(scope="module")
def grounders(exported) -> tuple[GroundingDinoGrounder, OnnxGroundingDinoGrounder]:
    _, model, onnx_folder = exported
    return load_grounder(model, device="cpu"), load_grounder(onnx_folder, device="cpu")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [random_image(w, h, seed=10 + i) for i, (w, h) in enumerate(IMAGE_SIZES)]


def test_export_writes_the_graph_processor_and_manifest(exported, grounders):
    model_type, _, onnx_folder = exported
    manifest = read_manifest(onnx_folder)
    assert manifest.family == model_type and manifest.graphs == {"model": "model.onnx"}
    diffs = manifest.check["max_abs_diff"]
    assert diffs["pred_boxes"] <= 1e-5 and diffs["logits"] <= 1e-4
    assert len(manifest.check["inputs"]) == 2  # other sizes, batches and captions than traced
    assert not list(onnx_folder.glob("*.safetensors")) and (onnx_folder / "config.json").is_file()
    assert manifest.source == grounders[0].identity()
    assert manifest.extra["graph_parameters"]["model"] > 0


def test_loads_as_an_onnx_grounder_with_its_own_identity(exported, grounders, images):
    model_type, _, onnx_folder = exported
    torch_grounder, onnx_grounder = grounders
    assert isinstance(onnx_grounder, OnnxGroundingDinoGrounder) and onnx_grounder.model is None
    assert onnx_grounder.family == model_type
    assert onnx_grounder.identity() == {
        "model": torch_grounder.identity()["model"] + "+onnx",
        "model_config": torch_grounder.identity()["model_config"],
    }
    settings = onnx_grounder.settings()
    assert settings["runtime"] == "onnxruntime" and settings["providers"] == {
        "model": ["CPUExecutionProvider"]
    }
    assert onnx_grounder.max_text_len == torch_grounder.max_text_len
    assert onnx_grounder.per_image_memory_bytes(4) == torch_grounder.per_image_memory_bytes(4)
    assert torch.equal(onnx_grounder.image_transform(images[2]), torch_grounder.image_transform(images[2]))
    description = onnx_grounder.describe()
    assert description["architecture"] == f"{model_type} (ONNX Runtime)"
    assert description["parameters"]["total"] == read_manifest(onnx_folder).extra["graph_parameters"]["model"]


@pytest.mark.parametrize(
    ("indices", "num_phrases"),
    [([0], 1), ([0, 1], 2), ([2, 3, 4], 3), ([5, 0, 1, 3], 5), ([4], 5)],
)
def test_predict_matches_torch(grounders, images, indices, num_phrases):
    """Batches of one to four images, same-size ones together and others apart, of six shapes,
    with one to five phrases (one or several captions): the graph's dynamic axes."""
    torch_grounder, onnx_grounder = grounders
    phrases = PHRASES[:num_phrases]
    expected = torch_grounder.predict(
        image_batch(torch_grounder, images, indices),
        torch_grounder.encode_phrases(phrases),
        postprocess=EVERYTHING,
    )
    encoded = onnx_grounder.encode_phrases(phrases)
    actual = onnx_grounder.predict(
        image_batch(onnx_grounder, images, indices), encoded, postprocess=EVERYTHING
    )
    assert len(actual) == len(indices)
    for i, e, a in zip(indices, expected, actual, strict=True):
        assert set(e.phrase_ids.tolist()) == set(range(num_phrases))
        assert_same_groundings(e, a, images[i].size)


def test_phrases_over_several_captions(grounders):
    """The captions are the torch grounder's (the short-caption model packs five phrases into
    several)."""
    torch_grounder, onnx_grounder = grounders
    expected, actual = torch_grounder.encode_phrases(PHRASES), onnx_grounder.encode_phrases(PHRASES)
    assert [c.text for c in actual.features] == [c.text for c in expected.features]
    assert [c.spans for c in actual.features] == [c.spans for c in expected.features]
    if torch_grounder.max_text_len < 256:
        assert len(actual.features) > 1


def test_selection_and_pairs_match_torch(grounders, images):
    torch_grounder, onnx_grounder = grounders
    indices, pairs = [0, 2, 3], [[0, 2], [1, 3, 4], []]
    config = PostProcessConfig(threshold=0.0, top_k=3, nms_iou=0.5)
    expected = torch_grounder.predict(
        image_batch(torch_grounder, images, indices),
        torch_grounder.encode_phrases(PHRASES),
        postprocess=config,
        pairs=pairs,
    )
    actual = onnx_grounder.predict(
        image_batch(onnx_grounder, images, indices),
        onnx_grounder.encode_phrases(PHRASES),
        postprocess=config,
        pairs=pairs,
    )
    for i, e, a, ids in zip(indices, expected, actual, pairs, strict=True):
        assert np.array_equal(e.phrase_ids, a.phrase_ids) and set(a.phrase_ids.tolist()) <= set(ids)
        assert_same_groundings(e, a, images[i].size)
    assert len(actual[2]) == 0


def _damaged(onnx_folder, tmp_path, damage) -> CheckpointError:
    copy = tmp_path / "onnx"
    shutil.copytree(onnx_folder, copy)
    damage(copy / "model.onnx")
    with pytest.raises(CheckpointError) as caught:
        load_grounder(copy, device="cpu")
    return caught.value


def test_truncated_graph_is_one_clear_error(exported, tmp_path):
    def truncate(path):
        path.write_bytes(path.read_bytes()[:100_000])

    message = str(_damaged(exported[2], tmp_path, truncate))
    assert "model.onnx" in message and "not a loadable ONNX graph" in message and "\n" not in message


def test_graph_of_another_kind_is_one_clear_error(exported, tmp_path):
    def replace_with_another_graph(path):
        node = onnx.helper.make_node("Identity", ["pixels"], ["pred_logits"])
        values = [
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1])
            for n in ("pixels", "pred_logits")
        ]
        graph = onnx.helper.make_graph([node], "other", [values[0]], [values[1]])
        onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), path)

    message = str(_damaged(exported[2], tmp_path, replace_with_another_graph))
    assert "model.onnx" in message and "not the graph" in message and "pixel_values" in message
    assert "\n" not in message


def test_the_model_key_is_known_without_loading(exported, grounders):
    """What a resumed run needs of the model (source, identity, threshold), read from the files
    alone, is what the loaded grounders give, for the torch folder and its export."""
    _, model, onnx_folder = exported
    for spec, grounder in zip((model, onnx_folder), grounders, strict=True):
        assert model_key(spec) == ModelKey.of(grounder)
