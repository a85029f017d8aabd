"""Pure converters of each format, on hand-made boxes: geometry, escaping, captions."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from vgtool.errors import InputError
from vgtool.exports.formats.coco import coco_record
from vgtool.exports.formats.labelme import labelme_shape
from vgtool.exports.formats.labelstudio import labeling_config, percent_geometry, region_results
from vgtool.exports.formats.odvg import odvg_caption
from vgtool.exports.formats.voc import voc_bndbox
from vgtool.exports.formats.yolo import yolo_box, yolo_line
from vgtool.exports.registry import FORMATS, get_format
from vgtool.exports.run import RunBox, RunCategory

BOX = RunBox(
    annotation_id=7, category_id=3, bbox_xywh=(10.0, 20.0, 30.0, 40.0), score=0.8125, phrase="a <red> car"
)

PERCENT = [
    ((10, 20, 40, 60), 100, 200, {"x": 10.0, "y": 10.0, "width": 30.0, "height": 20.0}),
    ((0, 0, 160, 90), 160, 90, {"x": 0.0, "y": 0.0, "width": 100.0, "height": 100.0}),
    ((-5, -5, 15, 15), 100, 100, {"x": 0.0, "y": 0.0, "width": 15.0, "height": 15.0}),  # clipped
    ((90, 90, 120, 120), 100, 100, {"x": 90.0, "y": 90.0, "width": 10.0, "height": 10.0}),
    ((1, 2, 4, 6), 3, 7, {"x": 33.333333, "y": 28.571429, "width": 66.666667, "height": 57.142857}),
]


@pytest.mark.parametrize(("xyxy", "width", "height", "expected"), PERCENT)
def test_percent_geometry(xyxy, width, height, expected):
    assert percent_geometry(xyxy, width, height) == {**expected, "rotation": 0}


def test_percent_geometry_round_trips_to_pixels():
    geometry = percent_geometry((12.34, 56.78, 102.46, 90.11), 640, 427)
    assert geometry["x"] * 640 / 100 == pytest.approx(12.34, abs=1e-3)
    assert geometry["height"] * 427 / 100 == pytest.approx(33.33, abs=1e-3)


def test_a_box_is_two_results_sharing_one_region_id():
    label, phrase = region_results(BOX, "car", 100, 200)
    assert label["id"] == phrase["id"] == "vg7"
    assert (label["type"], label["from_name"], label["to_name"]) == ("rectanglelabels", "label", "image")
    assert (phrase["type"], phrase["from_name"], phrase["to_name"]) == ("textarea", "phrase", "image")
    assert label["value"]["rectanglelabels"] == ["car"] and label["meta"] == {"text": ["a <red> car"]}
    assert phrase["value"]["text"] == ["a <red> car"]
    geometry = {k: label["value"][k] for k in ("x", "y", "width", "height", "rotation")}
    assert geometry == {k: phrase["value"][k] for k in geometry}
    for result in (label, phrase):
        assert result["score"] == 0.8125
        assert (result["original_width"], result["original_height"], result["image_rotation"]) == (
            100,
            200,
            0,
        )


def test_labeling_config_escapes_names_and_parses():
    categories = (RunCategory(1, 'say "hi" & <bye>'), RunCategory(5, "it's"))
    root = ET.fromstring(labeling_config(categories))
    assert [label.get("value") for label in root.iter("Label")] == ['say "hi" & <bye>', "it's"]
    area = root.find("TextArea")
    assert area is not None and area.attrib == {
        "name": "phrase",
        "toName": "image",
        "perRegion": "true",
        "editable": "true",
        "rows": "1",
    }
    assert root.find("RectangleLabels").attrib == {"name": "label", "toName": "image"}


YOLO = [
    ((10, 20, 40, 60), 100, 200, [0.25, 0.2, 0.3, 0.2]),
    ((0, 0, 100, 50), 100, 50, [0.5, 0.5, 1.0, 1.0]),
    ((-10, 0, 10, 10), 100, 10, [0.05, 0.5, 0.1, 1.0]),  # clipped to the image
]


@pytest.mark.parametrize(("xyxy", "width", "height", "expected"), YOLO)
def test_yolo_box_is_normalised_centre_and_size(xyxy, width, height, expected):
    assert yolo_box(xyxy, width, height) == pytest.approx(expected)


def test_yolo_line_is_fixed_point_with_an_optional_confidence():
    tiny = RunBox(1, 1, (0.0, 0.0, 0.00001, 1.0), 0.5, "p")
    assert yolo_line(tiny, 2, 1000, 1000, confidence=False) == "2 0.000000 0.000500 0.000000 0.001000"
    assert yolo_line(BOX, 0, 100, 200, confidence=True) == "0 0.250000 0.200000 0.300000 0.200000 0.8125"


VOC = [
    ((10.0, 20.0, 40.0, 60.0), 100, 100, (11, 21, 40, 60)),
    ((10.4, 20.6, 39.6, 60.4), 100, 100, (11, 22, 40, 60)),
    ((0.0, 0.0, 100.0, 80.0), 100, 80, (1, 1, 100, 80)),
    ((-3.0, -3.0, 120.0, 90.0), 100, 80, (1, 1, 100, 80)),  # clipped
    ((5.2, 5.2, 5.3, 5.3), 100, 80, (6, 6, 6, 6)),  # narrower than a pixel: one pixel
    ((99.8, 79.9, 100.0, 80.0), 100, 80, (100, 80, 100, 80)),
]


@pytest.mark.parametrize(("xyxy", "width", "height", "expected"), VOC)
def test_voc_bndbox_is_one_based_inclusive(xyxy, width, height, expected):
    assert voc_bndbox(xyxy, width, height) == expected


def test_voc_bndbox_read_the_devkit_way_is_within_half_a_pixel():
    x0, y0, x1, y1 = 12.3, 45.6, 78.9, 99.4
    xmin, ymin, xmax, ymax = voc_bndbox((x0, y0, x1, y1), 200, 200)
    assert max(abs(xmin - 1 - x0), abs(ymin - 1 - y0), abs(xmax - x1), abs(ymax - y1)) <= 0.5


def test_odvg_caption_spans_point_at_each_phrase():
    caption, spans = odvg_caption(["red car", "dog", "red car", "tall tree"])
    assert caption == "red car. dog. tall tree."
    assert {p: caption[s:e] for p, (s, e) in spans.items()} == {
        "red car": "red car",
        "dog": "dog",
        "tall tree": "tall tree",
    }
    assert odvg_caption([]) == ("", {})


def test_coco_record_keeps_phrase_and_score_as_attributes():
    record = coco_record(BOX, image_id=4)
    assert record["segmentation"] == [] and record["iscrowd"] == 0
    assert record["attributes"] == {"phrase": "a <red> car", "score": 0.8125}
    assert record["bbox"] == [10.0, 20.0, 30.0, 40.0] and record["area"] == 1200.0
    assert (record["id"], record["image_id"], record["category_id"]) == (7, 4, 3)


def test_labelme_shape_is_a_two_point_rectangle():
    shape = labelme_shape(BOX, "car")
    assert shape["points"] == [[10.0, 20.0], [40.0, 60.0]]
    assert (shape["label"], shape["score"], shape["description"], shape["shape_type"]) == (
        "car",
        0.8125,
        "a <red> car",
        "rectangle",
    )


def test_registry_names_every_format_once():
    assert list(FORMATS) == ["labelstudio", "yolo", "voc", "coco", "odvg", "labelme"]
    for name, fmt in FORMATS.items():
        assert get_format(name) is fmt and fmt.name == name and fmt.layout in ("keep", "tree", "flat")
    with pytest.raises(InputError, match="unknown format 'kitti' \\(one of labelstudio, yolo"):
        get_format("kitti")
