"""OWLv2 and OWL-ViT grounders against transformers' own processor, forward and post-processing.

Tiny random-weight models (built from configs in well under a second, saved with
``save_pretrained``) with a CLIP tokenizer over a synthetic vocabulary: no hub, no network.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_owl import SIZES, save_tiny_owl  # tests/grounders/tiny_owl.py

from vgtool.data.decode import load_rgb
from vgtool.data.image_dataset import ImageBatch, collate_images
from vgtool.grounders import load_grounder
from vgtool.grounders.owl import OwlGrounder
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig

PHRASES = ["a photo of a cat", "dog", "the man in the red shirt"]
ALL = PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0)  # every box of every phrase


@pytest.fixture(scope="module", params=["owlv2", "owlvit"])
def tiny_owl(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "model"
    save_tiny_owl(request.param, folder)
    return request.param, folder


@pytest.fixture(scope="module")
def grounder(tiny_owl) -> OwlGrounder:
    return load_grounder(tiny_owl[1], device="cpu")


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


def _reference(grounder, images, phrases):
    """transformers alone: processor, forward, ``post_process_grounded_object_detection``."""
    processor, model = grounder.processor, grounder.model
    inputs = processor(text=[phrases] * len(images), images=images, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    results = processor.post_process_grounded_object_detection(
        outputs, threshold=0.0, target_sizes=[image.size[::-1] for image in images]
    )
    return inputs, outputs, results


def _clipped(boxes: torch.Tensor, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the image, and which of them stay a pixel across (vgtool drops the others)."""
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    kept = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes.numpy(), kept.numpy()


def test_loads_from_a_saved_folder_and_an_hf_spec(tiny_owl, grounder, images):
    family, folder = tiny_owl
    again = load_grounder(f"hf:{folder}", device="cpu")
    assert isinstance(grounder, OwlGrounder) and isinstance(again, OwlGrounder)
    assert grounder.family == again.family == family
    assert grounder.identity() == again.identity()
    assert grounder.default_threshold == {"owlv2": 0.3, "owlvit": 0.1}[family]
    assert grounder.settings()["bf16"] is False and grounder.per_image_memory_bytes(3) > 0
    description = grounder.describe()
    assert description["architecture"] == family
    assert description["parameters"]["total"] == sum(p.numel() for p in grounder.model.parameters())
    assert sum(part["total"] for part in description["parts"].values()) == description["parameters"]["total"]
    side = SIZES[family][0]
    pixels = grounder.image_transform(images[0])
    assert pixels.shape == (3, side, side) and pixels.dtype == torch.float32
    transform = pickle.loads(pickle.dumps(grounder.image_transform))  # as DataLoader workers get it
    assert torch.equal(transform(images[0]), pixels)


def test_matches_transformers_forward_and_post_processing(grounder, images):
    """Every (image, phrase) score and box, and each box's best phrase, as transformers has them."""
    inputs, outputs, results = _reference(grounder, images, PHRASES)
    batch = _batch(grounder, images)
    assert torch.allclose(batch.pixels, inputs["pixel_values"], atol=1e-6)
    encoded = grounder.encode_phrases(PHRASES)
    groundings = grounder.predict(batch, encoded, postprocess=ALL)
    worst = [0.0, 0.0]
    for b, (image, found, result) in enumerate(zip(images, groundings, results, strict=True)):
        # transformers' post-processing keeps every patch (threshold 0), labelled with its best phrase
        boxes, keep = _clipped(result["boxes"], image)
        assert keep.sum() > 0
        for p in range(len(PHRASES)):
            mine = found[found.phrase_ids == p]
            expected = outputs.logits[b, :, p].sigmoid().numpy()
            box_diff, score_diff = _match(mine.xyxy, mine.scores, boxes[keep], expected[keep])
            worst = [max(worst[0], box_diff), max(worst[1], score_diff)]
            assert np.all(np.diff(mine.scores) <= 0)  # by decreasing score
        assert np.all(np.diff(found.phrase_ids) >= 0)  # by phrase
        best = _best_phrase_per_box(found)
        for label in range(len(PHRASES)):
            chosen = (result["labels"].numpy() == label) & keep
            mine = best[best.phrase_ids == label]
            box_diff, score_diff = _match(
                mine.xyxy, mine.scores, boxes[chosen], result["scores"].numpy()[chosen]
            )
            worst = [max(worst[0], box_diff), max(worst[1], score_diff)]
        assert found.xyxy[:, [0, 1]].min() >= 0
        assert np.all(found.xyxy[:, 2] <= image.width) and np.all(found.xyxy[:, 3] <= image.height)
    assert worst[0] <= 1e-4 and worst[1] <= 1e-4, worst


