"""Training-time augmentation that keeps boxes and phrases true to the augmented image.

The steps run in a fixed order, each with its own chance: a horizontal flip that also swaps
left/right words in the phrase, a random resized crop that keeps every target box whole, and a
brightness/contrast jitter. Boxes are ``[N, 4]`` float32 xyxy pixels in the frame of the image
they are returned with; ``N`` may be 0 (the phrase names nothing). The image is not resized here:
``vgtool.data.preprocess.resize_to_input`` does that later, and boxes normalised to the image are
unchanged by it.

Known limitations, so recipes can turn steps off:
    - A crop keeps all target boxes but may cut away *other* objects a phrase depends on: the
      anchor of a relation ("the red square left of the star") or the frame of an absolute
      position ("the cup in the top left corner"). Which objects a phrase refers to cannot be
      known in general, so set ``random_resized_crop=0`` for relational data (the synth recipe does).
    - A flip mirrors any text in the image ("the sign that says STOP"); phrases are not checked for it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from vgtool import box_ops

# Word pairs exchanged when the image is mirrored. Matching is whole-word and case-insensitive, so
# "left of", "left-hand" and "left-most" are covered by ("left", "right"), and "leftover" is untouched.
LEFT_RIGHT_SWAPS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("leftmost", "rightmost"),
    ("lefthand", "righthand"),
    ("lefthanded", "righthanded"),
    ("leftward", "rightward"),
    ("leftwards", "rightwards"),
)

# Words whose meaning a mirror changes but that have no safe swap: compass points (swapping
# east/west would also need north-east/north-west, and "West Ham" is a name) and rotation senses.
# A phrase with any of them is not flipped. Hyphenated forms ("north-west", "counter-clockwise")
# match through their last part.
UNSWAPPABLE_DIRECTION_WORDS: tuple[str, ...] = (
    "east",
    "west",
    "eastern",
    "western",
    "eastward",
    "westward",
    "northeast",
    "northwest",
    "southeast",
    "southwest",
    "clockwise",
    "counterclockwise",
    "anticlockwise",
)

# "right" that is not a side: swapping it would corrupt the phrase, so such phrases are not flipped.
_RIGHT_NOT_A_SIDE = r"right[\s-]+(?:angle|angled|angles|triangle|triangles)"

# Aspect ratios (width / height) a crop window is drawn from, as in torchvision's RandomResizedCrop.
CROP_ASPECT_RATIOS: tuple[float, float] = (3 / 4, 4 / 3)

_SWAP_TABLE: dict[str, str] = {a: b for pair in LEFT_RIGHT_SWAPS for a, b in (pair, pair[::-1])}
_SWAP_PATTERN = re.compile(r"\b(" + "|".join(sorted(_SWAP_TABLE, key=len, reverse=True)) + r")\b", re.I)
_UNSWAPPABLE_PATTERN = re.compile(
    r"\b(?:" + "|".join(UNSWAPPABLE_DIRECTION_WORDS) + "|" + _RIGHT_NOT_A_SIDE + r")\b", re.I
)


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run during training, and how strongly.

    Attributes:
        hflip: probability of a horizontal flip (0 turns it off). Phrases with an unswappable
            direction word (see ``flip_allowed``) are never flipped.
        random_resized_crop: probability of a crop that keeps every target box. Set to 0 for data
            whose phrases depend on non-target objects or absolute positions (see the module notes).
        crop_min_scale: smallest fraction of the image area a crop keeps, in (0, 1].
        color_jitter: brightness and contrast factors are drawn from ``[1 - s, 1 + s]``, ``s`` in
            [0, 1). Hue and saturation are never changed, because phrases name colours ("the red
            square") and a hue shift would make the image contradict its phrase.
        enabled: False returns every sample unchanged (evaluation, or a recipe without augmentation).
    """

    hflip: float = 0.5
    random_resized_crop: float = 0.5
    crop_min_scale: float = 0.5
    color_jitter: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("hflip", "random_resized_crop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} is a probability in [0, 1], got {value}")
        if not 0.0 < self.crop_min_scale <= 1.0:
            raise ValueError(f"augment.crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"augment.color_jitter must be in [0, 1), got {self.color_jitter}")


def _match_case(word: str, template: str) -> str:
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_left_right(phrase: str) -> str:
    """Exchange left/right words (``LEFT_RIGHT_SWAPS``), whole words only, keeping their case.

    ``"Left of the cat, left-hand side"`` becomes ``"Right of the cat, right-hand side"``;
    ``"leftover"`` and ``"Wright"`` are left alone. Applying it twice gives the phrase back.
    """
    return _SWAP_PATTERN.sub(lambda m: _match_case(_SWAP_TABLE[m.group(0).lower()], m.group(0)), phrase)


def flip_allowed(phrase: str) -> bool:
    """False when a mirror would change the phrase's meaning in a way ``swap_left_right`` cannot fix.

    That is: a word from ``UNSWAPPABLE_DIRECTION_WORDS`` ("east", "clockwise", ...), or "right"
    in a sense that is not a side ("right angle", "right triangle").
    """
    return _UNSWAPPABLE_PATTERN.search(phrase) is None


def only_mirrors(config: AugmentConfig | None) -> bool:
    """True when augmentation changes the image at most by a horizontal flip (no crop, no jitter).

    The backbone's input is then one of two images per file, so its features can be cached per
    (image, mirrored) pair, and a sample's boxes and phrase follow from :func:`draw_flip` alone.
    """
    return (
        config is None or not config.enabled or (config.random_resized_crop == 0 and config.color_jitter == 0)
    )


def phrase_variants(phrase: str, config: AugmentConfig | None) -> tuple[str, ...]:
    """Every phrase :func:`augment` can turn ``phrase`` into: itself and, when it may be flipped, its
    mirror image (for caches of per-phrase features)."""
    if config is None or not config.enabled or config.hflip == 0 or not flip_allowed(phrase):
        return (phrase,)
    mirrored = swap_left_right(phrase)
    return (phrase,) if mirrored == phrase else (phrase, mirrored)


def draw_flip(phrase: str, rng: np.random.Generator, config: AugmentConfig) -> bool:
    """The first draw of :func:`augment`: whether the sample is mirrored (needs no pixels)."""
    return rng.random() < config.hflip and flip_allowed(phrase)


def flip_targets(boxes_xyxy: torch.Tensor, phrase: str, width: float) -> tuple[torch.Tensor, str]:
    """Boxes (``[N, 4]`` xyxy pixels) and phrase of an image ``width`` pixels wide, once mirrored."""
    return box_ops.hflip_xyxy(boxes_xyxy, width), swap_left_right(phrase)


def _crop_size(width: int, height: int, rng: np.random.Generator, min_scale: float) -> tuple[int, int]:
    """Draw a crop's width and height: area fraction in [min_scale, 1], aspect in CROP_ASPECT_RATIOS.

    The aspect range is narrowed to the ratios whose window fits in the image; for very elongated
    images where none of ``CROP_ASPECT_RATIOS`` fits, the area is kept and the nearest fitting ratio used.
    """
    area = width * height * rng.uniform(min_scale, 1.0)
    fit_lo, fit_hi = (
        area / height**2,
        width**2 / area,
    )  # w = sqrt(area r) <= width, h = sqrt(area / r) <= height
    lo, hi = max(CROP_ASPECT_RATIOS[0], fit_lo), min(CROP_ASPECT_RATIOS[1], fit_hi)
    if lo > hi:
        lo = hi = min(max(CROP_ASPECT_RATIOS[0], fit_lo), fit_hi)
    ratio = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    crop_w = min(width, max(1, round(math.sqrt(area * ratio))))
    crop_h = min(height, max(1, round(math.sqrt(area / ratio))))
    return crop_w, crop_h


def sample_crop_window_xyxy(
    width: int,
    height: int,
    boxes_xyxy: np.ndarray,
    rng: np.random.Generator,
    min_scale: float,
) -> tuple[int, int, int, int] | None:
    """Draw an integer crop window ``(left, top, right, bottom)`` that contains every box whole.

    The window's size is drawn as in torchvision's RandomResizedCrop (area fraction in
    ``[min_scale, 1]``, aspect ratio in ``CROP_ASPECT_RATIOS``). When the union of the boxes does not
    fit in that size, the window grows to hold it (up to the whole image); its position is then drawn
    among those that contain the union. With no boxes, any position is fine.

    Args:
        width, height: image size in pixels.
        boxes_xyxy: ``[N, 4]`` pixel boxes, ``N`` may be 0.
        rng: the only source of randomness.
        min_scale: smallest fraction of the image area kept before growing.

    Returns:
        The window in pixels, or None when no window inside the image can hold the boxes (only when
        boxes stick out of the image).
    """
    crop_w, crop_h = _crop_size(width, height, rng, min_scale)
    boxes_xyxy = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    if len(boxes_xyxy):
        union_x0, union_y0 = (math.floor(v) for v in boxes_xyxy[:, :2].min(axis=0))
        union_x1, union_y1 = (math.ceil(v) for v in boxes_xyxy[:, 2:].max(axis=0))
        crop_w = min(width, max(crop_w, union_x1 - union_x0))
        crop_h = min(height, max(crop_h, union_y1 - union_y0))
        left_lo, left_hi = max(0, union_x1 - crop_w), min(union_x0, width - crop_w)
        top_lo, top_hi = max(0, union_y1 - crop_h), min(union_y0, height - crop_h)
    else:
        left_lo, left_hi, top_lo, top_hi = 0, width - crop_w, 0, height - crop_h
    if left_lo > left_hi or top_lo > top_hi:
        return None
    left = int(rng.integers(left_lo, left_hi + 1))
    top = int(rng.integers(top_lo, top_hi + 1))
    return left, top, left + crop_w, top + crop_h


def _jitter_brightness_contrast(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    brightness = rng.uniform(1.0 - strength, 1.0 + strength)
    contrast = rng.uniform(1.0 - strength, 1.0 + strength)
    image = ImageEnhance.Brightness(image).enhance(brightness)
    return ImageEnhance.Contrast(image).enhance(contrast)


def augment(
    image: Image.Image,
    boxes_xyxy: np.ndarray,
    phrase: str,
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[Image.Image, np.ndarray, str]:
    """Flip, crop and jitter one sample, keeping its boxes and phrase consistent with the image.

    Args:
        image: the displayed (EXIF-applied) RGB image, as from ``vgtool.data.decode.load_rgb``.
        boxes_xyxy: ``[N, 4]`` pixel boxes in ``image``'s frame; ``N`` may be 0.
        phrase: the referring expression.
        rng: the only source of randomness; the same generator state gives the same result.
        config: which steps run and how strongly.

    Returns:
        ``(image, boxes_xyxy, phrase)``: the augmented image (cropped, not resized), its ``[N, 4]``
        float32 pixel boxes, clipped to the image and in the same order, and the phrase with
        left/right words swapped when the image was flipped.
    """
    width, height = image.size
    boxes = torch.as_tensor(np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4))
    boxes = box_ops.clip_xyxy(boxes, width, height)  # [N, 4] xyxy pixels
    if not config.enabled:
        return image, boxes.numpy().copy(), phrase

    if draw_flip(phrase, rng, config):
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        boxes, phrase = flip_targets(boxes, phrase, width)

    if rng.random() < config.random_resized_crop:
        window_xyxy = sample_crop_window_xyxy(width, height, boxes.numpy(), rng, config.crop_min_scale)
        if window_xyxy is not None:
            left, top, right, bottom = window_xyxy
            image = image.crop(window_xyxy)
            boxes = box_ops.clip_xyxy(box_ops.translate_xyxy(boxes, -left, -top), right - left, bottom - top)

    if config.color_jitter > 0:
        image = _jitter_brightness_contrast(image, config.color_jitter, rng)

    return image, boxes.numpy().astype(np.float32, copy=True), phrase
