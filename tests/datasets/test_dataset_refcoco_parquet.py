from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vgtool.datasets.refcoco_parquet import load_refcoco_parquet
from vgtool.errors import InputError

TRAIN_IMAGE = "coco/train2014/COCO_train2014_000000581857.jpg"


def _row(ref_id: int, image_id: int, split: str, bbox_xyxy: list[float], *raws: str) -> dict:
    sentences = [
        {"raw": raw, "sent": raw.lower(), "sent_id": ref_id * 10 + i, "tokens": raw.lower().split()}
        for i, raw in enumerate(raws)
    ]
    image_name = f"COCO_train2014_{image_id:012d}"
    return {
        "sent_ids": [s["sent_id"] for s in sentences],
        "file_name": f"{image_name}_{ref_id}.jpg",
        "ann_id": ref_id + 1000,
        "ref_id": ref_id,
        "image_id": image_id,
        "split": split,
        "sentences": sentences,
        "category_id": 1,
        "raw_anns": json.dumps({"id": ref_id + 1000, "bbox": [0, 0, 1, 1], "category_id": 1}),
        "raw_image_info": json.dumps({"id": image_id, "width": 640, "height": 427}),
        "image_path": f"coco/train2014/{image_name}.jpg",
        "bbox": bbox_xyxy,
    }


SHARDS = {
    "train-00000-of-00001-94431d5f.parquet": [
        _row(2, 581857, "train", [103.93, 299.99, 342.22, 477.41], "The lady with the blue shirt", "lady"),
        _row(1, 9, "train", [0, 0, 10, 20], "left dog"),
    ],
    "validation-00000-of-00001-db1f654b.parquet": [_row(3, 42, "val", [1, 2, 3, 4], "a cup")],
    "test-00000-of-00001-0026a904.parquet": [_row(4, 43, "testA", [5, 6, 7, 8], "man in red")],
}


def write_shards(folder: Path, shards: dict[str, list[dict]] = SHARDS, json_strings: bool = False) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, rows in shards.items():
        if json_strings:
            rows = [dict(row, sentences=json.dumps(row["sentences"])) for row in rows]
        pq.write_table(pa.Table.from_pylist(rows), folder / "data" / name)
    return folder


@pytest.mark.parametrize(
    ("split", "ref_ids"),
    [
        ("train", [1, 2]),  # by file name
        ("val", [3]),  # file says "validation"
        ("validation", [3]),
        ("test", [4]),  # by file name, though its rows say "testA"
        ("testA", [4]),  # no testA file: by the split column
        (None, [1, 2, 3, 4]),
    ],
)
def test_split_filtering(tmp_path: Path, split: str | None, ref_ids: list[int]) -> None:
    samples = load_refcoco_parquet(write_shards(tmp_path / "refcoco"), split, tmp_path / "coco")
    assert sorted({s.meta["ref_id"] for s in samples}) == ref_ids


@pytest.mark.parametrize("json_strings", [False, True])
def test_sample_fields(tmp_path: Path, json_strings: bool) -> None:
    root = write_shards(tmp_path / "refcoco", json_strings=json_strings)
    samples = load_refcoco_parquet(root / "data" / "train-00000-of-00001-94431d5f.parquet", None, tmp_path)
    assert [(s.image_id, s.phrase, s.sample_id) for s in samples] == [
        (9, "left dog", 10),
        (581857, "The lady with the blue shirt", 20),
        (581857, "lady", 21),
    ]
    lady = samples[1]
    np.testing.assert_allclose(lady.boxes_xyxy, [[103.93, 299.99, 342.22, 477.41]], rtol=1e-6)  # already xyxy
    assert (lady.width, lady.height) == (640, 427)
    assert lady.meta == {
        "ref_id": 2,
        "ann_id": 1002,
        "split": "train",
        "sent": "the lady with the blue shirt",
        "category_id": 1,
    }


