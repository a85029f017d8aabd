from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vgtool.training.augment import (
    AugmentConfig,
    augment,
    flip_allowed,
    phrase_variants,
    sample_crop_window_xyxy,
    swap_left_right,
)

FLIP_ONLY = AugmentConfig(hflip=1.0, random_resized_crop=0.0)
CROP_ONLY = AugmentConfig(hflip=0.0, random_resized_crop=1.0, crop_min_scale=0.3)
FLIP_AND_CROP = AugmentConfig(hflip=1.0, random_resized_crop=1.0, crop_min_scale=0.3)
# Colours the noisy background (channels <= 200) never has, one per drawn box.
UNIQUE_COLOURS = ((255, 0, 255), (0, 255, 255), (255, 255, 0))


def draw_boxes(width: int, height: int, boxes_xyxy: np.ndarray, seed: int = 0) -> Image.Image:
    """A noisy image with each integer box filled with its own unique colour."""
    pixels = np.random.default_rng(seed).integers(0, 201, (height, width, 3), dtype=np.uint8)
    for (x0, y0, x1, y1), colour in zip(boxes_xyxy.astype(int), UNIQUE_COLOURS, strict=False):
        pixels[y0:y1, x0:x1] = colour
    return Image.fromarray(pixels)


def colour_box_xyxy(image: Image.Image, colour: tuple[int, int, int]) -> list[int]:
    ys, xs = np.nonzero((np.asarray(image) == colour).all(axis=-1))
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize(
    ("phrase", "swapped"),
    [
        ("the left cat", "the right cat"),
        ("Left of the star", "Right of the star"),
        ("LEFT", "RIGHT"),
        ("the leftmost circle", "the rightmost circle"),
        ("Rightmost red square", "Leftmost red square"),
        ("left, then right.", "right, then left."),
        ("(left)", "(right)"),
        ("the left-hand glove", "the right-hand glove"),
        ("the left-most square", "the right-most square"),
        ("the lefthand one", "the righthand one"),
        ("a left-handed player", "a right-handed player"),
        ("drifting leftwards", "drifting rightwards"),
        ("man on the left next to the woman on the right", "man on the right next to the woman on the left"),
        ("left left right", "right right left"),
        ("the leftover pizza", "the leftover pizza"),
        ("Wright brothers' copyright", "Wright brothers' copyright"),
        ("the red square", "the red square"),
        ("", ""),
    ],
)
def test_swap_left_right(phrase: str, swapped: str) -> None:
    assert swap_left_right(phrase) == swapped
    assert swap_left_right(swapped) == phrase


@pytest.mark.parametrize(
    ("phrase", "allowed"),
    [
        ("the cat on the left", True),
        ("the beast near the yeast", True),
        ("the east tower", False),
        ("North-West corner", False),
        ("the Western saloon", False),
        ("arrow pointing clockwise", False),
        ("counter-clockwise arrow", False),
        ("a right triangle", False),
        ("the right-angled corner", False),
        ("the triangle on the right", True),
    ],
)
def test_flip_allowed(phrase: str, allowed: bool) -> None:
    assert flip_allowed(phrase) is allowed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hflip": -0.1}, "hflip"),
        ({"hflip": 1.5}, "hflip"),
        ({"random_resized_crop": 2.0}, "random_resized_crop"),
        ({"crop_min_scale": 0.0}, "crop_min_scale"),
        ({"crop_min_scale": 1.2}, "crop_min_scale"),
        ({"color_jitter": -0.5}, "color_jitter"),
        ({"color_jitter": 1.0}, "color_jitter"),
    ],
)
def test_bad_config_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)


def test_flip_twice_is_identity() -> None:
    boxes_xyxy = np.array([[3.5, 4.0, 20.25, 30.0], [40.0, 0.0, 64.0, 10.0]], dtype=np.float32)
    image = draw_boxes(64, 48, boxes_xyxy)
    rng = np.random.default_rng(0)
    once = augment(image, boxes_xyxy, "the Left cat, left-hand side", rng, FLIP_ONLY)
    twice = augment(*once, rng, FLIP_ONLY)
    assert once[2] == "the Right cat, right-hand side"
    assert np.array_equal(np.asarray(twice[0]), np.asarray(image))
    np.testing.assert_allclose(twice[1], boxes_xyxy, atol=1e-5)
    assert twice[2] == "the Left cat, left-hand side"


