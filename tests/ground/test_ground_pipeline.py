from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from vgtool.errors import InputError
from vgtool.ground.pipeline import GroundConfig, ground

PHRASES = ["red car=car", "blue car=car", "dog"]
LOW = GroundConfig(threshold=0.0, quiet=True, recursive=True, num_workers=0)


def _run(image_folder, out, **kwargs):
    config = GroundConfig(**{**vars(LOW), **kwargs})
    return ground(
        [image_folder], PHRASES, out_dir=out, model=kwargs.pop("model", None) or _run.model, config=config
    )


@pytest.fixture(autouse=True)
def _model(tiny_checkpoint):
    _run.model = tiny_checkpoint


def test_coco_output_loads_in_pycocotools_and_cocoeval_runs(image_folder, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    summary = _run(image_folder, tmp_path / "out")
    path = tmp_path / "out" / "annotations.json"
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    assert summary.grounded == 5 and summary.annotations == len(gt.anns) > 0
    assert [c["id"] for c in gt.loadCats(gt.getCatIds())] == [1, 2]
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["car", "dog"]
    names = sorted(img["file_name"] for img in gt.imgs.values())
    assert names == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg", "sub/deep.png"]
    ids = [a["id"] for a in gt.anns.values()]
    assert len(set(ids)) == len(ids) and min(ids) == 1
    for ann in gt.anns.values():
        image = gt.imgs[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= image["width"] + 0.01 and y + h <= image["height"] + 0.01
        assert ann["iscrowd"] == 0 and ann["phrase"] in {"red car", "blue car", "dog"}
        assert ann["area"] == pytest.approx(w * h, abs=0.02)
    with contextlib.redirect_stdout(io.StringIO()):
        detections = gt.loadRes(json.loads(path.read_text())["annotations"])
        evaluator = COCOeval(gt, detections, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] > 0.99  # predictions scored against themselves


def test_image_sizes_are_displayed_sizes(image_folder, tmp_path):
    _run(image_folder, tmp_path / "out")
    document = json.loads((tmp_path / "out" / "annotations.json").read_text())
    sizes = {img["file_name"]: (img["width"], img["height"]) for img in document["images"]}
    assert sizes["img2.jpg"] == (112, 72) and sizes["sub/deep.png"] == (64, 80)


def test_crops_match_their_boxes_and_overlays_exist(image_folder, tmp_path):
    _run(image_folder, tmp_path / "out")
    out = tmp_path / "out"
    document = json.loads((out / "annotations.json").read_text())
    images = {img["id"]: img for img in document["images"]}
    categories = {c["id"]: c["name"] for c in document["categories"]}
    assert document["annotations"]
    for ann in document["annotations"]:
        image = images[ann["image_id"]]
        stem = image["file_name"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        crop = out / "crops" / categories[ann["category_id"]] / f"{stem}_{ann['id']}.jpg"
        assert crop.is_file(), crop
        _, _, w, h = ann["bbox"]
        with Image.open(crop) as handle:
            assert abs(handle.width - w) <= 1.5 and abs(handle.height - h) <= 1.5
    for image in images.values():
        name = image["file_name"]
        overlay = out / "overlays" / (name if name.endswith(".jpg") else name + ".jpg")
        assert overlay.is_file(), overlay


def test_same_inputs_give_byte_identical_annotations(image_folder, tmp_path):
    _run(image_folder, tmp_path / "a")
    _run(image_folder, tmp_path / "b", batch_size=2)
    assert (tmp_path / "a" / "annotations.json").read_bytes() == (
        tmp_path / "b" / "annotations.json"
    ).read_bytes()


def test_exif_rotated_image_gives_boxes_in_displayed_frame(tmp_path, tiny_checkpoint):
    """A photo stored sideways with an EXIF orientation tag grounds exactly like the upright photo."""
    rng = np.random.default_rng(3)
    upright = Image.fromarray(rng.integers(0, 255, (60, 100, 3), dtype=np.uint8))  # 100 wide, 60 high
    (tmp_path / "upright").mkdir()
    (tmp_path / "rotated").mkdir()
    upright.save(tmp_path / "upright" / "photo.png")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes: 60 x 100
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(tmp_path / "rotated" / "photo.png", exif=exif)
    config = GroundConfig(threshold=0.0, quiet=True, num_workers=0, crops=False, overlays=False)
    for name in ("upright", "rotated"):
        ground(
            [tmp_path / name], ["dog"], out_dir=tmp_path / f"out-{name}", model=tiny_checkpoint, config=config
        )
    a = json.loads((tmp_path / "out-upright" / "annotations.json").read_text())
    b = json.loads((tmp_path / "out-rotated" / "annotations.json").read_text())
    assert (b["images"][0]["width"], b["images"][0]["height"]) == (100, 60)
    assert [x["bbox"] for x in a["annotations"]] == [x["bbox"] for x in b["annotations"]]


def test_bad_image_is_skipped_and_reported(image_folder, tmp_path):
    (image_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    summary = _run(image_folder, tmp_path / "out")
    assert summary.grounded == 5
    assert summary.skipped == [{"file": "broken.jpg", "reason": summary.skipped[0]["reason"]}]
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["skipped"][0]["file"] == "broken.jpg" and manifest["counts"]["skipped"] == 1
    with pytest.raises(InputError, match=r"broken\.jpg"):
        _run(image_folder, tmp_path / "strict", strict=True)


def test_rerun_resumes_and_changed_phrases_are_refused(image_folder, tmp_path):
    first = _run(image_folder, tmp_path / "out")
    before = (tmp_path / "out" / "annotations.json").read_bytes()
    again = _run(image_folder, tmp_path / "out")
    assert again.grounded == 0 and again.resumed == first.grounded
    assert (tmp_path / "out" / "annotations.json").read_bytes() == before
    config = GroundConfig(**{**vars(LOW)})
    with pytest.raises(InputError, match="another run"):
        ground([image_folder], ["cat"], out_dir=tmp_path / "out", model=_run.model, config=config)
    config = GroundConfig(**{**vars(LOW), "overwrite": True})
    ground([image_folder], ["cat"], out_dir=tmp_path / "out", model=_run.model, config=config)
    document = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [c["name"] for c in document["categories"]] == ["cat"]
    assert not (tmp_path / "out" / "crops" / "car").exists()


def test_workers_give_the_same_result(image_folder, tmp_path):
    _run(image_folder, tmp_path / "a", num_workers=0)
    _run(image_folder, tmp_path / "b", num_workers=2, batch_size=2)
    assert (tmp_path / "a" / "annotations.json").read_bytes() == (
        tmp_path / "b" / "annotations.json"
    ).read_bytes()


@pytest.mark.parametrize("num_phrases", [1, 3, 16])
def test_backbone_and_text_encoder_run_once_per_image_and_phrase(
    image_folder, tmp_path, monkeypatch, num_phrases
):
    from vgtool.models.vlgtr import VLGTR

    calls = {"images": 0, "phrases": 0}
    encode_image, encode_text = VLGTR.encode_image_features, VLGTR.encode_text_features

    def count_images(self, pixel_values):
        calls["images"] += len(pixel_values)
        return encode_image(self, pixel_values)

    def count_phrases(self, input_ids, attention_mask):
        calls["phrases"] += len(input_ids)
        return encode_text(self, input_ids, attention_mask)

    monkeypatch.setattr(VLGTR, "encode_image_features", count_images)
    monkeypatch.setattr(VLGTR, "encode_text_features", count_phrases)
    phrases = [f"phrase number {i}" for i in range(num_phrases)]
    config = GroundConfig(**{**vars(LOW), "batch_size": 2, "crops": False, "overlays": False})
    summary = ground([image_folder], phrases, out_dir=tmp_path / "out", model=_run.model, config=config)
    assert calls == {"images": 5, "phrases": num_phrases}
    document = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert {a["phrase"] for a in document["annotations"]} == set(phrases)
    assert summary.grounded == 5
