"""``--set`` overrides: dotted paths into sections and, by number, into the lists a recipe holds."""

from __future__ import annotations

import pytest

from vgtool.config import apply_overrides
from vgtool.errors import ConfigError

RECIPE = {"stages": [{"lr": 1.0e-3}, {"lr": 5.0e-4}], "loss": {"giou_weight": 2.0}}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("stages.1.lr=1.0e-5", {**RECIPE, "stages": [{"lr": 1.0e-3}, {"lr": 1.0e-5}]}),
        ("stages.0.vision_lr=0.1", {**RECIPE, "stages": [{"lr": 1.0e-3, "vision_lr": 0.1}, {"lr": 5.0e-4}]}),
        ("loss.bbox_weight=3", {**RECIPE, "loss": {"giou_weight": 2.0, "bbox_weight": 3}}),
        ("augment.hflip=0.5", {**RECIPE, "augment": {"hflip": 0.5}}),
        ("stages=[]", {**RECIPE, "stages": []}),
    ],
)
def test_overrides_set_leaves_and_list_entries(override, expected):
    assert apply_overrides(RECIPE, [override]) == expected
    assert RECIPE["stages"][1]["lr"] == 5.0e-4  # a copy is changed, not the input


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.2.lr=1", "override 'stages.2.lr=1': stages has 2 entries, numbered from 0; not '2'"),
        ("stages.last.lr=1", "stages has 2 entries, numbered from 0; not 'last'"),
        ("loss.giou_weight.x=1", "override 'loss.giou_weight.x=1': giou_weight is not a section"),
        ("lr", "is not of the form key.path=value"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(RECIPE, [override])
    assert message in str(err.value)