@pytest.mark.parametrize("config", [FLIP_ONLY, CROP_ONLY, FLIP_AND_CROP], ids=["flip", "crop", "both"])
@pytest.mark.parametrize("seed", range(6))
def test_drawn_boxes_follow_their_pixels(config: AugmentConfig, seed: int) -> None:
    boxes_xyxy = np.array([[10, 12, 30, 25], [50, 40, 57, 70], [5, 60, 20, 78]], dtype=np.float32)
    image = draw_boxes(96, 80, boxes_xyxy, seed=seed)
    out_image, out_boxes_xyxy, _ = augment(
        image, boxes_xyxy, "the left one", np.random.default_rng(seed), config
    )
    assert out_boxes_xyxy.dtype == np.float32 and out_boxes_xyxy.shape == (3, 4)
    for box_xyxy, colour in zip(out_boxes_xyxy, UNIQUE_COLOURS, strict=True):
        np.testing.assert_allclose(colour_box_xyxy(out_image, colour), box_xyxy, atol=1.0)


def test_crops_keep_every_target_whole() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        width, height = (int(v) for v in rng.integers(8, 200, size=2))
        num_boxes = int(rng.integers(0, 4))
        corners = rng.uniform(0, 1, size=(num_boxes, 2, 2)) * [width, height]
        boxes_xyxy = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1).astype(np.float32)
        config = AugmentConfig(hflip=0.5, random_resized_crop=1.0, crop_min_scale=float(rng.uniform(0.1, 1)))
        image = Image.new("RGB", (width, height))

        out_image, out_boxes_xyxy, _ = augment(image, boxes_xyxy, "the thing", rng, config)

        out_w, out_h = out_image.size
        assert out_boxes_xyxy.shape == (num_boxes, 4) and out_boxes_xyxy.dtype == np.float32
        assert (out_boxes_xyxy >= 0).all() and (out_boxes_xyxy[:, [0, 2]] <= out_w).all()
        assert (out_boxes_xyxy[:, [1, 3]] <= out_h).all()
        sizes_in = boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]
        np.testing.assert_allclose(out_boxes_xyxy[:, 2:] - out_boxes_xyxy[:, :2], sizes_in, atol=1e-3)
        assert out_w * out_h >= config.crop_min_scale * width * height - (width + height)


@pytest.mark.parametrize("seed", range(20))
def test_crop_window_area_and_aspect(seed: int) -> None:
    rng = np.random.default_rng(seed)
    left, top, right, bottom = sample_crop_window_xyxy(200, 150, np.zeros((0, 4)), rng, min_scale=0.5)
    assert 0 <= left < right <= 200 and 0 <= top < bottom <= 150
    assert 0.5 - 0.02 <= (right - left) * (bottom - top) / (200 * 150) <= 1.0
    assert 3 / 4 - 0.03 <= (right - left) / (bottom - top) <= 4 / 3 + 0.03


def test_no_object_sample() -> None:
    config = AugmentConfig(hflip=1.0, random_resized_crop=1.0, color_jitter=0.3)
    image = draw_boxes(40, 30, np.zeros((0, 4)))
    out_image, out_boxes_xyxy, phrase = augment(
        image, np.zeros((0, 4), dtype=np.float32), "the left dog", np.random.default_rng(1), config
    )
    assert out_boxes_xyxy.shape == (0, 4) and out_boxes_xyxy.dtype == np.float32
    assert out_image.width <= 40 and out_image.height <= 30
    assert phrase == "the right dog"


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(hflip=1.0, random_resized_crop=1.0, color_jitter=0.5, enabled=False),
        AugmentConfig(hflip=0.0, random_resized_crop=0.0, color_jitter=0.0),
    ],
    ids=["disabled", "all-zero"],
)
def test_config_off_is_identity(config: AugmentConfig) -> None:
    boxes_xyxy = np.array([[1.5, 2.0, 20.0, 11.0]], dtype=np.float32)
    image = draw_boxes(32, 24, boxes_xyxy)
    out_image, out_boxes_xyxy, phrase = augment(image, boxes_xyxy, "left", np.random.default_rng(0), config)
    assert np.array_equal(np.asarray(out_image), np.asarray(image))
    assert np.array_equal(out_boxes_xyxy, boxes_xyxy) and out_boxes_xyxy is not boxes_xyxy
    assert phrase == "left"


