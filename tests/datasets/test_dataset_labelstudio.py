from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vgtool.datasets import DataConfig, detect_format, load_samples
from vgtool.datasets.labelstudio import image_file_name, load_labelstudio, looks_like_labelstudio
from vgtool.errors import InputError

CAT_IMAGE = "my photos/cat 1.jpg"  # a sub-folder and a file name with spaces
CAT_SIZE = (200, 100)


def box_result(
    region_id: str,
    phrase: str | None,
    label: str | None,
    box_percent: tuple[float, float, float, float],
    size: tuple[int, int],
    *,
    textarea: str | None = "",
    rotation: float = 0,
) -> list[dict[str, Any]]:
    """The result items of one region as vgtool exports it: a rectangle (with ``meta.text`` when
    ``phrase`` is given) and a textarea of the same id (its text ``textarea``, the phrase when
    empty, no textarea when ``None``)."""
    x, y, w, h = box_percent
    geometry = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation}
    common = {"id": region_id, "to_name": "image", "original_width": size[0], "original_height": size[1]}
    rect = common | {
        "type": "rectanglelabels",
        "from_name": "label",
        "image_rotation": 0,
        "value": geometry | {"rectanglelabels": [label] if label else []},
        "score": 0.8,
    }
    if phrase is not None:
        rect["meta"] = {"text": [phrase]}
    items = [rect]
    if textarea is not None:
        text = textarea or phrase
        items.append(
            common | {"type": "textarea", "from_name": "phrase", "value": geometry | {"text": [text]}}
        )
    return items


def annotation(
    annotation_id: int, result: list[dict], updated_at: str | None = None, cancelled: bool = False
) -> dict[str, Any]:
    times = {"created_at": updated_at, "updated_at": updated_at} if updated_at else {}
    return {
        "id": annotation_id,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "completed_by": 1,
        "lead_time": 3.5,
    } | times


def task(task_id: int, data: dict, annotations: list[dict], predictions: list | None = None) -> dict:
    return {"id": task_id, "data": data, "annotations": annotations, "predictions": predictions or []}


def vgtool_data(file_name: str, phrases: list[str]) -> dict[str, Any]:
    quoted = file_name.replace(" ", "%20")
    return {"image": f"/data/local-files/?d=run/{quoted}", "file_name": file_name, "phrases": phrases}


def corrected_cat_task() -> dict[str, Any]:
    """Pre-labels vg1..vg4 for "a cat", "the red ball" and "a unicorn", corrected: vg1 moved, the red
    ball (vg2) deleted, vg3's phrase edited, vg4's phrase emptied, a dog box drawn past the edge."""
    phrases = ["a cat", "the red ball", "a unicorn"]
    prelabels = [
        *box_result("vg1", "a cat", "cat", (10, 10, 20, 40), CAT_SIZE),
        *box_result("vg2", "the red ball", "ball", (50, 50, 10, 20), CAT_SIZE),
        *box_result("vg3", "a cat", "cat", (60, 5, 10, 10), CAT_SIZE),
    ]
    corrected = [
        *box_result("vg1", "a cat", "cat", (15, 20, 20, 40), CAT_SIZE),
        *box_result("vg3", "a cat", "cat", (60, 5, 10, 10), CAT_SIZE, textarea="a sleeping cat"),
        *box_result("vg4", "a cat", "cat", (0, 0, 5, 10), CAT_SIZE, textarea="  "),
        *box_result("new1", None, "dog", (90, 50, 20, 60), CAT_SIZE, textarea=None),
    ]
    return task(
        1,
        vgtool_data(CAT_IMAGE, phrases),
        [
            annotation(11, prelabels, "2024-01-01T10:00:00.000000Z"),
            annotation(12, [], "2024-01-09T10:00:00.000000Z", cancelled=True),
            annotation(13, corrected, "2024-01-03T10:00:00.000000Z"),
        ],
        predictions=[{"id": 5, "result": prelabels, "score": 0.7, "model_version": "vgtool"}],
    )


