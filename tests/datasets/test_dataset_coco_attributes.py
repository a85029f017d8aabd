"""CVAT / datumaro COCO exports: ``annotations/instances_<subset>.json`` with phrases in attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vgtool.datasets import DataConfig, detect_format, load_samples
from vgtool.datasets.coco_phrases import default_image_root, load_coco_phrases
from vgtool.errors import InputError

CATEGORIES = [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog", "supercategory": ""}]


def _ann(ann_id: int, image_id: int, category_id: int, bbox_xywh: list[float], **attributes: Any) -> dict:
    """An annotation as datumaro writes it: ``segmentation: []`` and an ``attributes`` object."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": [],
        "area": bbox_xywh[2] * bbox_xywh[3],
        "bbox": bbox_xywh,
        "iscrowd": 0,
        "attributes": {"occluded": False, **attributes},
    }


VAL = {
    "licenses": [{"name": "", "id": 0, "url": ""}],
    "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
    "categories": CATEGORIES,
    "images": [
        {
            "id": 1,
            "width": 64,
            "height": 48,
            "file_name": "sub dir/x 1.jpg",
            "license": 0,
            "date_captured": 0,
        },
        {"id": 2, "width": 32, "height": 32, "file_name": "y.jpg", "license": 0, "date_captured": 0},
    ],
    "annotations": [
        _ann(1, 1, 1, [1, 2, 10, 20], phrase="the black cat", score=0.9),
        _ann(2, 1, 1, [30, 2, 10, 10], phrase="the black cat", score="0.75"),  # CVAT text attribute
        _ann(3, 1, 2, [0, 0, 5, 5]) | {"phrase": "a puppy", "score": 0.5},  # vgtool's top-level fields
        _ann(4, 2, 2, [2, 2, 4, 4], phrase=""),  # an emptied phrase: the category name
        _ann(5, 2, 1, [8, 8, 4, 4], phrase="a cat", rotation=0.0),
    ],
}
TRAIN = VAL | {"images": VAL["images"][1:], "annotations": VAL["annotations"][3:]}


def write_datumaro(root: Path, subsets: dict[str, dict]) -> Path:
    for subset, coco in subsets.items():
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "images" / subset).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{subset}.json").write_text(json.dumps(coco), encoding="utf-8")
    return root


def test_reads_phrases_and_scores_from_attributes(tmp_path: Path) -> None:
    root = write_datumaro(tmp_path / "cvat", {"val": VAL, "train": TRAIN})
    samples = load_coco_phrases(root, split="val")
    assert [(s.image_id, s.phrase, s.category, s.meta) for s in samples] == [
        (1, "a puppy", "dog", {"annotation_ids": [3], "scores": [0.5]}),
        (1, "the black cat", "cat", {"annotation_ids": [1, 2], "scores": [0.9, 0.75]}),
        (2, "a cat", "cat", {"annotation_ids": [5]}),
        (2, "dog", "dog", {"annotation_ids": [4]}),
    ]
    np.testing.assert_array_equal(samples[1].boxes_xyxy, [[1, 2, 11, 22], [30, 2, 40, 12]])
    assert samples[0].image_path == root / "images" / "val" / "sub dir" / "x 1.jpg"


def test_subsets(tmp_path: Path) -> None:
    root = write_datumaro(tmp_path / "cvat", {"train": TRAIN})
    assert [s.phrase for s in load_coco_phrases(root)] == ["a cat", "dog"]  # the one subset
    assert load_coco_phrases(root, split="train")[0].image_path == root / "images" / "train" / "y.jpg"
    write_datumaro(root, {"val": VAL})
    with pytest.raises(InputError, match=r"several subsets in annotations/ \(train, val\); choose one"):
        load_coco_phrases(root)
    with pytest.raises(InputError, match=r"no annotations/instances_test\.json \(subsets here: train, val\)"):
        load_coco_phrases(root, split="test")


def test_the_instances_file_itself_and_an_explicit_image_root(tmp_path: Path) -> None:
    root = write_datumaro(tmp_path / "cvat", {"val": VAL})
    json_path = root / "annotations" / "instances_val.json"
    assert load_coco_phrases(json_path)[0].image_path == root / "images" / "val" / "sub dir" / "x 1.jpg"
    other = load_coco_phrases(root, "val", image_root=tmp_path / "pics")
    assert other[0].image_path == tmp_path / "pics" / "sub dir" / "x 1.jpg"


@pytest.mark.parametrize(
    ("relative", "folders", "expected"),
    [
        ("annotations/instances_val.json", [], "images/val"),
        ("annotations/instances_val2017.json", ["val2017"], "val2017"),  # COCO 2017's own layout
        ("annotations/instances_val2017.json", ["val2017", "images/val2017"], "images/val2017"),
        ("annotations/person_keypoints_val.json", [], "annotations"),
        ("labels/instances_val.json", [], "labels"),
        ("annotations.json", [], "."),
    ],
)
def test_default_image_root(tmp_path: Path, relative: str, folders: list[str], expected: str) -> None:
    for folder in folders:
        (tmp_path / folder).mkdir(parents=True)
    assert default_image_root(tmp_path / relative) == tmp_path / expected


def test_registry_detects_the_layout(tmp_path: Path) -> None:
    root = write_datumaro(tmp_path / "cvat", {"val": VAL, "train": TRAIN})
    assert detect_format(root) == "coco"
    samples = load_samples(DataConfig(path=str(root), split="val"))
    assert len(samples) == 4 and samples[0].image_path.parent.parent == root / "images" / "val"


@pytest.mark.parametrize(
    ("annotation", "match"),
    [
        (
            _ann(9, 1, 1, [0, 0, 4, 4], rotation=15.0),
            r"instances_val\.json: annotation 9 is rotated by 15\.0 degrees",
        ),
        (
            _ann(9, 1, 1, [0, 0, 4, 4]) | {"attributes": ["phrase"]},
            r"annotation 9: 'attributes' is not an object",
        ),
    ],
)
def test_bad_attributes(tmp_path: Path, annotation: dict, match: str) -> None:
    root = write_datumaro(tmp_path / "cvat", {"val": VAL | {"annotations": [annotation]}})
    with pytest.raises(InputError, match=match):
        load_coco_phrases(root, "val")