def test_flip_skipped_for_unswappable_direction() -> None:
    boxes_xyxy = np.array([[2.0, 2.0, 10.0, 9.0]], dtype=np.float32)
    image = draw_boxes(32, 24, boxes_xyxy)
    phrase = "the left flag on the east tower"
    out_image, out_boxes_xyxy, out_phrase = augment(
        image, boxes_xyxy, phrase, np.random.default_rng(0), FLIP_ONLY
    )
    assert np.array_equal(np.asarray(out_image), np.asarray(image))
    assert np.array_equal(out_boxes_xyxy, boxes_xyxy) and out_phrase == phrase


def test_boxes_outside_the_image_are_clipped() -> None:
    image = Image.new("RGB", (50, 40))
    boxes_xyxy = np.array([[-5.0, -3.0, 60.0, 20.0]], dtype=np.float32)
    _, out_boxes_xyxy, _ = augment(
        image, boxes_xyxy, "x", np.random.default_rng(0), AugmentConfig(enabled=False)
    )
    assert out_boxes_xyxy.tolist() == [[0.0, 0.0, 50.0, 20.0]]
    for seed in range(20):
        out_image, out_boxes_xyxy, _ = augment(
            image, boxes_xyxy, "x", np.random.default_rng(seed), FLIP_AND_CROP
        )
        assert out_image.width == 50
        assert (out_boxes_xyxy >= 0).all() and (out_boxes_xyxy[:, [0, 2]] <= out_image.width).all()


def test_same_seed_same_result() -> None:
    config = AugmentConfig(color_jitter=0.4)
    boxes_xyxy = np.array([[10.0, 10.0, 30.0, 30.0]], dtype=np.float32)
    image = draw_boxes(64, 64, boxes_xyxy)
    a = augment(image, boxes_xyxy, "the left one", np.random.default_rng(7), config)
    b = augment(image, boxes_xyxy, "the left one", np.random.default_rng(7), config)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert np.array_equal(a[1], b[1]) and a[2] == b[2]


@pytest.mark.parametrize("seed", range(5))
def test_color_jitter_keeps_hue(seed: int) -> None:
    config = AugmentConfig(hflip=0.0, random_resized_crop=0.0, color_jitter=0.5)
    image = Image.new("RGB", (16, 16), (40, 40, 40))
    image.paste((200, 0, 0), (4, 4, 12, 12))
    out = np.asarray(
        augment(image, np.zeros((0, 4)), "the red square", np.random.default_rng(seed), config)[0]
    )
    red, green, blue = (int(v) for v in out[8, 8])
    assert red > green + 40 and abs(green - blue) <= 1
    assert not np.array_equal(out, np.asarray(image))


def test_phrase_variants_are_every_phrase_augment_can_give():
    flips = AugmentConfig(hflip=0.5, random_resized_crop=0.0)
    assert phrase_variants("the cup left of the bowl", flips) == (
        "the cup left of the bowl",
        "the cup right of the bowl",
    )
    assert phrase_variants("the red square", flips) == ("the red square",)  # nothing to swap
    assert phrase_variants("the right triangle", flips) == ("the right triangle",)  # never flipped
    assert phrase_variants("the cup left of the bowl", AugmentConfig(hflip=0.0)) == (
        "the cup left of the bowl",
    )
    assert phrase_variants("the cup left of the bowl", None) == ("the cup left of the bowl",)
    rng = np.random.default_rng(0)
    image = Image.new("RGB", (40, 30))
    drawn = {
        augment(image, np.array([[1.0, 1.0, 9.0, 9.0]]), "the cup left of the bowl", rng, flips)[2]
        for _ in range(50)
    }
    assert drawn == set(phrase_variants("the cup left of the bowl", flips))
