from __future__ import annotations

import numpy as np
import pytest

from vgtool.groundings import Groundings
from vgtool.writers.overlays import label_origin


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((40, 50, 20, 20), (40, 40)),  # room above: just above the box
        ((40, 5, 20, 20), (40, 25)),  # no room above: just below it
        ((40, 5, 20, 90), (40, 5)),  # room neither above nor below: inside the top edge
        ((90, 50, 10, 10), (70, 40)),  # shifted left to stay in the image
        ((-5, 50, 10, 10), (0, 40)),
    ],
)
def test_label_goes_above_then_below_then_inside(box, expected):
    assert label_origin(box, (30, 10), (100, 100)) == expected


def test_label_text_matches_direct_rendering():
    """Labels are pasted from cached glyph masks; they must look like text drawn in place."""
    from PIL import Image, ImageDraw

    from vgtool.writers.overlays import _font, _metrics, category_colour, draw_overlay

    image = Image.new("RGB", (400, 300), (128, 128, 128))
    box = Groundings(
        xyxy=np.array([[50.0, 100.0, 130.0, 160.0]], np.float32),
        scores=np.array([0.87], np.float32),
        phrase_ids=np.array([1], np.int64),
    )
    labels = {"labels": ["a dog", "the red circle"], "colour_ids": [1, 3]}  # per phrase id
    drawn = draw_overlay(image, box, **labels)
    drawn_again = draw_overlay(image, box, **labels)  # second time from the cache
    assert list(drawn.getdata()) == list(drawn_again.getdata())

    line, size = 2, 11  # what draw_overlay picks for a 300-pixel side
    font = _font(size)
    ascent, descent = _metrics(font)
    text = "the red circle 0.87"
    pad = max(2, line)
    left, top = 50, 100 - (ascent + descent + 2 * pad)  # room above the box: the label sits there
    reference = image.copy()
    draw = ImageDraw.Draw(reference)
    colour = category_colour(3)
    draw.rectangle([50, 100, 130, 160], outline=colour, width=line)
    width = round(font.getlength(text))
    draw.rectangle([left, top, left + width + 2 * pad, 100], fill=colour)
    ink = (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140 else (255, 255, 255)
    draw.text((left + pad, top + pad), text, fill=ink, font=font)

    region = (left, top, left + width + 2 * pad, 100)
    ours = [sum(px) for px in drawn.crop(region).getdata()]
    theirs = [sum(px) for px in reference.crop(region).getdata()]
    background = sum(colour)
    ink_pixels = sum(abs(v - background) > 60 for v in theirs)
    assert ink_pixels > 50  # the reference label really has text in it
    differing = sum(abs(a - b) > 60 for a, b in zip(ours, theirs, strict=True))
    assert differing <= 0.05 * ink_pixels
