from __future__ import annotations

import json
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from vgtool.datasets.refer import load_refer
from vgtool.errors import InputError

IMAGES = [
    {"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 640, "height": 480},
    {"id": 2, "file_name": "COCO_train2014_000000000002.jpg", "width": 320, "height": 240},
]
ANNOTATIONS = [
    {"id": 100, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
    {"id": 101, "image_id": 2, "category_id": 2, "bbox": [0.5, 1.5, 2, 3], "area": 6, "iscrowd": 0},
    {"id": 102, "image_id": 1, "category_id": 2, "bbox": [100, 100, 50, 25], "area": 1250, "iscrowd": 0},
]
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]


def _sentence(sent_id: int, raw: str) -> dict:
    return {"raw": raw, "sent": raw.lower(), "sent_id": sent_id, "tokens": raw.lower().split()}


REFS = [
    {
        "ref_id": 11,
        "ann_id": 101,
        "image_id": 2,
        "split": "testA",
        "category_id": 2,
        "file_name": "COCO_train2014_000000000002_101.jpg",
        "sentences": [_sentence(3000, "Small dog")],
    },
    {
        "ref_id": 10,
        "ann_id": 100,
        "image_id": 1,
        "split": "train",
        "category_id": 1,
        "file_name": "COCO_train2014_000000000001_100.jpg",
        "sentences": [_sentence(1000, "Man on left"), _sentence(1001, "caf\u00e9 guy")],
    },
    {
        "ref_id": 12,
        "ann_id": 102,
        "image_id": 1,
        "split": "val",
        "category_id": 2,
        "file_name": "COCO_train2014_000000000001_102.jpg",
        "sentences": [_sentence(2000, "Dog right")],
    },
]


def python2_pickle(obj: object) -> bytes:
    """``obj`` at protocol 2 with every ``str`` as a Python 2 byte string, like the refer files."""
    data = pickle.dumps(obj, protocol=2)
    out, last = bytearray(), 0
    for opcode, _, pos in pickletools.genops(data):
        if opcode.name == "BINUNICODE":  # 'X' + 4-byte length + UTF-8, the same layout as BINSTRING 'T'
            out += data[last:pos] + b"T"
            last = pos + 1
    return bytes(out + data[last:])


def write_refer(root: Path, refs: list[dict] = REFS, split_by: str = "unc") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"refs({split_by}).p").write_bytes(python2_pickle(refs))
    coco = {"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}
    (root / "instances.json").write_text(json.dumps(coco))
    return root


@pytest.mark.parametrize(
    ("split", "sent_ids"),
    [("train", [1000, 1001]), ("val", [2000]), ("testA", [3000]), (None, [1000, 1001, 2000, 3000])],
)
def test_split_filtering_and_order(tmp_path: Path, split: str | None, sent_ids: list[int]) -> None:
    samples = load_refer(write_refer(tmp_path / "refcoco"), split, tmp_path / "train2014")
    assert [s.sample_id for s in samples] == sent_ids


def test_sample_fields(tmp_path: Path) -> None:
    samples = load_refer(write_refer(tmp_path / "refcoco"), None, tmp_path / "train2014")
    man, cafe, dog, small_dog = samples
    assert man.phrase == "Man on left"
    assert cafe.phrase == "café guy"  # a Python 2 UTF-8 byte string, repaired
    assert man.image_path == tmp_path / "train2014" / "COCO_train2014_000000000001.jpg"
    assert (man.image_id, man.width, man.height, man.category) == (1, 640, 480, "person")
    assert man.meta == {"ref_id": 10, "ann_id": 100, "split": "train", "sent": "man on left"}
    np.testing.assert_array_equal(man.boxes_xyxy, [[10, 20, 40, 60]])  # xywh -> xyxy
    np.testing.assert_array_equal(cafe.boxes_xyxy, man.boxes_xyxy)
    np.testing.assert_array_equal(dog.boxes_xyxy, [[100, 100, 150, 125]])
    np.testing.assert_allclose(small_dog.boxes_xyxy, [[0.5, 1.5, 2.5, 4.5]])
    assert small_dog.category == "dog" and small_dog.image_id == 2


def test_python3_pickle_with_bytes_strings(tmp_path: Path) -> None:
    refs = [dict(REFS[1], split=b"train", sentences=[{"raw": b"a man", "sent": b"a man", "sent_id": 7}])]
    root = write_refer(tmp_path / "refcoco")
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    [sample] = load_refer(root, "train", tmp_path)
    assert (sample.phrase, sample.meta["split"], sample.sample_id) == ("a man", "train", 7)


@pytest.mark.parametrize(
    ("split_by", "expected"), [(None, [1000, 1001]), ("unc", [1000, 1001]), ("google", [9])]
)
def test_split_by_picks_the_pickle(tmp_path: Path, split_by: str | None, expected: list[int]) -> None:
    root = write_refer(tmp_path / "refcoco")
    google = [dict(REFS[1], sentences=[_sentence(9, "google man")])]
    (root / "refs(google).p").write_bytes(python2_pickle(google))
    samples = load_refer(root, "train", tmp_path, split_by=split_by)
    assert [s.sample_id for s in samples] == expected


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    root = write_refer(tmp_path / "refcoco")
    (root / "refs(unc).p").write_bytes(pickle.dumps([Evil()], protocol=2))
    with pytest.raises(InputError, match=r"refs\(unc\)\.p: not a plain-data pickle: refusing .*system"):
        load_refer(root, "train", tmp_path)
    assert not marker.exists()


BAD_DATA = [
    ("refs(unc).p", None, r"no refs\(unc\)\.p, refs\(umd\)\.p or refs\(google\)\.p in this folder"),
    ("instances.json", None, r"instances\.json: cannot read"),
    ("instances.json", b"{}", r"instances\.json: not a COCO instances file"),
    ("refs(unc).p", b"garbage", r"refs\(unc\)\.p: not a plain-data pickle"),
    ("refs(unc).p", pickle.dumps({"a": 1}, 2), r"not a refer pickle: expected a list of dicts, got dict"),
    ("refs(unc).p", pickle.dumps([{"ref_id": 1}], 2), r"not a refer pickle: a ref has no ann_id"),
    (
        "refs(unc).p",
        python2_pickle([dict(REFS[1], ann_id=999)]),
        r"instances\.json: no annotation 999 \(ref 10\)",
    ),
    ("refs(unc).p", python2_pickle([dict(REFS[1], image_id=9)]), r"instances\.json: no image 9 \(ref 10\)"),
    ("refs(unc).p", python2_pickle([dict(REFS[1], image_id="1")]), r"ref 10 has non-integer ids"),
    (
        "refs(unc).p",
        python2_pickle([dict(REFS[1], sentences=[{"raw": "x"}])]),
        r"ref 10: KeyError\('sent_id'\)",
    ),
]


@pytest.mark.parametrize(("name", "contents", "match"), BAD_DATA)
def test_bad_data(tmp_path: Path, name: str, contents: bytes | None, match: str) -> None:
    root = write_refer(tmp_path / "refcoco")
    if contents is None:
        (root / name).unlink()
    else:
        (root / name).write_bytes(contents)
    with pytest.raises(InputError, match=match):
        load_refer(root, None, tmp_path)


@pytest.mark.parametrize(
    ("split", "split_by", "match"),
    [
        ("testB", None, r"no refs in split 'testB' \(splits here: testA, train, val\)"),
        ("train", "umd", r"refs\(umd\)\.p: no such refer pickle"),
    ],
)
def test_bad_arguments(tmp_path: Path, split: str, split_by: str | None, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_refer(write_refer(tmp_path / "refcoco"), split, tmp_path, split_by=split_by)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such refer dataset folder"):
        load_refer(tmp_path / "nope", "train", tmp_path)
