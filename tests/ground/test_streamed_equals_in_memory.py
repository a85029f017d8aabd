"""Results streamed through the journal and assembled at the end equal results computed in memory."""

from __future__ import annotations

import json

import pytest
import torch

from vgtool.checkpoint import load_checkpoint
from vgtool.data.decode import load_rgb
from vgtool.data.preprocess import PreprocessConfig, normalize, resize_to_input
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.models.postprocess import PostProcess, PostProcessConfig
from vgtool.models.text import phrase_tokenizer

PHRASES = ["the red circle", "all blue squares", "a dog"]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_annotations_json_equals_a_plain_in_memory_forward(
    image_folder, tmp_path, tiny_checkpoint, batch_size
):
    config = GroundConfig(
        threshold=0.0,
        top_k=3,
        batch_size=batch_size,
        device="cpu",
        num_workers=0,
        recursive=True,
        crops=False,
        overlays=False,
        quiet=True,
    )
    summary = ground([image_folder], PHRASES, out_dir=tmp_path / "out", model=tiny_checkpoint, config=config)
    coco = json.loads((summary.out_dir / "annotations.json").read_text())
    streamed: dict[tuple[str, str], list] = {}
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    for ann in coco["annotations"]:
        streamed.setdefault((names[ann["image_id"]], ann["phrase"]), []).append((ann["bbox"], ann["score"]))

    # The same model, one image at a time, everything kept in memory.
    net = load_checkpoint(tiny_checkpoint).eval()
    preprocess = PreprocessConfig.from_model(net)
    tokens = phrase_tokenizer(net.config.text)(PHRASES)
    postprocess = PostProcess(PostProcessConfig(threshold=0.0, top_k=3))
    in_memory: dict[tuple[str, str], list] = {}
    for name in names.values():
        image = load_rgb(image_folder / name)
        pixels = normalize(resize_to_input(image, preprocess)[None], preprocess).repeat(len(PHRASES), 1, 1, 1)
        with torch.inference_mode():
            outputs = net(pixels, tokens["input_ids"], tokens["attention_mask"])
        sizes = torch.tensor([[image.width, image.height]] * len(PHRASES), dtype=torch.float32)
        for phrase, (boxes_xyxy, scores) in zip(PHRASES, postprocess(outputs, sizes), strict=True):
            for box, score in zip(boxes_xyxy.tolist(), scores.tolist(), strict=True):
                xywh = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
                in_memory.setdefault((name, phrase), []).append((xywh, score))

    assert len(names) == 5 and set(streamed) == set(in_memory)
    assert sum(len(v) for v in in_memory.values()) == len(coco["annotations"]) > 0
    for key, expected in in_memory.items():
        got = streamed[key]
        assert len(got) == len(expected), key
        for (box, score), (want_box, want_score) in zip(got, expected, strict=True):
            assert box == pytest.approx(want_box, abs=0.011), key  # COCO boxes are rounded to 0.01 px
            assert score == pytest.approx(want_score, abs=1e-4), key
