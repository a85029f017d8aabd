"""Overlays: the image with each box, its phrase and score drawn legibly."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vgtool.atomic import atomic_open
from vgtool.groundings import Groundings
from vgtool.writers.paths import inside


def category_colour(category_id: int) -> tuple[int, int, int]:
    """A stable, saturated colour per category (golden-ratio hue steps)."""
    hue = (category_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _metrics(font) -> tuple[int, int]:
    if hasattr(font, "getmetrics"):
        return font.getmetrics()
    _, top, _, bottom = font.getbbox("Ag")
    return bottom, max(0, -top)


@lru_cache(maxsize=1024)
def _text_mask(text: str, size: int) -> tuple[Image.Image, int]:
    """``text`` rendered once as an anti-aliased coverage mask (mode L, one line high) and its
    advance width in pixels.

    Labels repeat: a run has a few phrases and a hundred two-decimal scores. Rendering glyphs is
    most of an overlay's cost, so each piece is rendered once and pasted through its mask after.
    """
    font = _font(size)
    ascent, descent = _metrics(font)
    width = math.ceil(font.getlength(text))
    mask = Image.new("L", (max(width, 1), ascent + descent))
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=font)
    return mask, width


def overlay_path(out_dir: Path, file_name: str) -> Path:
    """``overlays/<relative path>.jpg``, keeping the relative folders.

    A JPEG keeps its name; any other file gets ``.jpg`` appended (``photo.png`` ->
    ``photo.png.jpg``), so ``photo.jpg`` and ``photo.png`` in one folder never share an overlay.
    """
    relative = Path(file_name)
    if relative.suffix.lower() not in (".jpg", ".jpeg"):
        relative = relative.with_name(relative.name + ".jpg")
    return inside(out_dir / "overlays", relative)


def label_origin(
    box_xywh: Sequence[float], label_wh: tuple[float, float], canvas_wh: tuple[int, int]
) -> tuple[float, float]:
    """Top-left corner of a box's label: above the box where it fits, else below it, else inside
    its top edge (so a label covers its own object only when there is no room outside); shifted
    left as needed to stay in the image."""
    x, y, _, h = box_xywh
    label_w, label_h = label_wh
    if y - label_h >= 0:
        top = y - label_h
    elif y + h + label_h <= canvas_wh[1]:
        top = y + h
    else:
        top = max(y, 0)
    return min(max(x, 0), max(canvas_wh[0] - label_w, 0)), top


def draw_overlay(
    image: Image.Image, groundings: Groundings, *, labels: Sequence[str], colour_ids: Sequence[int]
) -> Image.Image:
    """A copy of ``image`` with each box and its label ``"<phrase> <score>"`` drawn.

    Args:
        groundings: the image's boxes, float pixels.
        labels: per phrase id, the text of its label.
        colour_ids: per phrase id, the id its colour comes from (the category id: one colour per
            category).
    """
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    side = min(canvas.width, canvas.height)
    line = max(2, round(side / 200))
    font_size = max(11, round(side / 40))
    ascent, descent = _metrics(_font(font_size))
    for i in np.argsort(groundings.scores, kind="stable"):  # best drawn last, on top
        x0, y0, x1, y1 = (float(v) for v in groundings.xyxy[i])
        phrase_id = int(groundings.phrase_ids[i])
        colour = category_colour(colour_ids[phrase_id])
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line)
        # "<phrase> <score>": the phrase and the score are rendered (and cached) apart.
        phrase_mask, phrase_w = _text_mask(f"{labels[phrase_id]} ", font_size)
        score_mask, score_w = _text_mask(f"{float(groundings.scores[i]):.2f}", font_size)
        text_w, text_h = phrase_w + score_w, ascent + descent
        pad = max(2, line)
        tx, ty = label_origin((x0, y0, x1 - x0, y1 - y0), (text_w + 2 * pad, text_h + 2 * pad), canvas.size)
        tx, ty = round(tx), round(ty)
        draw.rectangle([tx, ty, tx + text_w + 2 * pad, ty + text_h + 2 * pad], fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        canvas.paste(ink, (tx + pad, ty + pad), phrase_mask)
        canvas.paste(ink, (tx + pad + phrase_w, ty + pad), score_mask)
    return canvas


def write_overlay(
    image: Image.Image,
    groundings: Groundings,
    *,
    labels: Sequence[str],
    colour_ids: Sequence[int],
    out_dir: Path,
    file_name: str,
    quality: int = 90,
) -> Path:
    """Draw the overlay (see :func:`draw_overlay`) and save it as ``overlays/...jpg``."""
    path = overlay_path(out_dir, file_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", durable=False) as handle:  # a kill never leaves half an overlay
        draw_overlay(image, groundings, labels=labels, colour_ids=colour_ids).save(
            handle, "JPEG", quality=quality
        )
    return path
