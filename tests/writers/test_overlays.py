from __future__ import annotations

import pytest

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
