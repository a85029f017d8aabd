"""Export file names keep every image of a run apart, whatever the layout."""

from __future__ import annotations

import pytest

from vgtool.exports.naming import export_names, label_name

CASES = [
    ("keep", ["sub/a.jpg", "a.jpg", "a.png"], {"sub/a.jpg": "sub/a.jpg", "a.jpg": "a.jpg", "a.png": "a.png"}),
    ("tree", ["sub/a.jpg", "b c/d e.png"], {"sub/a.jpg": "sub/a.jpg", "b c/d e.png": "b c/d e.png"}),
    (
        "tree",
        ["a.jpg", "a.png", "sub/a.jpg"],
        {"a.jpg": "a_jpg.jpg", "a.png": "a_png.png", "sub/a.jpg": "sub/a.jpg"},
    ),
    ("flat", ["sub1/a.jpg", "sub2/a.jpg"], {"sub1/a.jpg": "sub1__a.jpg", "sub2/a.jpg": "sub2__a.jpg"}),
    ("flat", ["x/y/z.png", "w.jpg"], {"x/y/z.png": "x__y__z.png", "w.jpg": "w.jpg"}),
    ("flat", ["a.jpg", "a.png"], {"a.jpg": "a_jpg.jpg", "a.png": "a_png.png"}),
    ("flat", ["A.jpg", "a.PNG"], {"A.jpg": "A_jpg.jpg", "a.PNG": "a_png.PNG"}),  # alike ignoring case
    ("tree", ["Sub/a.jpg", "sub/A.png"], {"Sub/a.jpg": "Sub/a_jpg.jpg", "sub/A.png": "sub/A_png.png"}),
]


@pytest.mark.parametrize(("layout", "file_names", "expected"), CASES)
def test_names(layout, file_names, expected):
    assert export_names(file_names, layout) == expected


def test_names_still_alike_get_a_hash_of_their_file_name():
    names = export_names(["x/a.jpg", "x__a.jpg", "y.png"], "flat")
    assert names["y.png"] == "y.png"
    assert names["x/a.jpg"] != names["x__a.jpg"]
    for name in ("x/a.jpg", "x__a.jpg"):
        stem, digest = names[name].removesuffix(".jpg").rsplit("_", 1)
        assert stem == "x__a_jpg" and len(digest) == 8


@pytest.mark.parametrize("layout", ["keep", "tree", "flat"])
def test_names_are_unique_ignoring_case_and_do_not_depend_on_order(layout):
    file_names = ["a.jpg", "a.png", "A.gif", "s/a.jpg", "s__a.jpg", "s/A.JPG", "t/s__a.jpg", "t/s/a.jpg"]
    names = export_names(file_names, layout)
    stems = [label_name(n, "") for n in names.values()]
    if layout != "keep":
        assert len({s.casefold() for s in stems}) == len(file_names)
    assert export_names(reversed(file_names), layout) == names


def test_label_name_swaps_the_extension_and_keeps_folders():
    assert label_name("sub/my photo.jpg", ".json") == "sub/my photo.json"
    assert label_name("labels/train/a_jpg.jpg", ".txt") == "labels/train/a_jpg.txt"
