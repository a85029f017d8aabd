from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vgtool.evaluation.metrics import (
    coco_map,
    grounding_accuracy,
    iou_histogram,
    no_object_false_positive_rate,
    top1_ious,
)

FAR = [100.0, 100.0, 110.0, 110.0]
NO_BOXES = np.zeros((0, 4))


@pytest.mark.parametrize(
    ("pred_boxes", "scores", "gt_boxes", "expected"),
    [
        ([[5, 0, 15, 10]], [1.0], [[0, 0, 10, 10]], 1 / 3),
        ([[0, 0, 10, 10]], [0.3], [[0, 0, 10, 10]], 1.0),
        ([[0, 0, 10, 10], FAR], [0.2, 0.9], [[0, 0, 10, 10]], 0.0),  # the top-scoring box misses
        ([FAR, [0, 0, 10, 10]], [0.2, 0.9], [[0, 0, 10, 10]], 1.0),
        ([[0, 0, 10, 10], FAR], [0.5, 0.5], [[0, 0, 10, 10]], 1.0),  # ties go to the first box
        ([[0, 0, 10, 10]], [1.0], [[5, 0, 15, 10], [0, 0, 10, 5]], 0.5),  # best of two gt boxes
        (NO_BOXES, [], [[0, 0, 10, 10]], 0.0),  # no prediction
        ([[0, 0, 10, 10]], [1.0], NO_BOXES, math.nan),  # no ground truth: excluded
    ],
)
def test_top1_iou(pred_boxes, scores, gt_boxes, expected: float) -> None:
    ious = top1_ious([np.asarray(pred_boxes)], [np.asarray(scores)], [np.asarray(gt_boxes)])
    assert ious.shape == (1,)
    np.testing.assert_allclose(ious, [expected], rtol=1e-6, equal_nan=True)


