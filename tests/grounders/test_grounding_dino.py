"""Grounding DINO / MM-Grounding-DINO through vgtool equals transformers' own inference."""

from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from tiny_grounding_dino import (
    MODEL_TYPES,
    Reference,
    layout_spans,
    random_image,
    reference,
    save_exif_rotated,
    save_tiny_grounding_dino,
)

from vgtool.data.decode import load_rgb
from vgtool.data.image_dataset import collate_images
from vgtool.data.listing import list_images
from vgtool.ground.pipeline import GroundConfig, ground
from vgtool.grounders import load_grounder
from vgtool.grounders.grounding_dino import GroundingDinoGrounder
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig
from vgtool.prediction.loop import predict_images

EVERYTHING = PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0)  # every query of every pair
PHRASES = ["red car", "a dog on a bench", "car", "person"]
TOLERANCE = 1e-4
DOT = 1012  # BERT's "."
TRANSFORMERS_CLASS = {
    "grounding-dino": "GroundingDinoForObjectDetection",
    "mm-grounding-dino": "MMGroundingDinoForObjectDetection",
}


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gdino")
    return {t: save_tiny_grounding_dino(root / t, t, seed=i) for i, t in enumerate(MODEL_TYPES)}


@pytest.fixture(scope="module")
def grounders(model_folders):
    return {t: load_grounder(folder, device="cpu") for t, folder in model_folders.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six images, displayed sizes differing except for two pairs (one pair includes the EXIF one)."""
    folder = tmp_path_factory.mktemp("images")
    for name, (w, h), seed in [
        ("a.png", (120, 80), 1),
        ("b.png", (120, 80), 2),
        ("c.jpg", (64, 100), 3),
        ("d.png", (150, 90), 4),
        ("f.png", (70, 100), 6),
    ]:
        random_image(w, h, seed).save(folder / name, quality=95)
    save_exif_rotated(folder / "e_rotated.jpg", random_image(70, 100, seed=5))  # stored 100 x 70
    return folder


def _rows(g: Groundings, phrase_id: int) -> np.ndarray:
    """``[n, 5]``: the boxes of one phrase and their scores."""
    keep = g.phrase_ids == phrase_id
    return np.concatenate([g.xyxy[keep], g.scores[keep, None]], axis=1)


def _compare(got: Groundings, ref: Reference, phrase_ids: list[int]) -> tuple[float, int]:
    """Max abs difference between vgtool's boxes/scores and the reference's, per phrase, matching
    boxes one-to-one; and the number of boxes checked for their phrase assignment."""
    worst, assigned = 0.0, 0
    has_area = (ref.boxes_xyxy[:, 2] > ref.boxes_xyxy[:, 0]) & (ref.boxes_xyxy[:, 3] > ref.boxes_xyxy[:, 1])
    for j, p in enumerate(phrase_ids):
        rows = _rows(got, p)
        expected = np.concatenate([ref.boxes_xyxy, ref.phrase_scores[j, :, None]], axis=1)[has_area]
        assert len(rows) == len(expected), (p, len(rows), len(expected))
        cost = np.abs(rows[:, None, :] - expected[None, :, :]).max(-1)
        r, c = linear_sum_assignment(cost)
        worst = max(worst, float(cost[r, c].max()))
        # the phrase whose tokens scored a box gets that box with transformers' box score
        start, end = ref.spans[j]
        for q in np.flatnonzero(has_area & (ref.best_token >= start) & (ref.best_token < end)):
            target = np.append(ref.boxes_xyxy[q], ref.box_scores[q])
            assert np.abs(rows - target).max(-1).min() <= TOLERANCE
            assigned += 1
    return worst, assigned


def _batch(grounder, pil_images):
    items = [
        {"index": i, "pixels": grounder.image_transform(im), "size_wh": im.size}
        for i, im in enumerate(pil_images)
    ]
    return collate_images(items)


# ---- loading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_loads_from_a_folder_and_an_hf_spec(model_folders, model_type):
    folder = model_folders[model_type]
    by_folder = load_grounder(folder, device="cpu")
    by_spec = load_grounder(f"hf:{folder}", device="cpu")
    for grounder in (by_folder, by_spec):
        assert isinstance(grounder, GroundingDinoGrounder)
        assert grounder.family == model_type and grounder.device == torch.device("cpu")
        assert type(grounder.model).__name__ == TRANSFORMERS_CLASS[model_type]
        assert grounder.default_threshold == 0.35
        assert grounder.settings() == {"bf16": False, "compile": False}
        assert grounder.per_image_memory_bytes(10) > 1_000_000
    assert by_spec.source == f"hf:{folder}" and by_folder.identity() == by_spec.identity()
    description = json.loads(json.dumps(by_folder.describe()))
    assert description["architecture"] == model_type and description["config"]["model_type"] == model_type
    parts = description["parts"]
    assert sum(part["total"] for part in parts.values()) == description["parameters"]["total"]


def test_image_transform_gives_the_processors_pixels_and_pickles(grounders):
    grounder = grounders["grounding-dino"]
    image = random_image(150, 90, seed=1)
    expected = grounder.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
    pixels = grounder.image_transform(image)
    assert pixels.dtype == torch.float32 and pixels.shape == (3, 64, 106)
    assert torch.equal(pixels, expected)
    assert torch.equal(pickle.loads(pickle.dumps(grounder.image_transform))(image), expected)


# ---- phrases -> captions and token spans --------------------------------------------------------
def _long_phrases(n: int) -> list[str]:
    words = ["red", "green", "blue", "small", "large", "wooden", "metal", "old", "new", "shiny"]
    return [
        f"{words[i % 10]} {words[(i + 3) % 10]} car number {i} parked next to a {words[(i + 7) % 10]} tree"
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("phrases", "captions", "spans"),
    [
        (["red car", "car", "red"], ["red car. car. red."], [(1, 3), (4, 5), (6, 7)]),
        (["car", "red car", "car"], ["car. red car. car."], [(1, 2), (3, 5), (6, 7)]),  # repeats
        (["  A Red Car. ", "dog"], ["a red car. dog."], [(1, 4), (5, 6)]),  # as the processor cleans
        (["naïve café", "hot-dog"], ["naïve café. hot-dog."], [(1, 3), (4, 7)]),  # "hot - dog"
    ],
)
def test_each_phrase_gets_exactly_its_own_tokens(grounders, phrases, captions, spans):
    encoded = grounders["grounding-dino"].encode_phrases(phrases)
    assert [c.text for c in encoded.features] == captions and not encoded.warnings
    assert [span for c in encoded.features for span in c.spans] == spans
    assert encoded.texts == tuple(phrases)


def test_long_phrase_lists_split_into_captions_of_at_most_256_tokens(grounders):
    grounder = grounders["grounding-dino"]
    tokenizer = grounder.tokenizer
    phrases = _long_phrases(40)
    encoded = grounder.encode_phrases(phrases)
    captions = encoded.features
    assert len(captions) >= 2 and not encoded.warnings
    assert [p for c in captions for p in c.phrase_ids] == list(range(40))
    for caption in captions:
        ids = caption.input_ids[0].tolist()
        assert len(ids) <= 256 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert list(caption.spans) == layout_spans(tokenizer, [phrases[p] for p in caption.phrase_ids])
        for p, (start, end) in zip(caption.phrase_ids, caption.spans, strict=True):
            assert ids[start:end] == tokenizer(phrases[p], add_special_tokens=False)["input_ids"]
            assert ids[end] == DOT and ids[start - 1] in (tokenizer.cls_token_id, DOT)
    # greedy: no caption could have taken the next caption's first phrase
    for caption, following in itertools.pairwise(captions):
        more = ". ".join(phrases[p] for p in (*caption.phrase_ids, following.phrase_ids[0])) + "."
        assert len(tokenizer(more)["input_ids"]) > 256


def test_phrase_over_the_limit_is_cut_with_a_warning_and_empty_ones_are_reported(grounders):
    grounder = grounders["grounding-dino"]
    too_long = " ".join(["zebra"] * 300)
    encoded = grounder.encode_phrases(["cat", too_long, "...", "dog"])
    assert len(encoded.warnings) == 2
    assert "longer than the model's 256 tokens" in encoded.warnings[0] and "'...'" in encoded.warnings[1]
    placed = {p: (c, span) for c in encoded.features for p, span in zip(c.phrase_ids, c.spans, strict=True)}
    assert sorted(placed) == [0, 1, 3]
    caption, (start, end) = placed[1]
    assert caption.input_ids.shape[1] == 256 and end - start == 253 and caption.phrase_ids == (1,)
    groundings = grounder.predict(_batch(grounder, [random_image(80, 60)]), encoded, postprocess=EVERYTHING)[
        0
    ]
    assert set(groundings.phrase_ids.tolist()) == {0, 1, 3}


# ---- parity with transformers -------------------------------------------------------------------
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_boxes_and_scores_match_transformers(grounders, images, model_type):
    """Mixed sizes in one batch (same-size images share a forward), an EXIF-rotated image."""
    grounder = grounders[model_type]
    entries = list_images([images])
    (predicted,) = predict_images(grounder, entries, PHRASES, postprocess=EVERYTHING, batch_size=len(entries))
    processor_model = (_processor(grounder), grounder.model)
    worst, assigned = 0.0, 0
    for index, groundings in zip(predicted.batch.indices, predicted.groundings, strict=True):
        image = load_rgb(entries[index].path)
        assert tuple(predicted.batch.sizes_wh[predicted.batch.indices.index(index)].tolist()) == image.size
        ref = reference(*processor_model, image, PHRASES)
        diff, checked = _compare(groundings, ref, list(range(len(PHRASES))))
        worst, assigned = max(worst, diff), assigned + checked
    assert worst <= TOLERANCE and assigned > 0
    assert load_rgb(images / "e_rotated.jpg").size == (70, 100)


def test_boxes_and_scores_match_transformers_across_captions(grounders, images):
    grounder = grounders["grounding-dino"]
    phrases = _long_phrases(40)
    encoded = grounder.encode_phrases(phrases)
    pil_images = [load_rgb(images / "d.png"), load_rgb(images / "e_rotated.jpg")]
    results = grounder.predict(_batch(grounder, pil_images), encoded, postprocess=EVERYTHING)
    processor = _processor(grounder)
    for image, groundings in zip(pil_images, results, strict=True):
        for caption in encoded.features:
            texts = [phrases[p] for p in caption.phrase_ids]
            diff, _ = _compare(
                groundings, reference(processor, grounder.model, image, texts), list(caption.phrase_ids)
            )
            assert diff <= TOLERANCE


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_same_size_images_batched_equal_one_by_one(grounders, model_type):
    grounder = grounders[model_type]
    pil_images = [random_image(96, 72, seed=s) for s in range(3)]
    encoded = grounder.encode_phrases(PHRASES)
    config = PostProcessConfig(threshold=0.0, top_k=5, nms_iou=0.7)
    together = grounder.predict(_batch(grounder, pil_images), encoded, postprocess=config)
    for image, batched in zip(pil_images, together, strict=True):
        (alone,) = grounder.predict(_batch(grounder, [image]), encoded, postprocess=config)
        np.testing.assert_array_equal(batched.phrase_ids, alone.phrase_ids)
        np.testing.assert_allclose(batched.xyxy, alone.xyxy, atol=TOLERANCE)
        np.testing.assert_allclose(batched.scores, alone.scores, atol=TOLERANCE)


def test_pairs_restrict_the_phrases_grounded_in_each_image(grounders):
    grounder = grounders["grounding-dino"]
    pil_images = [random_image(96, 72, seed=1), random_image(80, 100, seed=2), random_image(96, 72, seed=3)]
    batch, encoded = _batch(grounder, pil_images), grounder.encode_phrases(PHRASES)
    config = PostProcessConfig(threshold=0.0, top_k=3, nms_iou=0.7)
    full = grounder.predict(batch, encoded, postprocess=config)
    pairs = [[1], [], [0, 3]]
    restricted = grounder.predict(batch, encoded, postprocess=config, pairs=pairs)
    assert len(restricted[1]) == 0
    for got, every, wanted in zip(restricted, full, pairs, strict=True):
        expected = every[np.isin(every.phrase_ids, wanted)]
        np.testing.assert_array_equal(got.phrase_ids, expected.phrase_ids)
        np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=TOLERANCE)
        np.testing.assert_allclose(got.scores, expected.scores, atol=TOLERANCE)


def test_boxes_are_ordered_by_phrase_then_decreasing_score(grounders):
    grounder = grounders["mm-grounding-dino"]
    (g,) = grounder.predict(
        _batch(grounder, [random_image(120, 90)]), grounder.encode_phrases(PHRASES), postprocess=EVERYTHING
    )
    assert np.all(np.diff(g.phrase_ids) >= 0)
    for p in range(len(PHRASES)):
        assert np.all(np.diff(g.scores[g.phrase_ids == p]) <= 0)


# ---- the whole run ------------------------------------------------------------------------------
def test_ground_run_writes_annotations_crops_and_overlays(model_folders, images, tmp_path):
    from vgtool.writers.crops import crop_path
    from vgtool.writers.overlays import overlay_path

    out = tmp_path / "out"
    config = GroundConfig(threshold=0.0, top_k=2, device="cpu", num_workers=0, quiet=True)
    summary = ground(
        [images], ["red car=car", "dog"], out_dir=out, model=model_folders["grounding-dino"], config=config
    )
    document = json.loads((out / "annotations.json").read_text())
    assert summary.grounded == 6 and len(document["annotations"]) == 6 * 2 * 2
    categories = {c["id"]: c["name"] for c in document["categories"]}
    files = {img["id"]: img for img in document["images"]}
    rotated = next(img for img in files.values() if img["file_name"] == "e_rotated.jpg")
    assert (rotated["width"], rotated["height"]) == (70, 100)  # displayed, EXIF applied
    for ann in document["annotations"]:
        image = files[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        assert x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
        assert crop_path(out, categories[ann["category_id"]], image["file_name"], ann["id"]).is_file()
    assert all(overlay_path(out, img["file_name"]).is_file() for img in files.values())
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["arguments"]["bf16"] is False


def _processor(grounder):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(grounder.ref.folder))