def _best_phrase_per_box(found: Groundings) -> Groundings:
    """Each distinct box once, under the phrase that scores it highest (as transformers labels it)."""
    best: dict[bytes, int] = {}
    for i, box in enumerate(found.xyxy):
        key = box.tobytes()
        if key not in best or found.scores[i] > found.scores[best[key]]:
            best[key] = i
    return found[np.array(sorted(best.values()), dtype=np.int64)]


def test_batched_equals_one_by_one(grounder, images):
    encoded = grounder.encode_phrases(PHRASES)
    config = PostProcessConfig(threshold=0.0, top_k=5, nms_iou=0.5)
    together = grounder.predict(_batch(grounder, images), encoded, postprocess=config)
    for i, found in enumerate(together):
        alone = grounder.predict(_batch(grounder, images, [i]), encoded, postprocess=config)[0]
        assert np.array_equal(found.phrase_ids, alone.phrase_ids)
        assert np.allclose(found.xyxy, alone.xyxy, atol=1e-4)
        assert np.allclose(found.scores, alone.scores, atol=1e-4)
    # a batch whose pixels came as a list (shapes differ) gives the same
    batch = _batch(grounder, images)
    listed = ImageBatch(batch.indices, list(batch.pixels), batch.sizes_wh, None, [])
    for a, b in zip(together, grounder.predict(listed, encoded, postprocess=config), strict=True):
        assert np.array_equal(a.phrase_ids, b.phrase_ids) and np.allclose(a.xyxy, b.xyxy, atol=1e-4)


def test_pairs_restrict_each_image_to_its_phrases(grounder, images):
    encoded = grounder.encode_phrases(PHRASES)
    batch = _batch(grounder, images)
    full = grounder.predict(batch, encoded, postprocess=ALL)
    pairs = [[0, 2], [1], []]
    restricted = grounder.predict(batch, encoded, postprocess=ALL, pairs=pairs)
    for found, every, ids in zip(restricted, full, pairs, strict=True):
        expected = every[np.isin(every.phrase_ids, ids)]
        assert np.array_equal(found.phrase_ids, expected.phrase_ids)
        assert np.allclose(found.xyxy, expected.xyxy) and np.allclose(found.scores, expected.scores)
    assert len(restricted[2]) == 0


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


def test_long_phrase_is_cut_with_a_warning(grounder, images):
    long = " ".join(["red car"] * 12)  # 24 words: more than the 16 tokens OWL reads
    encoded = grounder.encode_phrases(["dog", long])
    assert len(encoded.warnings) == 1 and "longer than 16 tokens" in encoded.warnings[0]
    cut = grounder.encode_phrases([" ".join(["red car"] * 7)])  # 14 words + start and end: 16 tokens
    assert cut.warnings == () and torch.allclose(encoded.features[1], cut.features[0], atol=1e-6)
    found = grounder.predict(_batch(grounder, images, [0]), encoded, postprocess=ALL)[0]
    assert set(found.phrase_ids.tolist()) == {0, 1}


def test_bf16_autocast_runs(tiny_owl, images):
    grounder = load_grounder(tiny_owl[1], device="cpu", bf16=True)
    assert grounder.settings()["bf16"] is True
    found = grounder.predict(_batch(grounder, images), grounder.encode_phrases(PHRASES), postprocess=ALL)
    assert all(len(g) > 0 and np.isfinite(g.xyxy).all() and g.xyxy.dtype == np.float32 for g in found)


def test_ground_pipeline_writes_annotations_crops_and_overlays(tiny_owl, image_dir, tmp_path):
    from vgtool.ground.pipeline import GroundConfig, ground

    config = GroundConfig(threshold=0.0, top_k=2, device="cpu", num_workers=0, quiet=True)
    summary = ground([image_dir], ["cat", "dog"], out_dir=tmp_path / "out", model=tiny_owl[1], config=config)
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