def export_tasks() -> list[dict[str, Any]]:
    """A Label Studio JSON export of vgtool tasks after correction."""
    square = [*box_result("vg1", "a square", "square", (25, 25, 50, 50), (64, 48))]
    moved_square = [*box_result("vg1", "a square", "square", (0, 0, 50, 50), (64, 48))]
    no_file_name = {"image": "/data/local-files/?d=shots/b%20c.png", "phrases": ["a square"]}
    return [
        corrected_cat_task(),
        task(2, no_file_name, [annotation(21, square), annotation(22, moved_square)]),  # no times: last wins
        task(3, vgtool_data("c.jpg", ["a cat"]), [], predictions=[7]),  # never annotated
        task(4, vgtool_data("d.jpg", ["a cat"]), [annotation(41, square, cancelled=True)]),
    ]


def write_export(path: Path, tasks: list | dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tasks if isinstance(tasks, str) else json.dumps(tasks), encoding="utf-8")
    return path


def test_reads_a_corrected_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_export(tmp_path / "export" / "project-1.json", export_tasks())
    with caplog.at_level(logging.WARNING, logger="vgtool.datasets.labelstudio"):
        samples = load_labelstudio(path, image_root=tmp_path / "images")
    assert [(s.image_id, s.phrase, len(s.boxes_xyxy), s.category, s.sample_id) for s in samples] == [
        (CAT_IMAGE, "a cat", 2, "cat", 1),  # vg1 moved, vg4 back on meta.text
        (CAT_IMAGE, "a sleeping cat", 1, "cat", 2),  # the edited phrase
        (CAT_IMAGE, "a unicorn", 0, None, 3),  # never boxed: names nothing
        (CAT_IMAGE, "dog", 1, "dog", 4),  # a new box without phrase: its label
        (CAT_IMAGE, "the red ball", 0, None, 5),  # its box was deleted
        ("shots/b c.png", "a square", 1, "square", 6),
    ]
    cat, sleeping, unicorn, dog, _, square = samples
    np.testing.assert_allclose(cat.boxes_xyxy, [[30, 20, 70, 60], [0, 0, 10, 10]])
    np.testing.assert_allclose(sleeping.boxes_xyxy, [[120, 5, 140, 15]])
    np.testing.assert_allclose(dog.boxes_xyxy, [[180, 50, 200, 100]])  # clipped to the image
    np.testing.assert_allclose(square.boxes_xyxy, [[0, 0, 32, 24]])  # the later annotation
    assert unicorn.boxes_xyxy.shape == (0, 4)
    assert cat.image_path == tmp_path / "images" / "my photos" / "cat 1.jpg"
    assert square.image_path == tmp_path / "images" / "shots" / "b c.png"
    assert (cat.width, cat.height) == CAT_SIZE and (unicorn.width, unicorn.height) == CAT_SIZE
    assert cat.meta == {"task_id": 1, "annotation_id": 13, "region_ids": ["vg1", "vg4"]}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: skipped 2 of 4 tasks without a submitted annotation"
    ]


def test_image_root_defaults_to_the_export_folder(tmp_path: Path) -> None:
    path = write_export(tmp_path / "export" / "project-1.json", export_tasks())
    assert load_labelstudio(path)[0].image_path == tmp_path / "export" / "my photos" / "cat 1.jpg"


def test_a_phrase_moved_onto_another_box_is_no_longer_a_negative(tmp_path: Path) -> None:
    result = box_result("vg9", None, "ball", (50, 50, 10, 20), CAT_SIZE, textarea="the red ball")
    tasks = [task(1, vgtool_data("a.jpg", ["the red ball"]), [annotation(1, result)])]
    [ball] = load_labelstudio(write_export(tmp_path / "e.json", tasks))
    np.testing.assert_allclose(ball.boxes_xyxy, [[100, 50, 120, 70]])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"file_name": "a b/c.jpg", "image": "s3://bucket/x/other.jpg"}, "a b/c.jpg"),
        ({"image": "/data/local-files/?d=run/sub%20dir/a%2Bb.jpg"}, "run/sub dir/a+b.jpg"),
        ({"image": "s3://bucket/x/deep/d%20e.jpg"}, "d e.jpg"),
        ({"image": "https://host/data/f.png?token=1"}, "f.png"),
        ({"image": "/data/upload/3/1a2b-g.jpg"}, "1a2b-g.jpg"),
    ],
)
def test_image_file_name(data: dict, expected: str) -> None:
    assert image_file_name(data) == expected


