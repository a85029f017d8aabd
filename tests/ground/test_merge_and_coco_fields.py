"""A run's outputs as annotation tools read them: class-wise merge, COCO fields every consumer
keeps, pinned categories, the results list for pycocotools, and the same-stem warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import random_image
from tests.prediction.test_fake_grounder import BoxPerPhrase
from vgtool.errors import InputError
from vgtool.ground.pipeline import GroundConfig, ground

# Boxes of the fake grounder: phrase p covers the left 1/(p+1) of the image, so phrases 1 and 2
# overlap by IoU 2/3, phrases 0 and 1 by exactly 1/2.
PHRASES = ["circle", "all triangles=triangle", "the rightmost shape=triangle"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        random_image(40 + 8 * i, 30, seed=i).save(folder / f"img{i}.png")
    return folder


def _run(folder: Path, out: Path, phrases=PHRASES, **config) -> dict:
    settings = GroundConfig(batch_size=2, num_workers=0, quiet=True, crops=False, overlays=False, **config)
    ground([folder], phrases, out_dir=out, model=BoxPerPhrase(), config=settings)
    return json.loads((out / "annotations.json").read_text())


@pytest.mark.parametrize(
    ("merge", "phrases_kept"),
    [
        ("class", ["circle", "all triangles"]),  # two triangle phrases on one object: one box
        ("none", ["circle", "all triangles", "the rightmost shape"]),
        ("all", ["circle", "all triangles"]),  # circle/triangle overlap only at IoU 0.5, not above
    ],
)
def test_merge_modes(folder: Path, tmp_path: Path, merge: str, phrases_kept: list[str]):
    coco = _run(folder, tmp_path / merge, merge=merge)
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["phrase"])
    assert list(by_image.values()) == [phrases_kept] * 3
    assert [a["id"] for a in coco["annotations"]] == list(range(1, 3 * len(phrases_kept) + 1))


def test_merge_iou_decides_what_is_one_object(folder: Path, tmp_path: Path):
    coco = _run(folder, tmp_path / "strict", merge="all", merge_iou=0.3)
    assert {a["phrase"] for a in coco["annotations"]} == {"circle"}  # now 1/2 and 1/3 overlap count
    run_key = json.loads((tmp_path / "strict" / "run-key.json").read_text())
    assert run_key["merge"] == {"mode": "all", "iou": 0.3}
    with pytest.raises(InputError, match="different merge settings"):
        _run(folder, tmp_path / "strict", merge="all", merge_iou=0.6)


def test_coco_records_carry_what_tools_keep(folder: Path, tmp_path: Path):
    coco = _run(folder, tmp_path / "out", merge="none")
    for ann in coco["annotations"]:
        assert ann["segmentation"] == []
        assert ann["attributes"] == {"phrase": ann["phrase"], "score": ann["score"]}
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results == [
        {k: a[k] for k in ("image_id", "category_id", "bbox", "score")} for a in coco["annotations"]
    ]
    from pycocotools.coco import COCO

    gt = COCO(str(tmp_path / "out" / "annotations.json"))
    detections = gt.loadRes(str(tmp_path / "out" / "results.json"))
    assert len(detections.getAnnIds()) == len(coco["annotations"])
    import matplotlib

    matplotlib.use("Agg")
    gt.showAnns(gt.loadAnns(gt.getAnnIds()), draw_bbox=True)  # needs the segmentation key


def test_categories_file_pins_ids(folder: Path, tmp_path: Path):
    dataset = tmp_path / "dataset.json"
    dataset.write_text(
        json.dumps(
            {
                "categories": [
                    {"id": 5, "name": "triangle"},
                    {"id": 9, "name": "circle"},
                    {"id": 2, "name": "x"},
                ]
            }
        )
    )
    coco = _run(folder, tmp_path / "out", categories_file=dataset)
    assert coco["categories"] == [
        {"id": 2, "name": "x", "supercategory": "object"},
        {"id": 5, "name": "triangle", "supercategory": "object"},
        {"id": 9, "name": "circle", "supercategory": "object"},
    ]
    assert {a["phrase"]: a["category_id"] for a in coco["annotations"]} == {"circle": 9, "all triangles": 5}


def test_shared_stems_are_warned_about(folder: Path, tmp_path: Path, capsys):
    random_image(32, 32, seed=7).convert("RGB").save(folder / "img0.jpg")
    coco = _run(folder, tmp_path / "out", phrases=["circle"])
    assert {i["file_name"] for i in coco["images"]} >= {"img0.jpg", "img0.png"}
    assert "img0.jpg and img0.png share a name stem" in capsys.readouterr().err
