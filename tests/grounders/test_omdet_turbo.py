"""The OmDet-Turbo grounder against transformers' own processor, forward and post-processing.

A tiny random-weight model (a transformers Swin backbone, a one-layer CLIP text tower) with a CLIP
tokenizer over a synthetic vocabulary, saved with ``save_pretrained``: no hub, no network. Where
torchvision's compiled ops cannot load (a CUDA torchvision wheel with a CPU torch), the reference's
``batched_nms`` is swapped for vgtool's pure-torch NMS; everything else is transformers' own.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_clip import BOS, EOS, clip_tokenizer, vocab_and_merges  # tests/grounders/tiny_clip.py

from vgtool.data.decode import load_rgb
from vgtool.data.image_dataset import ImageBatch, collate_images
from vgtool.grounders import load_grounder
from vgtool.grounders.base import ModelKey
from vgtool.grounders.omdet_turbo import OmDetTurboGrounder
from vgtool.grounders.registry import model_key
from vgtool.models.postprocess import PostProcessConfig
from vgtool.torchvision_compat import ensure_torchvision_importable

PHRASES = ["a photo of a cat", "dog", "the man in the red shirt"]
ALL = PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0)  # every query of every phrase
SIDE = 64  # the tiny model's input (the released checkpoint: 640)
NUM_QUERIES = 20


def _build(folder) -> None:
    """A tiny random OmDet-Turbo and its processor (as the released one: DETR image processor with
    ImageNet statistics on 0-255 pixels, no padding), saved as a Hugging Face folder."""
    ensure_torchvision_importable()
    from transformers import (
        CLIPTextConfig,
        DetrImageProcessor,
        OmDetTurboConfig,
        OmDetTurboForObjectDetection,
        OmDetTurboProcessor,
        SwinConfig,
    )

    vocab, _ = vocab_and_merges()
    text = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=77,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
    )
    backbone = SwinConfig(
        embed_dim=16,
        depths=[1] * 4,
        num_heads=[1] * 4,
        window_size=4,
        image_size=SIDE,
        out_indices=[2, 3, 4],  # 32, 64 and 128 channels
    )
    config = OmDetTurboConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        apply_layernorm_after_vision_backbone=False,
        text_config=text,
        # text hidden size = class_embed_dim = text projection size, != decoder_hidden_dim
        text_projection_in_dim=32,
        text_projection_out_dim=32,
        class_embed_dim=32,
        task_encoder_hidden_dim=64,
        encoder_in_channels=[32, 64, 128],
        encoder_hidden_dim=16,
        vision_features_channels=[16, 16, 16],
        encoder_dim_feedforward=32,
        encoder_attention_heads=2,
        decoder_hidden_dim=16,
        decoder_num_heads=2,
        decoder_num_layers=2,
        decoder_dim_feedforward=32,
        decoder_num_points=2,
        num_queries=NUM_QUERIES,
        image_size=SIDE,
    )
    torch.manual_seed(0)
    model = OmDetTurboForObjectDetection(config).eval()
    image_processor = DetrImageProcessor(
        size={"height": SIDE, "width": SIDE},
        do_rescale=False,
        image_mean=[123.675, 116.28, 103.53],
        image_std=[58.395, 57.12, 57.375],
        do_pad=False,
    )
    tokenizer = clip_tokenizer(pad_token=EOS, model_max_length=77)
    processor = OmDetTurboProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_omdet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("omdet-turbo") / "model"
    _build(folder)
    return folder


@pytest.fixture(scope="module")
def grounder(tiny_omdet) -> OmDetTurboGrounder:
    return load_grounder(tiny_omdet, device="cpu")


@pytest.fixture
def reference_nms(monkeypatch):
    """transformers' post-processing calls torchvision's compiled ``batched_nms``; where that cannot
    load, the same greedy NMS per label in pure torch."""
    from vgtool.torchvision_compat import torchvision_ops_available

    if torchvision_ops_available():
        return
    import transformers.models.omdet_turbo.processing_omdet_turbo as processing

    from vgtool.box_ops import nms

    def batched_nms(boxes, scores, labels, iou_threshold):
        kept = [
            torch.nonzero(labels == label).flatten()[
                nms(boxes[labels == label], scores[labels == label], iou_threshold)
            ]
            for label in labels.unique()
        ]
        keep = torch.cat([torch.zeros(0, dtype=torch.long), *kept])
        return keep[scores[keep].argsort(descending=True, stable=True)]

    monkeypatch.setattr(processing, "batched_nms", batched_nms)


def random_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Three photos of different shapes, one stored sideways with an EXIF orientation tag."""
    folder = tmp_path_factory.mktemp("photos")
    random_image(80, 50, seed=1).save(folder / "wide.jpg", quality=95)
    random_image(40, 90, seed=2).save(folder / "tall.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored rotated 90 degrees clockwise: 70 wide, 45 high
    random_image(70, 45, seed=3).transpose(Image.Transpose.ROTATE_90).save(
        folder / "sideways.jpg", exif=exif, quality=95
    )
    return folder


@pytest.fixture(scope="module")
def images(image_dir) -> list[Image.Image]:
    return [load_rgb(image_dir / name) for name in ("wide.jpg", "tall.png", "sideways.jpg")]


def _batch(grounder, images, indices=None) -> ImageBatch:
    indices = list(range(len(images))) if indices is None else indices
    return collate_images(
        [
            {"index": i, "pixels": grounder.image_transform(images[i]), "size_wh": images[i].size}
            for i in indices
        ]
    )


def _match(actual_boxes, actual_scores, expected_boxes, expected_scores) -> tuple[float, float]:
    """Pair each expected (box, score) with the nearest actual one; the max abs differences."""
    assert len(actual_boxes) == len(expected_boxes)
    if not len(expected_boxes):
        return 0.0, 0.0
    a = np.concatenate([actual_boxes, actual_scores[:, None]], axis=1)
    e = np.concatenate([expected_boxes, expected_scores[:, None]], axis=1)
    nearest = np.abs(e[:, None] - a[None]).max(-1).argmin(1)  # [n]
    assert len(set(nearest.tolist())) == len(nearest)
    diff = np.abs(e - a[nearest])
    return float(diff[:, :4].max()), float(diff[:, 4].max())


def _reference(grounder, images, classes_per_image):
    """transformers alone: processor, forward and ``post_process_grounded_object_detection`` keeping
    every (query, class) (threshold 0, every detection, no suppression)."""
    processor, model = grounder.processor, grounder.model
    inputs = processor(images=images, text=classes_per_image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    most = NUM_QUERIES * max(len(c) for c in classes_per_image)
    results = processor.post_process_grounded_object_detection(
        outputs,
        threshold=0.0,
        nms_threshold=1.0,
        target_sizes=[image.size[::-1] for image in images],
        max_num_det=most,
    )
    return inputs, results


def _compare(found, result, phrase_ids) -> tuple[float, float]:
    """vgtool's boxes of each phrase against transformers' detections labelled with it."""
    worst = [0.0, 0.0]
    boxes, scores, labels = (result[k].numpy() for k in ("boxes", "scores", "labels"))
    kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # vgtool drops boxes with no area
    for label, p in enumerate(phrase_ids):
        mine = found[found.phrase_ids == p]
        chosen = (labels == label) & kept
        assert chosen.sum() > 0
        box_diff, score_diff = _match(mine.xyxy, mine.scores, boxes[chosen], scores[chosen])
        worst = [max(worst[0], box_diff), max(worst[1], score_diff)]
        assert np.all(np.diff(mine.scores) <= 0)  # by decreasing score
    assert np.all(np.diff(found.phrase_ids) >= 0)  # by phrase
    return worst[0], worst[1]


def test_loads_from_a_saved_folder_and_an_hf_spec(tiny_omdet, grounder, images):
    again = load_grounder(f"hf:{tiny_omdet}", device="cpu")
    assert isinstance(grounder, OmDetTurboGrounder) and isinstance(again, OmDetTurboGrounder)
    assert grounder.family == again.family == "omdet-turbo"
    assert grounder.identity() == again.identity()
    assert grounder.default_threshold == 0.3
    assert grounder.settings()["input_size"] == [SIDE, SIDE] and grounder.per_image_memory_bytes(3) > 0
    description = grounder.describe()
    assert description["architecture"] == "omdet-turbo"
    assert description["parameters"]["total"] == sum(p.numel() for p in grounder.model.parameters())
    pixels = grounder.image_transform(images[0])
    assert pixels.shape == (3, SIDE, SIDE) and pixels.dtype == torch.float32
    transform = pickle.loads(pickle.dumps(grounder.image_transform))  # as DataLoader workers get it
    assert torch.equal(transform(images[0]), pixels)


@pytest.mark.usefixtures("reference_nms")
def test_matches_transformers_forward_and_post_processing(grounder, images):
    inputs, results = _reference(grounder, images, [PHRASES] * len(images))
    batch = _batch(grounder, images)
    assert torch.allclose(batch.pixels, inputs["pixel_values"], atol=1e-6)
    found = grounder.predict(batch, grounder.encode_phrases(PHRASES), postprocess=ALL)
    worst = np.max([_compare(g, r, range(len(PHRASES))) for g, r in zip(found, results, strict=True)], axis=0)
    assert worst.max() <= 1e-4, worst
    for image, g in zip(images, found, strict=True):
        assert g.xyxy[:, :2].min() >= 0
        assert np.all(g.xyxy[:, 2] <= image.width) and np.all(g.xyxy[:, 3] <= image.height)


@pytest.mark.usefixtures("reference_nms")
def test_each_image_is_decoded_with_its_own_phrases(grounder, images):
    """With ``pairs``, an image is grounded as transformers grounds it alone with those phrases."""
    pairs = [[0, 2], [1], []]
    found = grounder.predict(
        _batch(grounder, images), grounder.encode_phrases(PHRASES), postprocess=ALL, pairs=pairs
    )
    assert len(found[2]) == 0
    for image, g, ids in zip(images[:2], found, pairs, strict=False):
        _, (result,) = _reference(grounder, [image], [[PHRASES[p] for p in ids]])
        assert set(g.phrase_ids.tolist()) == set(ids)
        assert max(_compare(g, result, ids)) <= 1e-4
    # the prediction loop's way: only this batch's phrases encoded, ids local to them
    local = grounder.predict(
        _batch(grounder, images, [0]), grounder.encode_phrases([PHRASES[0], PHRASES[2]]), postprocess=ALL
    )[0]
    assert np.array_equal(np.array([0, 2])[local.phrase_ids], found[0].phrase_ids)
    assert np.allclose(local.xyxy, found[0].xyxy, atol=1e-4) and np.allclose(
        local.scores, found[0].scores, atol=1e-4
    )


def test_batched_equals_one_by_one(grounder, images):
    encoded = grounder.encode_phrases(PHRASES)
    config = PostProcessConfig(threshold=0.0, top_k=5, nms_iou=0.5)
    together = grounder.predict(_batch(grounder, images), encoded, postprocess=config)
    for i, found in enumerate(together):
        alone = grounder.predict(_batch(grounder, images, [i]), encoded, postprocess=config)[0]
        assert np.array_equal(found.phrase_ids, alone.phrase_ids)
        assert np.allclose(found.xyxy, alone.xyxy, atol=1e-4)
        assert np.allclose(found.scores, alone.scores, atol=1e-4)
    batch = _batch(grounder, images)
    listed = ImageBatch(batch.indices, list(batch.pixels), batch.sizes_wh, None, [])
    for a, b in zip(together, grounder.predict(listed, encoded, postprocess=config), strict=True):
        assert np.array_equal(a.phrase_ids, b.phrase_ids) and np.allclose(a.xyxy, b.xyxy, atol=1e-4)


def test_threshold_top_k_and_nms_apply_per_phrase(grounder, images):
    encoded = grounder.encode_phrases(PHRASES)
    batch = _batch(grounder, images)
    every = grounder.predict(batch, encoded, postprocess=ALL)
    scores = np.sort(np.concatenate([g.scores for g in every]))
    threshold = float(scores[np.argmax(np.diff(scores))] + np.diff(scores).max() / 2)  # the widest gap
    config = PostProcessConfig(threshold=threshold, top_k=2, nms_iou=0.7)
    for found, alone in zip(grounder.predict(batch, encoded, postprocess=config), every, strict=True):
        assert np.all(found.scores >= threshold)
        for p in range(len(PHRASES)):
            assert (found.phrase_ids == p).sum() <= min(
                2, (alone[alone.phrase_ids == p].scores >= threshold).sum()
            )


def test_long_phrase_is_cut_with_a_warning(grounder):
    long = " ".join(["red car"] * 40)  # 80 words: more than the 77 tokens OmDet-Turbo reads
    encoded = grounder.encode_phrases(["dog", long])
    assert any(w.startswith("phrase 'red car") and "longer than 77 tokens" in w for w in encoded.warnings)
    assert any("task prompt" in w for w in encoded.warnings)  # "Detect dog, red car red car ..."
    assert encoded.features.classes.shape == (2, 32)
    assert grounder.encode_phrases(PHRASES).warnings == ()


def test_bf16_autocast_runs(tiny_omdet, images):
    grounder = load_grounder(tiny_omdet, device="cpu", bf16=True)
    assert grounder.settings()["bf16"] is True
    found = grounder.predict(_batch(grounder, images), grounder.encode_phrases(PHRASES), postprocess=ALL)
    assert all(len(g) > 0 and np.isfinite(g.xyxy).all() and g.xyxy.dtype == np.float32 for g in found)


def test_ground_pipeline_writes_annotations_crops_and_overlays(tiny_omdet, image_dir, tmp_path):
    from vgtool.ground.pipeline import GroundConfig, ground

    config = GroundConfig(threshold=0.0, top_k=2, device="cpu", num_workers=0, quiet=True)
    summary = ground([image_dir], ["cat", "dog"], out_dir=tmp_path / "out", model=tiny_omdet, config=config)
    assert summary.grounded == 3
    out = tmp_path / "out"
    document = json.loads((out / "annotations.json").read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in document["images"]}
    assert sorted(sizes.values()) == [(40, 90), (70, 45), (80, 50)]  # displayed sizes, EXIF applied
    per_image_phrase: dict[tuple[int, int], int] = {}
    for ann in document["annotations"]:
        width, height = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width + 0.01 and y + h <= height + 0.01
        key = (ann["image_id"], ann["category_id"])
        per_image_phrase[key] = per_image_phrase.get(key, 0) + 1
    assert len(per_image_phrase) == 6 and set(per_image_phrase.values()) == {2}  # top-2 of each phrase
    assert len(list((out / "crops").rglob("*.jpg"))) == len(document["annotations"])
    assert len(list((out / "overlays").rglob("*.jpg"))) == 3


def test_onnx_export_is_refused_in_one_line(tiny_omdet, tmp_path):
    """A traced OmDet-Turbo graph holds the traced prompt (its text cache is keyed in Python)."""
    from vgtool.errors import CheckpointError
    from vgtool.onnx_export.export import export_onnx

    with pytest.raises(CheckpointError) as caught:
        export_onnx(tiny_omdet, tmp_path / "onnx")
    message = str(caught.value)
    assert "OmDet-Turbo cannot be exported to ONNX" in message and "prompt" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a partial export is left behind


def test_the_model_key_is_known_without_loading(tiny_omdet, grounder):
    assert model_key(tiny_omdet) == ModelKey.of(grounder)
