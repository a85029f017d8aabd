from __future__ import annotations

import numpy as np
import pytest

from vgtool.groundings import Groundings


def _three() -> Groundings:
    return Groundings(
        xyxy=np.array([[0, 0, 10, 10], [5, 5, 20, 30], [1, 2, 3, 4]], np.float32),
        scores=np.array([0.9, 0.5, 0.2], np.float32),
        phrase_ids=np.array([0, 0, 1], np.int64),
        data={"label": np.array(["a", "b", "c"])},
    )


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        ({"xyxy": np.zeros((2, 4), np.float64)}, ValueError, "xyxy must be 2-d float32"),
        ({"xyxy": np.zeros((2, 5), np.float32)}, ValueError, r"xyxy must be \[N, 4\]"),
        ({"xyxy": [[0, 0, 1, 1]] * 2}, TypeError, "xyxy must be a numpy array"),
        ({"scores": np.zeros(3, np.float32)}, ValueError, "scores has 3 entries for 2 boxes"),
        ({"scores": np.zeros((2, 1), np.float32)}, ValueError, "scores must be 1-d float32"),
        ({"phrase_ids": np.zeros(2, np.int32)}, ValueError, "phrase_ids must be 1-d int64"),
        ({"data": {"extra": np.zeros(1)}}, ValueError, "extra has 1 entries for 2 boxes"),
    ],
)
def test_fields_are_checked(fields, error, message):
    good = {
        "xyxy": np.zeros((2, 4), np.float32),
        "scores": np.zeros(2, np.float32),
        "phrase_ids": np.zeros(2, np.int64),
    }
    with pytest.raises(error, match=message):
        Groundings(**{**good, **fields})


def test_boolean_mask_and_index_slicing_keep_fields_together():
    g = _three()
    kept = g[g.scores > 0.4]
    assert len(kept) == 2
    np.testing.assert_array_equal(kept.phrase_ids, [0, 0])
    np.testing.assert_array_equal(kept.data["label"], ["a", "b"])
    picked = g[np.array([2, 0])]
    np.testing.assert_array_equal(picked.xyxy, [[1, 2, 3, 4], [0, 0, 10, 10]])
    np.testing.assert_array_equal(picked.scores, np.array([0.2, 0.9], np.float32))
    one = g[1]
    assert len(one) == 1 and one.xyxy.shape == (1, 4) and one.data["label"].tolist() == ["b"]
    assert len(g[1:]) == 2


def test_empty_and_merge():
    empty = Groundings.empty()
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)
    assert empty.scores.dtype == np.float32 and empty.phrase_ids.dtype == np.int64
    plain = Groundings(_three().xyxy, _three().scores, _three().phrase_ids)
    merged = Groundings.merge([plain, empty, plain[:1]])
    assert len(merged) == 4
    np.testing.assert_array_equal(merged.phrase_ids, [0, 0, 1, 0])
    assert len(Groundings.merge([])) == 0
    with pytest.raises(ValueError, match="different data keys"):
        Groundings.merge([_three(), empty])