@pytest.mark.parametrize(
    ("where_on_disk", "image_root", "expected"),
    [
        (TRAIN_IMAGE, ".", TRAIN_IMAGE),  # image_root/<image_path>
        ("train2014/COCO_train2014_000000581857.jpg", ".", "train2014/COCO_train2014_000000581857.jpg"),
        ("flat/COCO_train2014_000000581857.jpg", "flat", "flat/COCO_train2014_000000581857.jpg"),
        (None, "missing", "missing/" + TRAIN_IMAGE),  # nothing on disk: image_root/<image_path>
    ],
)
def test_image_resolution(tmp_path: Path, where_on_disk: str | None, image_root: str, expected: str) -> None:
    if where_on_disk is not None:
        (tmp_path / where_on_disk).parent.mkdir(parents=True)
        Image.new("RGB", (4, 3)).save(tmp_path / where_on_disk)
    samples = load_refcoco_parquet(write_shards(tmp_path / "refcoco"), "train", tmp_path / image_root)
    assert samples[-1].image_path == tmp_path / expected


def test_file_name_suffix_is_dropped_without_image_path(tmp_path: Path) -> None:
    row = dict(_row(5, 77, "train", [0, 0, 1, 1], "x"), image_path=None)
    write_shards(tmp_path, {"train-0.parquet": [row]})
    [sample] = load_refcoco_parquet(tmp_path, "train", tmp_path / "coco")
    assert sample.image_path == tmp_path / "coco" / "COCO_train2014_000000000077.jpg"


def test_duplicate_shards_are_read_once(tmp_path: Path) -> None:
    write_shards(tmp_path, {"test-0-aaa.parquet": SHARDS["test-00000-of-00001-0026a904.parquet"]})
    write_shards(tmp_path, {"test-0-bbb.parquet": SHARDS["test-00000-of-00001-0026a904.parquet"]})
    assert len(load_refcoco_parquet(tmp_path, "test")) == 1


def test_hub_conversion_layout(tmp_path: Path) -> None:
    """``<split>/0000.parquet``, as the hub's automatic parquet conversion lays files out."""
    for split, shard in (
        ("train", "train-00000-of-00001-94431d5f.parquet"),
        ("val", "test-00000-of-00001-0026a904.parquet"),
    ):
        (tmp_path / split).mkdir()
        pq.write_table(pa.Table.from_pylist(SHARDS[shard]), tmp_path / split / "0000.parquet")
    assert {s.meta["ref_id"] for s in load_refcoco_parquet(tmp_path, "val")} == {4}  # by folder, not column


def test_missing_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_shards(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(InputError, match=r'pip install "vgtool\[parquet\]"'):
        load_refcoco_parquet(root, "train")


@pytest.mark.parametrize(
    ("files", "split", "match"),
    [
        ({}, None, "no .parquet files in this folder"),
        (SHARDS, "testB", "no parquet file or row for split 'testB'"),
        (
            {"train-0.parquet": [{"ref_id": 1, "sentences": "[]"}]},
            None,
            "not a RefCOCO parquet file: no column",
        ),
        ({"t.parquet": [_row(1, 1, "train", [5, 5, 1, 1], "x")]}, None, "bad row for ref 1"),  # x1 < x0
        ({"t.parquet": [dict(_row(1, 1, "train", [0, 0, 1, 1], "x"), ref_id=None)]}, None, "no integer"),
        (
            {"train-0.parquet": [dict(_row(1, 1, "train", [0, 0, 1, 1], "x"), sentences="{oops")]},
            None,
            "ref 1",
        ),
    ],
)
def test_bad_data(tmp_path: Path, files: dict, split: str | None, match: str) -> None:
    (tmp_path / "data").mkdir()
    write_shards(tmp_path, files)
    with pytest.raises(InputError, match=match):
        load_refcoco_parquet(tmp_path, split)


@pytest.mark.parametrize(
    ("name", "contents", "match"), [("nope", None, "no such"), ("x.parquet", b"PAR1", "cannot read")]
)
def test_unreadable_path(tmp_path: Path, name: str, contents: bytes | None, match: str) -> None:
    if contents is not None:
        (tmp_path / name).write_bytes(contents)
    with pytest.raises(InputError, match=match):
        load_refcoco_parquet(tmp_path / name)
