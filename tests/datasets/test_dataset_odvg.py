from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vgtool.datasets.odvg import load_odvg
from vgtool.errors import InputError


def _line(filename: str, caption: str, *regions: tuple[list[float], str]) -> str:
    grounding = {
        "caption": caption,
        "regions": [{"bbox": bbox, "phrase": phrase} for bbox, phrase in regions],
    }
    return json.dumps({"filename": filename, "height": 40, "width": 60, "grounding": grounding})


LINES = [
    _line(
        "a.jpg",
        "a cat and two dogs",
        ([1, 2, 3, 4], "a cat"),
        ([5, 6, 7, 8], "two dogs"),
        ([9.5, 10, 11, 12.5], "two dogs"),
    ),
    "",
    _line("sub/b.jpg", "a bird", ([0, 0, 10, 10], "a bird")),
]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_groups_regions_by_phrase(tmp_path: Path) -> None:
    samples = load_odvg(write_jsonl(tmp_path / "odvg" / "train.jsonl", LINES))
    assert [(s.image_id, s.phrase, s.sample_id) for s in samples] == [
        ("a.jpg", "a cat", 1),
        ("a.jpg", "two dogs", 2),
        ("sub/b.jpg", "a bird", 3),
    ]
    cat, dogs, bird = samples
    np.testing.assert_array_equal(cat.boxes_xyxy, [[1, 2, 3, 4]])  # already xyxy
    np.testing.assert_array_equal(dogs.boxes_xyxy, [[5, 6, 7, 8], [9.5, 10, 11, 12.5]])
    assert (dogs.width, dogs.height, dogs.meta) == (60, 40, {"caption": "a cat and two dogs"})
    assert bird.image_path == tmp_path / "odvg" / "sub" / "b.jpg"


def test_image_root(tmp_path: Path) -> None:
    samples = load_odvg(write_jsonl(tmp_path / "train.jsonl", LINES), image_root=tmp_path / "images")
    assert samples[0].image_path == tmp_path / "images" / "a.jpg"


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([LINES[0], '{"filename": "b.jpg", "grounding": '], r"train\.jsonl:2: not JSON"),
        ([LINES[0], "", "[1, 2]"], r"train\.jsonl:3: not an ODVG grounding record"),
        (
            ['{"filename": "a.jpg", "detection": {"instances": []}}'],
            r"train\.jsonl:1: not an ODVG grounding record",
        ),
        (
            ['{"filename": "a.jpg", "grounding": {"caption": "x"}}'],
            r"train\.jsonl:1: bad grounding record: no 'regions'",
        ),
        ([_line("a.jpg", "x", ([1, 2, 3], "x"))], r"train\.jsonl:1: bad grounding record: cannot reshape"),
        ([_line("a.jpg", "x", ([5, 5, 1, 1], "x"))], r"train\.jsonl:1: bad grounding record: .*x1>=x0"),
        (
            [_line("a.jpg", "x", ([1, 2, 3, 4], " "))],
            r"train\.jsonl:1: bad grounding record: a region has an empty",
        ),
    ],
)
def test_bad_lines(tmp_path: Path, lines: list[str], match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_odvg(write_jsonl(tmp_path / "train.jsonl", lines))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl: cannot read"):
        load_odvg(tmp_path / "nope.jsonl")