def _one_task(result: list, **data: Any) -> list[dict]:
    return [task(7, vgtool_data("a.jpg", ["a cat"]) | data, [annotation(1, result)])]


SQUARE = box_result("vg1", "a cat", "cat", (10, 10, 10, 10), (20, 20))


def _without(key: str, item: int = 0, in_value: bool = False) -> list[dict]:
    result = json.loads(json.dumps(SQUARE))
    del (result[item]["value"] if in_value else result[item])[key]
    return result


@pytest.mark.parametrize(
    ("tasks", "match"),
    [
        ("{not json", r"e\.json: not JSON"),
        ({"id": 1}, r"e\.json: not a Label Studio JSON export: the top level is not a list of tasks"),
        ([[]], r"e\.json: task #1: not an object"),
        ([{"id": 7, "annotations": []}], r"e\.json: task #1 \(id 7\): no 'data' object"),
        ([{"id": 7, "data": {}, "annotations": {}}], r"task #1 \(id 7\): 'annotations' is not a list"),
        ([{"id": 7, "data": {}, "annotations": [3]}], r"task #1 \(id 7\): annotation #1 is not an object"),
        (
            [{"id": 7, "data": {"file_name": "a.jpg"}, "annotations": [{"id": 2}]}],
            r"annotation 2 has no 'result'",
        ),
        (_one_task(_without("x", in_value=True)), r"task #1 \(id 7\): region 'vg1' has no number 'x'"),
        (_one_task(_without("original_width")), r"region 'vg1' has no number 'original_width'"),
        (_one_task(_without("value")), r"region 'vg1' has no 'value' object"),
        (
            _one_task(box_result("r", "a cat", "cat", (1, 1, 5, 5), (20, 20), rotation=30)),
            r"region 'r' is rotated by 30 degrees; only upright boxes are read",
        ),
        (
            _one_task(box_result("r", None, None, (1, 1, 5, 5), (20, 20), textarea=None)),
            r"region 'r' has no phrase and no label",
        ),
        (
            _one_task(SQUARE + box_result("r", "a cat", "cat", (1, 1, 5, 5), (40, 20))),
            r"regions disagree on the image size",
        ),
        (
            _one_task(SQUARE, file_name="", image=None),
            r"task #1 \(id 7\): data has no 'file_name' and no 'image'",
        ),
        (_one_task(SQUARE, phrases="a cat"), r"data\.phrases is not a list of strings"),
        (
            [task(7, {"file_name": "a.jpg"}, [annotation(1, SQUARE, "yesterday")])],
            r"annotation 1 has a bad time 'yesterday'",
        ),
        (_one_task(SQUARE) + _one_task(SQUARE), r"task #2 \(id 7\): image 'a\.jpg' is also task #1's"),
        (
            [{"image": "a.jpg", "id": 1, "label": [], "annotator": 1, "annotation_id": 2, "lead_time": 1}],
            r"e\.json: a Label Studio JSON-MIN export, which drops region ids.*export as JSON instead",
        ),
    ],
)
def test_bad_exports(tmp_path: Path, tasks: Any, match: str) -> None:
    path = write_export(tmp_path / "e.json", tasks)
    with pytest.raises(InputError, match=match):
        load_labelstudio(path)