def test_top1_ious_keep_input_order_and_accept_tensors() -> None:
    ious = top1_ious(
        [torch.tensor([[5.0, 0, 15, 10]]), torch.tensor([[0.0, 0, 10, 10]]), torch.zeros(0, 4)],
        [torch.tensor([0.9]), torch.tensor([0.9]), torch.zeros(0)],
        [torch.tensor([[0.0, 0, 10, 10]]), torch.zeros(0, 4), torch.tensor([[0.0, 0, 10, 10]])],
    )
    np.testing.assert_allclose(ious, [1 / 3, math.nan, 0.0], rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (([NO_BOXES], [], [NO_BOXES]), "must match one to one"),
        (([np.zeros((2, 4))], [np.ones(3)], [np.ones((1, 4))]), "phrase 0: 2 boxes but 3 scores"),
    ],
)
def test_top1_ious_bad_inputs(args, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        top1_ious(*args)


@pytest.mark.parametrize(
    ("ious", "thresholds", "expected"),
    [
        # IoU exactly at a threshold counts as correct; NaN (no ground truth) is skipped
        (
            [0.5, 0.75, 0.4999, 1.0, math.nan],
            (0.5, 0.75),
            {"acc@0.5": 0.75, "acc@0.75": 0.5, "miou": (0.5 + 0.75 + 0.4999 + 1.0) / 4, "n": 4},
        ),
        ([0.0, 0.7499], (0.5, 0.75), {"acc@0.5": 0.5, "acc@0.75": 0.0, "miou": 0.37495, "n": 2}),
        ([0.3], (0.3,), {"acc@0.3": 1.0, "miou": 0.3, "n": 1}),
    ],
)
def test_grounding_accuracy(ious, thresholds, expected: dict) -> None:
    assert grounding_accuracy(np.asarray(ious), thresholds) == pytest.approx(expected)


def test_grounding_accuracy_without_phrases_is_nan() -> None:
    result = grounding_accuracy(np.array([math.nan]))
    assert result["n"] == 0
    assert math.isnan(result["acc@0.5"]) and math.isnan(result["miou"])


@pytest.mark.parametrize(
    ("scores", "threshold", "expected"),
    [
        ([[0.9, 0.1], [0.2], [], [0.5, 0.6, 0.7]], 0.5, {"fp_rate": 0.5, "mean_false_boxes": 1.0, "n": 4}),
        ([[0.9, 0.1], [0.2], [], [0.5, 0.6, 0.7]], 0.95, {"fp_rate": 0.0, "mean_false_boxes": 0.0, "n": 4}),
        ([[0.49999]], 0.5, {"fp_rate": 0.0, "mean_false_boxes": 0.0, "n": 1}),
        ([[0.5, 0.5]], 0.5, {"fp_rate": 1.0, "mean_false_boxes": 2.0, "n": 1}),
    ],
)
def test_no_object_false_positive_rate(scores, threshold: float, expected: dict) -> None:
    result = no_object_false_positive_rate([np.asarray(s) for s in scores], threshold)
    assert result == pytest.approx(expected)


def test_no_object_false_positive_rate_without_phrases_is_nan() -> None:
    result = no_object_false_positive_rate([], 0.5)
    assert result["n"] == 0 and math.isnan(result["fp_rate"]) and math.isnan(result["mean_false_boxes"])


A = [0.0, 0.0, 30.0, 10.0]
B = [50.0, 50.0, 80.0, 90.0]
TWO_THIRDS_OF_A = [0.0, 0.0, 20.0, 10.0]  # IoU 2/3 with A
ENVELOPE_HALF = 51 / 101  # precision 1 up to recall 0.5 on COCO's 101 recall points, then 0


@pytest.mark.parametrize(
    ("gt", "predictions", "expected"),
    [
        (
            [(1, "a", [A, B]), (2, "b", [B])],
            [(1, "a", [A, B], [0.9, 0.8]), (2, "b", [B], [0.7])],
            (1.0, 1.0, 1.0),
        ),
        # one of two gt boxes found with a high score, one false positive below it
        ([(1, "a", [A, B])], [(1, "a", [A, FAR], [0.9, 0.8])], (ENVELOPE_HALF,) * 3),
        # the false positive scores higher: precision 1/2 at recall 1/2
        ([(1, "a", [A, B])], [(1, "a", [A, FAR], [0.8, 0.9])], (ENVELOPE_HALF / 2,) * 3),
        # IoU 2/3 is a hit at thresholds 0.50, 0.55, 0.60, 0.65 of the ten
        ([(1, "a", [A])], [(1, "a", [TWO_THIRDS_OF_A], [0.9])], (0.4, 1.0, 0.0)),
        # phrases are separate images: a box right for phrase b is wrong for phrase a
        ([(1, "a", [A]), (1, "b", [B])], [(1, "a", [B], [0.9])], (0.0, 0.0, 0.0)),
        # a box for a phrase whose object is absent is a false positive, here ranked first
        ([(1, "a", [A]), (1, "c", NO_BOXES)], [(1, "a", [A], [0.5]), (1, "c", [B], [0.9])], (0.5,) * 3),
        ([(1, "a", [A])], [], (0.0, 0.0, 0.0)),  # no prediction at all
        ([(1, "a", NO_BOXES)], [(1, "a", [A], [0.9])], (-1.0, -1.0, -1.0)),  # no gt box at all
    ],
)
def test_coco_map(gt, predictions, expected: tuple[float, float, float]) -> None:
    gt = [(image, phrase, np.asarray(boxes)) for image, phrase, boxes in gt]
    predictions = [(i, p, np.asarray(b), np.asarray(s)) for i, p, b, s in predictions]
    result = coco_map(gt, predictions)
    assert result == pytest.approx(dict(zip(("map", "map50", "map75"), expected, strict=True)), abs=1e-6)


def test_coco_map_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    coco_map([(1, "a", np.asarray([A]))], [(1, "a", np.asarray([A]), np.asarray([0.9]))])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("gt", "predictions", "error"),
    [
        ([(1, "a", [A]), (1, "a", [B])], [], "duplicate ground truth"),
        ([(1, "a", [A])], [(1, "b", [A], [0.9])], "has no ground truth"),
        ([(1, "a", [A])], [(1, "a", [A, B], [0.9])], "2 boxes, 1 scores"),
    ],
)
def test_coco_map_bad_inputs(gt, predictions, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        coco_map(
            [(i, p, np.asarray(b)) for i, p, b in gt],
            [(i, p, np.asarray(b), np.asarray(s)) for i, p, b, s in predictions],
        )


@pytest.mark.parametrize(
    ("bins", "expected_counts"),
    [
        (10, [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]),
        (4, [3, 0, 0, 2]),
        (1, [5]),
    ],
)
def test_iou_histogram(bins: int, expected_counts: list[int]) -> None:
    counts, edges = iou_histogram(np.array([0.0, 0.05, 0.1, 0.95, 1.0, math.nan]), bins=bins)
    assert counts.tolist() == expected_counts
    np.testing.assert_allclose(edges, np.linspace(0, 1, bins + 1))
