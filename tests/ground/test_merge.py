"""Boxes that several phrases put on one object are merged per class (or across classes)."""

from __future__ import annotations

import numpy as np
import pytest

from vgtool.ground.merge import merge_phrases, phrase_groups
from vgtool.groundings import Groundings


def _groundings(boxes, scores, phrase_ids) -> Groundings:
    return Groundings(
        xyxy=np.asarray(boxes, dtype=np.float32),
        scores=np.asarray(scores, dtype=np.float32),
        phrase_ids=np.asarray(phrase_ids, dtype=np.int64),
    )


TRIANGLE = [10, 10, 50, 50]
TRIANGLE_AGAIN = [10, 10, 50, 49.5]  # IoU 0.988 with TRIANGLE
ELSEWHERE = [60, 60, 90, 90]


@pytest.mark.parametrize(
    ("mode", "categories", "groups"),
    [
        ("class", ["triangle", "triangle", "circle"], [0, 0, 1]),
        ("class", ["triangle", "circle"], None),  # no class with two phrases: nothing to merge
        ("all", ["triangle", "circle"], [0, 0]),
        ("all", ["triangle"], None),
        ("none", ["triangle", "triangle"], None),
    ],
)
def test_phrase_groups(mode, categories, groups):
    assert phrase_groups(mode, categories) == groups


def test_two_phrases_of_one_class_on_one_object_give_one_box():
    g = _groundings([TRIANGLE, TRIANGLE_AGAIN, ELSEWHERE], [0.6, 0.9, 0.7], [0, 1, 1])
    merged = merge_phrases(g, [0, 0], iou=0.5)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7])  # the better box stays, in order
    assert merged.phrase_ids.tolist() == [1, 1]


def test_different_classes_keep_both():
    g = _groundings([TRIANGLE, TRIANGLE_AGAIN], [0.6, 0.9], [0, 1])
    assert len(merge_phrases(g, [0, 1], iou=0.5)) == 2  # class-wise: two classes, two boxes
    assert merge_phrases(g, [0, 0], iou=0.5).phrase_ids.tolist() == [1]  # class-agnostic


def test_one_phrase_is_never_merged_with_itself():
    g = _groundings([TRIANGLE, TRIANGLE_AGAIN], [0.6, 0.9], [0, 0])
    assert len(merge_phrases(g, [0], iou=0.5)) == 2  # that is the phrase's own NMS


def test_merge_is_greedy_by_score():
    # b overlaps a and c; a and c do not overlap. b is best: a and c go. Without b, both stay.
    a, b, c = [0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10]
    g = _groundings([a, b, c], [0.5, 0.9, 0.6], [0, 1, 2])
    assert merge_phrases(g, [0, 0, 0], iou=0.5).scores.tolist() == pytest.approx([0.9])
    g = _groundings([a, b, c], [0.9, 0.5, 0.8], [0, 1, 2])  # a suppresses b; c survives
    assert merge_phrases(g, [0, 0, 0], iou=0.5).scores.tolist() == pytest.approx([0.9, 0.8])