def test_export_folders(tmp_path: Path) -> None:
    write_export(tmp_path / "train.json", export_tasks())
    assert len(load_labelstudio(tmp_path)) == 6  # the folder's one export
    write_export(tmp_path / "val.json", export_tasks()[1:2])
    assert len(load_labelstudio(tmp_path, split="val")) == 1
    with pytest.raises(InputError, match=r"expected a single \.json export in this folder"):
        load_labelstudio(tmp_path)
    with pytest.raises(InputError, match=r"expected test\.json in this folder"):
        load_labelstudio(tmp_path, split="test")
    with pytest.raises(InputError, match=r"nope: no such Label Studio export file or folder"):
        load_labelstudio(tmp_path / "nope")


@pytest.mark.parametrize(
    ("contents", "expected"),
    [
        (export_tasks(), True),
        ([{"data": {"image": "a.jpg"}, "predictions": []}], True),  # pre-labels not yet annotated
        ([{"image": "a.jpg", "annotator": 1, "annotation_id": 2}], True),  # JSON-MIN, refused on read
        ([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], False),  # a COCO results list
        ({"images": [], "annotations": []}, False),
        ([], False),
        ("[{broken", False),
    ],
)
def test_looks_like_labelstudio(tmp_path: Path, contents: Any, expected: bool) -> None:
    assert looks_like_labelstudio(write_export(tmp_path / "e.json", contents)) is expected


def test_a_first_task_longer_than_the_peek_is_still_recognised(tmp_path: Path) -> None:
    big = corrected_cat_task()
    big["data"]["phrases"] = [f"phrase {i}" for i in range(10000)]
    assert looks_like_labelstudio(write_export(tmp_path / "e.json", [big]))


def test_registry_detects_and_reads_exports(tmp_path: Path) -> None:
    path = write_export(tmp_path / "ls" / "export.json", export_tasks())
    assert detect_format(path) == detect_format(path.parent) == "labelstudio"
    write_export(tmp_path / "ls" / "annotations.json", {"images": [], "annotations": []})
    assert detect_format(path.parent) == "coco"  # a folder with other JSON is COCO's
    for data_format in ("auto", "labelstudio"):
        config = DataConfig(format=data_format, path=str(path), image_root=str(tmp_path / "img"))
        samples = load_samples(config)
        assert len(samples) == 6 and samples[0].image_path == tmp_path / "img" / CAT_IMAGE


def test_a_box_outside_its_image_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result = box_result("vg1", "a cat", "cat", (110, 10, 20, 20), CAT_SIZE)
    path = write_export(
        tmp_path / "e.json", [task(1, vgtool_data("a.jpg", ["a cat"]), [annotation(1, result)])]
    )
    with caplog.at_level(logging.WARNING, logger="vgtool.datasets.labelstudio"):
        [cat] = load_labelstudio(path)
    assert cat.boxes_xyxy.shape == (0, 4)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: dropped 1 boxes that lie outside their image"
    ]


def test_an_export_from_a_real_label_studio_server(tmp_path):
    """``labelstudio_server_export.json``: Label Studio 1.23.2's JSON export of vgtool tasks (made by
    scripts/check_label_studio.py), after an annotator moved the square, edited its phrase and
    deleted the "rightmost shape" box of the one annotated task; the three others are unannotated."""
    from vgtool.datasets.labelstudio import load_labelstudio

    export = Path(__file__).parents[1] / "fixtures" / "labelstudio_server_export.json"
    samples = load_labelstudio(export, None, tmp_path)
    assert {s.image_path for s in samples} == {tmp_path / "shapes_1.jpg.png"}
    boxes = {s.phrase: s.boxes_xyxy.tolist() for s in samples}
    assert boxes["the square (edited)"] == [pytest.approx([23.16, 106.35, 48.32, 131.66], abs=0.01)]  # moved
    assert boxes["the circle"] == [pytest.approx([80.18, 8.02, 131.05, 59.03], abs=0.01)]
    assert boxes["the rightmost shape"] == [] and boxes["the square"] == []  # deleted / renamed
    assert {s.phrase for s in samples if len(s.boxes_xyxy) == 0} == {
        "all crosses",
        "all stars",
        "all triangles",
        "the rightmost shape",
        "the square",
    }
