"""Options, the filter they make and the train/val split."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exports.conftest import EMPTY, expected_boxes
from vgtool.errors import InputError
from vgtool.exports.options import ExportOptions
from vgtool.exports.plan import plan_export
from vgtool.exports.run import load_run
from vgtool.exports.subsets import assign_subsets

BAD_OPTIONS = [
    ({"min_score": 1.5}, "--min-score"),
    ({"min_score": -0.1}, "--min-score"),
    ({"images_mode": "hardlink"}, "--images-mode: 'hardlink' is not one of copy, link, none"),
    ({"val_fraction": 1.0}, "--val-fraction"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_OPTIONS)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        ExportOptions(**kwargs)


def test_defaults_keep_everything(grounded_run: Path):
    plan = plan_export(load_run(grounded_run), ExportOptions(), "keep")
    expected = expected_boxes(grounded_run)
    assert [item.image.file_name for item in plan.items] == list(expected)
    assert sum(len(item.image.boxes) for item in plan.items) == sum(map(len, expected.values()))
    assert plan.subsets == ("train",) and plan.dropped_boxes == plan.dropped_images == 0
    assert plan.phrases == ("red car", "blue car", "dog", "tall tree")
    assert plan.class_index == {1: 0, 2: 1, 3: 2}


def test_min_score_classes_and_drop_empty(grounded_run: Path):
    run = load_run(grounded_run)
    options = ExportOptions(min_score=0.5, classes=("tree", "car"), keep_empty=False)
    plan = plan_export(run, options, "flat")
    kept = {
        name: [b for b in boxes if b[2] >= 0.5 and b[0] in ("tree", "car")]
        for name, boxes in expected_boxes(grounded_run).items()
    }
    kept = {name: boxes for name, boxes in kept.items() if boxes}
    assert [item.image.file_name for item in plan.items] == list(kept)
    for item in plan.items:
        assert [b.score for b in item.image.boxes] == [b[2] for b in kept[item.image.file_name]]
    assert [c.name for c in plan.categories] == ["car", "tree"]  # run order, not --classes order
    assert plan.class_index == {1: 0, 3: 1}
    assert plan.phrases == ("red car", "blue car", "tall tree")
    total = sum(len(i.boxes) for i in run.images)
    assert plan.dropped_boxes == total - sum(len(i.image.boxes) for i in plan.items)
    assert plan.dropped_images == len(run.images) - len(plan.items) > 0


def test_an_empty_image_is_kept_by_default_and_dropped_on_request(grounded_run: Path):
    run = load_run(grounded_run)
    assert EMPTY in [i.image.file_name for i in plan_export(run, ExportOptions(), "keep").items]
    assert EMPTY not in [
        i.image.file_name for i in plan_export(run, ExportOptions(keep_empty=False), "keep").items
    ]


def test_an_unknown_class_is_named_with_the_known_ones(grounded_run: Path):
    with pytest.raises(InputError, match=r"--classes: 'cat' not among this run's classes \(car, dog, tree\)"):
        plan_export(load_run(grounded_run), ExportOptions(classes=("cat", "dog")), "keep")


@pytest.mark.parametrize(
    ("n", "fraction", "n_val"),
    [(10, 0.2, 2), (10, 0.0, 0), (2, 0.01, 1), (1, 0.5, 0), (3, 0.9, 2), (0, 0.5, 0)],
)
def test_split_sizes(n, fraction, n_val):
    subsets = assign_subsets([f"{i}.jpg" for i in range(n)], val_fraction=fraction, seed=0)
    assert list(subsets.values()).count("val") == n_val
    assert len(subsets) == n


def test_split_is_reproducible_and_seeded():
    names = [f"img{i}.jpg" for i in range(50)]
    first = assign_subsets(names, val_fraction=0.3, seed=1)
    assert assign_subsets(reversed(names), val_fraction=0.3, seed=1) == first
    assert assign_subsets(names, val_fraction=0.3, seed=2) != first


def test_plan_names_follow_the_layout(grounded_run: Path):
    run = load_run(grounded_run)
    flat = {i.image.file_name: i.name for i in plan_export(run, ExportOptions(), "flat").items}
    assert flat["sub1/a.jpg"] == "sub1__a.jpg" and flat["a.png"] == "a_png.png"
    assert flat["with space/my photo.jpg"] == "with space__my photo.jpg"
    names_after_filtering = {
        i.image.file_name: i.name for i in plan_export(run, ExportOptions(classes=("dog",)), "flat").items
    }
    assert names_after_filtering == flat  # filters never rename
