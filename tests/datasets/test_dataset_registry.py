from __future__ import annotations

import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vgtool.config import from_dict
from vgtool.datasets import DataConfig, detect_format, load_samples
from vgtool.errors import ConfigError, InputError

COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 10}],
    "categories": [{"id": 1, "name": "cat"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 0}],
}
REF = {
    "ref_id": 1,
    "ann_id": 1,
    "image_id": 1,
    "split": "val",
    "category_id": 1,
    "sentences": [{"raw": "the cat", "sent": "the cat", "sent_id": 5, "tokens": ["the", "cat"]}],
}
ODVG_LINE = {
    "filename": "a.jpg",
    "grounding": {"caption": "a cat", "regions": [{"bbox": [0, 0, 1, 1], "phrase": "a cat"}]},
}
PARQUET_ROW = REF | {
    "bbox": [0.0, 0.0, 4.0, 4.0],
    "image_path": "coco/train2014/a.jpg",
    "file_name": "a_1.jpg",
}


def _write(path: Path, contents: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    else:
        path.write_text(contents)


def make_layout(root: Path, data_format: str) -> Path:
    """A minimal dataset of ``data_format`` under ``root``; returns the path to give a reader."""
    if data_format == "coco":
        _write(root / "val.json", json.dumps(COCO))
        return root
    if data_format == "refer":
        _write(root / "refs(unc).p", pickle.dumps([REF], protocol=2))
        _write(root / "instances.json", json.dumps(COCO))
        return root
    if data_format == "odvg":
        _write(root / "val.jsonl", json.dumps(ODVG_LINE) + "\n")
        return root / "val.jsonl"
    if data_format == "flickr30k":
        _write(root / "Sentences" / "7.txt", "[/EN#3/animals A cat] sleeps .\n")
        xml = "<annotation><size><width>9</width><height>9</height></size><object><name>3</name>"
        xml += (
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>"
        )
        _write(root / "Annotations" / "7.xml", xml)
        _write(root / "val.txt", "7\n")
        return root
    if data_format == "refcoco-parquet":
        (root / "data").mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pylist([PARQUET_ROW]), root / "data" / "validation-00000-of-00001.parquet"
        )
        return root
    raise AssertionError(data_format)


FORMATS = ["coco", "refer", "odvg", "flickr30k", "refcoco-parquet"]


@pytest.mark.parametrize("data_format", FORMATS)
def test_detect_and_load_every_format(tmp_path: Path, data_format: str) -> None:
    path = make_layout(tmp_path / "data", data_format)
    assert detect_format(path) == data_format
    for fmt in ("auto", data_format):
        config = DataConfig(format=fmt, path=str(path), split="val", image_root=str(tmp_path / "images"))
        [sample] = load_samples(config)
        assert sample.phrase in {"cat", "the cat", "a cat", "A cat"}
        assert sample.boxes_xyxy.shape == (1, 4)


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("refs(google).p", "refer"),
        ("train.jsonl", "odvg"),
        ("train-00000-of-00001.parquet", "refcoco-parquet"),
        ("instances.json", "coco"),
    ],
)
def test_detect_single_files(tmp_path: Path, relative: str, expected: str) -> None:
    _write(tmp_path / relative, "")
    assert detect_format(tmp_path / relative) == expected


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (DataConfig(), ConfigError, "data.path is not set"),
        (DataConfig(format="yolo", path="."), ConfigError, r"'yolo' is not one of auto, coco, refer"),  # type: ignore[arg-type]
        (DataConfig(format="refer", path="."), ConfigError, "data.image_root is required for format 'refer'"),
        (
            DataConfig(format="coco", path=".", split_by="unc"),
            ConfigError,
            "split_by only applies to format 'refer'",
        ),
        (DataConfig(path="does/not/exist"), InputError, "no such dataset file or folder"),
        (DataConfig(path="notes.txt"), ConfigError, "cannot tell the dataset format; set data.format"),
    ],
)
def test_bad_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: DataConfig, error: type, match: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "notes.txt", "hello")
    with pytest.raises(error, match=match):
        load_samples(config)


def test_config_from_recipe_mapping() -> None:
    config = from_dict(
        DataConfig, {"format": "refer", "path": "refcoco", "split": "testA", "split_by": "unc"}
    )
    assert config == DataConfig(format="refer", path="refcoco", split="testA", split_by="unc")
    with pytest.raises(ConfigError, match="'yolo' is not one of"):
        from_dict(DataConfig, {"format": "yolo"})
