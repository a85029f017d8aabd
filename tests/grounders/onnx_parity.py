"""Shared by the ONNX Runtime grounder tests: a batch from test images, and groundings compared
between two runtimes."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from vgtool.data.image_dataset import ImageBatch, collate_images
from vgtool.groundings import Groundings

SCORE_ATOL = 1e-4
BOX_RTOL = 1e-4  # of the image's longer side, in pixels


def image_batch(grounder, images: list[Image.Image], indices: list[int]) -> ImageBatch:
    """The images at ``indices``, through ``grounder``'s own input transform."""
    return collate_images(
        [
            {"index": i, "pixels": grounder.image_transform(images[i]), "size_wh": images[i].size}
            for i in indices
        ]
    )


def assert_same_groundings(expected: Groundings, actual: Groundings, size_wh: tuple[int, int]) -> None:
    """Same phrase ids box for box; boxes within :data:`BOX_RTOL` of the image, scores within
    :data:`SCORE_ATOL` (rows paired by distance within each phrase: near-equal scores may swap)."""
    box_atol = BOX_RTOL * max(size_wh)
    assert np.array_equal(np.sort(expected.phrase_ids), np.sort(actual.phrase_ids))
    for phrase in np.unique(expected.phrase_ids):
        e, a = expected[expected.phrase_ids == phrase], actual[actual.phrase_ids == phrase]
        cost = np.abs(e.xyxy[:, None] - a.xyxy[None]).max(-1) + np.abs(e.scores[:, None] - a.scores[None])
        rows, cols = linear_sum_assignment(cost)
        assert np.abs(e.xyxy[rows] - a.xyxy[cols]).max() <= box_atol
        assert np.abs(e.scores[rows] - a.scores[cols]).max() <= SCORE_ATOL
