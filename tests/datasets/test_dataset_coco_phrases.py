from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vgtool.datasets.coco_phrases import load_coco_phrases
from vgtool.errors import InputError

IMAGES = [
    {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48, "split": "val"},
    {"id": 1, "file_name": "sub/a.jpg", "width": 32, "height": 32, "split": "train"},
]
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def _ann(ann_id: int, image_id: int, category_id: int, bbox_xywh: list[float], **extra) -> dict:
    area = bbox_xywh[2] * bbox_xywh[3]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox_xywh,
        "area": area,
        "iscrowd": 0,
    } | extra


ANNOTATIONS = [
    _ann(5, 2, 2, [2.5, 3.5, 10, 20], score=0.9),
    _ann(1, 1, 1, [1, 2, 3, 4]),
    _ann(2, 1, 1, [10, 10, 5, 5]),
    _ann(3, 1, 2, [0, 0, 8, 8], phrase="the brown dog"),
    _ann(4, 1, 2, [20, 20, 4, 4], iscrowd=1),
]
PHRASES = [
    {"id": 9, "image_id": 2, "phrase": "a dog", "annotation_ids": [5]},
    {"id": 7, "image_id": 1, "phrase": "two cats", "annotation_ids": [1, 2], "kind": "multi"},
    {"id": 8, "image_id": 1, "phrase": "a unicorn", "annotation_ids": [], "kind": "none"},
]


def write_coco(path: Path, phrases: list[dict] | None = None, **overrides) -> Path:
    coco = {"images": IMAGES, "categories": CATEGORIES, "annotations": ANNOTATIONS} | overrides
    if phrases is not None:
        coco["phrases"] = phrases
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def test_groups_annotations_by_phrase(tmp_path: Path) -> None:
    samples = load_coco_phrases(write_coco(tmp_path / "out" / "annotations.json"))
    assert [(s.image_id, s.phrase, s.sample_id, s.category) for s in samples] == [
        (1, "cat", 1, "cat"),  # the category name stands in for a missing phrase
        (1, "the brown dog", 2, "dog"),  # the crowd dog (4) is skipped
        (2, "dog", 3, "dog"),
    ]
    cats, brown_dog, dog = samples
    np.testing.assert_array_equal(cats.boxes_xyxy, [[1, 2, 4, 6], [10, 10, 15, 15]])  # xywh -> xyxy
    np.testing.assert_array_equal(brown_dog.boxes_xyxy, [[0, 0, 8, 8]])
    np.testing.assert_allclose(dog.boxes_xyxy, [[2.5, 3.5, 12.5, 23.5]])
    assert cats.meta == {"annotation_ids": [1, 2]}
    assert dog.meta == {"annotation_ids": [5], "scores": [0.9]}
    assert cats.image_path == tmp_path / "out" / "sub" / "a.jpg"
    assert (dog.width, dog.height) == (64, 48)


def test_phrase_list(tmp_path: Path) -> None:
    samples = load_coco_phrases(write_coco(tmp_path / "a.json", PHRASES), image_root=tmp_path / "images")
    assert [(s.image_id, s.phrase, s.sample_id, s.meta["kind"]) for s in samples] == [
        (1, "a unicorn", 8, "none"),
        (1, "two cats", 7, "multi"),
        (2, "a dog", 9, "single"),  # kind derived from the box count
    ]
    unicorn, cats, _ = samples
    assert unicorn.boxes_xyxy.shape == (0, 4) and unicorn.category is None
    np.testing.assert_array_equal(cats.boxes_xyxy, [[1, 2, 4, 6], [10, 10, 15, 15]])
    assert cats.image_path == tmp_path / "images" / "sub" / "a.jpg"


@pytest.mark.parametrize("phrases", [None, PHRASES])
@pytest.mark.parametrize(
    ("split", "image_ids"), [("train", {1}), ("val", {2}), ("test", set()), (None, {1, 2})]
)
def test_split_field(tmp_path: Path, phrases: list | None, split: str | None, image_ids: set[int]) -> None:
    samples = load_coco_phrases(write_coco(tmp_path / "a.json", phrases), split=split)
    assert {s.image_id for s in samples} == image_ids


def test_split_files_in_folder(tmp_path: Path) -> None:
    no_split = [{k: v for k, v in image.items() if k != "split"} for image in IMAGES]
    write_coco(tmp_path / "train.json", images=no_split[1:], annotations=ANNOTATIONS[1:])
    write_coco(tmp_path / "val.json", images=no_split[:1], annotations=ANNOTATIONS[:1])
    assert [s.image_id for s in load_coco_phrases(tmp_path, split="val")] == [2]
    assert [s.image_id for s in load_coco_phrases(tmp_path, split="train")] == [1, 1]
    with pytest.raises(InputError, match=r"expected test\.json or annotations\.json or a single \.json file"):
        load_coco_phrases(tmp_path, split="test")


def test_folder_falls_back_to_annotations_json(tmp_path: Path) -> None:
    write_coco(tmp_path / "annotations.json")
    assert len(load_coco_phrases(tmp_path, split="val")) == 1  # filtered on the images' split field
    write_coco(
        tmp_path / "annotations.json", images=[{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b"}]
    )
    with pytest.raises(
        InputError, match=r"no val\.json here, and the images of annotations\.json carry no 'split'"
    ):
        load_coco_phrases(tmp_path, split="val")


@pytest.mark.parametrize(
    ("contents", "match"),
    [
        ("{not json", r"a\.json: not JSON"),
        ("[]", r"a\.json: not a COCO file: the top level is not an object"),
        ('{"images": []}', r"a\.json: not a COCO file: no 'annotations' list"),
        (
            json.dumps({"images": IMAGES, "annotations": [_ann(1, 1, 7, [0, 0, 1, 1])]}),
            r"a\.json: annotation 1 has category 7, which is not in 'categories'",
        ),
        (
            json.dumps(
                {"images": IMAGES, "categories": CATEGORIES, "annotations": [_ann(1, 3, 1, [0, 0, 1, 1])]}
            ),
            r"a\.json: annotation 1 refers to image 3, which is not in 'images'",
        ),
        (
            json.dumps(
                {"images": IMAGES, "categories": CATEGORIES, "annotations": [_ann(1, 1, 1, [0, 0, -1, 1])]}
            ),
            r"a\.json: image 1, phrase 'cat'",
        ),
        (
            json.dumps(
                {
                    "images": IMAGES,
                    "categories": CATEGORIES,
                    "annotations": ANNOTATIONS,
                    "phrases": [PHRASES[0] | {"annotation_ids": [5, 99]}],
                }
            ),
            r"a\.json: phrase 9 lists unknown annotations \[99\]",
        ),
        (
            json.dumps(
                {"images": IMAGES, "categories": CATEGORIES, "annotations": [], "phrases": [{"image_id": 1}]}
            ),
            r"a\.json: not a COCO-with-phrases file: missing or bad field 'phrase'",
        ),
    ],
)
def test_bad_files(tmp_path: Path, contents: str, match: str) -> None:
    (tmp_path / "a.json").write_text(contents)
    with pytest.raises(InputError, match=match):
        load_coco_phrases(tmp_path / "a.json")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.json: no such COCO file or folder"):
        load_coco_phrases(tmp_path / "nope.json")
