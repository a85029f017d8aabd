"""Every format exported from a real run and read back by hand: same boxes, classes, scores and
phrases as the run's annotations.json; images placed as asked; the output folder handled safely."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

from tests.exports.conftest import EMPTY, IMAGES, ROTATED, expected_boxes
from vgtool.datasets.odvg import load_odvg
from vgtool.errors import InputError
from vgtool.exports import ExportOptions, export_labels
from vgtool.exports.images import ORIENTATION_TAG

# (class, [x0, y0, x1, y1] pixels, score or None, phrase or None) per box, per run file name
Boxes = dict[str, list[tuple[str, list[float], float | None, str | None]]]


def _expected(run_dir: Path, *, score=True, phrase=True) -> Boxes:
    return {
        name: sorted(
            (c, [x, y, x + w, y + h], s if score else None, p if phrase else None)
            for c, (x, y, w, h), s, p in boxes
        )
        for name, boxes in expected_boxes(run_dir).items()
    }


def _assert_same(got: Boxes, expected: Boxes, tolerance: float) -> None:
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        mine = sorted(got[name])
        assert [(c, s, p) for c, _, s, p in mine] == [(c, s, p) for c, _, s, p in boxes], name
        for (_, box, _, _), (_, want, _, _) in zip(mine, boxes, strict=True):
            assert box == pytest.approx(want, abs=tolerance), name


def _manifest(out: Path) -> dict:
    return json.loads((out / "export.json").read_text())


def _export(run: Path, to: str, out: Path, **options) -> Path:
    export_labels(run, to=to, out=out, options=ExportOptions(**options), quiet=True)
    return out


def read_labelstudio(out: Path) -> Boxes:
    got: Boxes = {}
    for task in json.loads((out / "tasks.json").read_text()):
        results = task["predictions"][0]["result"]
        phrases = {r["id"]: r["value"]["text"][0] for r in results if r["type"] == "textarea"}
        got[task["data"]["file_name"]] = [
            (
                r["value"]["rectanglelabels"][0],
                [
                    r["value"]["x"] * r["original_width"] / 100,
                    r["value"]["y"] * r["original_height"] / 100,
                    (r["value"]["x"] + r["value"]["width"]) * r["original_width"] / 100,
                    (r["value"]["y"] + r["value"]["height"]) * r["original_height"] / 100,
                ],
                r["score"],
                phrases[r["id"]],
            )
            for r in results
            if r["type"] == "rectanglelabels"
        ]
    return got


def read_yolo(out: Path) -> Boxes:
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    got: Boxes = {}
    for record in _manifest(out)["images"]:
        with Image.open(out / record["image"]) as image:
            width, height = image.size
        boxes = []
        for line in (out / record["labels"][0]).read_text().splitlines():
            index, xc, yc, w, h, *conf = line.split()
            xc, yc, w, h = float(xc) * width, float(yc) * height, float(w) * width, float(h) * height
            boxes.append(
                (
                    names[int(index)],
                    [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2],
                    float(conf[0]) if conf else None,
                    None,
                )
            )
        got[record["file_name"]] = boxes
    return got


def read_voc(out: Path) -> Boxes:
    got: Boxes = {}
    for record in _manifest(out)["images"]:
        root = ET.parse(out / record["labels"][0]).getroot()
        boxes = []
        for obj in root.iter("object"):
            xmin, ymin, xmax, ymax = (
                float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")
            )
            attributes = {a.findtext("name"): a.findtext("value") for a in obj.iter("attribute")}
            boxes.append(
                (
                    obj.findtext("name"),
                    [xmin - 1, ymin - 1, xmax, ymax],
                    float(attributes["score"]),
                    attributes["phrase"],
                )
            )
        got[record["file_name"]] = boxes
    return got


def read_coco(out: Path) -> Boxes:
    file_names = {r["name"]: r["file_name"] for r in _manifest(out)["images"]}
    got: Boxes = {}
    for path in sorted((out / "annotations").glob("instances_*.json")):
        coco = json.loads(path.read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        images = {i["id"]: file_names[i["file_name"]] for i in coco["images"]}
        got.update({name: [] for name in images.values()})
        for a in coco["annotations"]:
            x, y, w, h = a["bbox"]
            got[images[a["image_id"]]].append(
                (
                    names[a["category_id"]],
                    [x, y, x + w, y + h],
                    a["attributes"]["score"],
                    a["attributes"]["phrase"],
                )
            )
    return got


def read_labelme(out: Path) -> Boxes:
    got: Boxes = {}
    for record in _manifest(out)["images"]:
        document = json.loads((out / record["labels"][0]).read_text())
        assert (out / record["labels"][0]).parent / document["imagePath"] == out / "images" / record["name"]
        got[record["file_name"]] = [
            (s["label"], [*s["points"][0], *s["points"][1]], s["score"], s["description"])
            for s in document["shapes"]
        ]
    return got


def read_odvg(out: Path) -> Boxes:
    got: Boxes = {}
    for path in sorted(out.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            grounding = record["grounding"]
            boxes = []
            for region in grounding["regions"]:
                ((start, end),) = region["tokens_positive"]
                assert grounding["caption"][start:end] == region["phrase"]
                boxes.append((None, region["bbox"], region["score"], region["phrase"]))
            got[record["filename"]] = boxes
    return got


READERS = {
    "labelstudio": (read_labelstudio, {}, 1e-4),
    "yolo": (read_yolo, {"phrase": False, "score": False}, 1e-4),
    "voc": (read_voc, {}, 0.5),
    "coco": (read_coco, {}, 1e-9),
    "labelme": (read_labelme, {}, 1e-9),
}


@pytest.mark.parametrize("to", sorted(READERS))
def test_each_format_holds_the_runs_boxes(grounded_run: Path, tmp_path: Path, to: str):
    reader, keep, tolerance = READERS[to]
    out = _export(grounded_run, to, tmp_path / to)
    _assert_same(reader(out), _expected(grounded_run, **keep), tolerance)
    assert EMPTY in reader(out)  # an image without boxes is kept by default


def test_odvg_holds_the_runs_boxes_and_vgtool_reads_it_back(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "odvg", tmp_path / "odvg")
    expected = {
        name: [(None, box, s, p) for _, box, s, p in boxes] for name, boxes in _expected(grounded_run).items()
    }
    _assert_same(read_odvg(out), expected, 1e-9)
    samples = load_odvg(out / "train.jsonl", image_root=out / "images")
    for sample in samples:
        file_name = sample.image_path.relative_to(out / "images").as_posix()
        assert sample.image_path.is_file()
        want = sorted(box for _, box, _, p in expected[file_name] if p == sample.phrase)
        np.testing.assert_allclose(sorted(sample.boxes_xyxy.tolist()), want, atol=1e-3)
    phrases_seen = {(s.image_path.relative_to(out / "images"), s.phrase) for s in samples}
    assert len(phrases_seen) == sum(len({p for *_, p in b}) for b in expected.values())


def test_yolo_confidence_column_and_split(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "yolo", tmp_path / "yolo", confidence=True, val_fraction=0.3, seed=3)
    _assert_same(read_yolo(out), _expected(grounded_run, phrase=False), 1e-4)
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "car", 1: "dog", 2: "tree"},
    }
    subsets = [r["subset"] for r in _manifest(out)["images"]]
    assert subsets.count("val") == 2 and subsets.count("train") == len(IMAGES) - 2
    for record in _manifest(out)["images"]:
        assert record["image"].startswith(f"images/{record['subset']}/")
        assert record["labels"] == [f"labels/{record['subset']}/{Path(record['name']).stem}.txt"]


def test_yolo_without_a_split_points_val_at_train(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "yolo", tmp_path / "yolo")
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["train"] == data["val"] == "images/train"
    assert (out / "labels/train" / "black.txt").read_text() == ""  # an empty image: an empty label file


def test_flat_formats_keep_same_stems_and_subfolders_apart(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "voc", tmp_path / "voc", images_mode="none")
    names = {r["file_name"]: r["name"] for r in _manifest(out)["images"]}
    assert names == {
        "a.jpg": "a_jpg.jpg",
        "a.png": "a_png.png",
        "black.png": "black.png",
        "rot.jpg": "rot.jpg",
        "sub1/a.jpg": "sub1__a.jpg",
        "sub2/a.jpg": "sub2__a.jpg",
        "with space/my photo.jpg": "with space__my photo.jpg",
    }
    stems = (out / "ImageSets/Main/train.txt").read_text().splitlines()
    assert sorted(stems) == sorted(Path(n).stem for n in names.values())
    assert json.loads((out / "dataset_meta.json").read_text()) == {"labels": ["car", "dog", "tree"]}


def test_copy_writes_rotated_images_upright_and_others_byte_for_byte(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "coco", tmp_path / "coco")
    root = grounded_run.parent / "images"
    records = {r["file_name"]: r for r in _manifest(out)["images"]}
    assert records["a.png"]["image"] == "images/train/a_png.png"
    for file_name, record in records.items():
        copy = out / record["image"]
        assert not copy.is_symlink()
        if file_name != ROTATED:
            assert copy.read_bytes() == (root / file_name).read_bytes()
    with Image.open(out / records[ROTATED]["image"]) as upright, Image.open(root / ROTATED) as original:
        assert upright.getexif().get(ORIENTATION_TAG) is None
        turned = ImageOps.exif_transpose(original)
        assert upright.size == turned.size == (50, 80)
        difference = [
            abs(a - b)
            for a, b in zip(upright.convert("L").getdata(), turned.convert("L").getdata(), strict=True)
        ]
        assert sum(difference) / len(difference) < 8  # re-encoded JPEG


def test_link_mode_links_and_warns_once_about_rotated_images(grounded_run: Path, tmp_path: Path, capsys):
    (result,) = export_labels(
        grounded_run, to="labelme", out=tmp_path / "lm", options=ExportOptions(images_mode="link"), quiet=True
    )
    assert result.linked_turned == 1 and result.upright == 0
    image = tmp_path / "lm" / "images" / "with space" / "my photo.jpg"
    assert (
        image.is_symlink()
        and image.resolve() == (grounded_run.parent / "images/with space/my photo.jpg").resolve()
    )
    errors = capsys.readouterr().err
    assert (
        errors.count("warning:") == 1
        and "1 linked image(s) carry an EXIF orientation (first: rot.jpg)" in errors
    )


def test_none_mode_writes_labels_only(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "labelstudio", tmp_path / "ls", images_mode="none")
    assert not (out / "images").exists()
    assert all(r["image"] is None for r in _manifest(out)["images"])
    _assert_same(read_labelstudio(out), _expected(grounded_run), 1e-4)


def test_labelstudio_task_schema(grounded_run: Path, tmp_path: Path):
    out = _export(
        grounded_run, "labelstudio", tmp_path / "ls", url_prefix="s3://bucket/photos/", images_mode="none"
    )
    tasks = {t["data"]["file_name"]: t for t in json.loads((out / "tasks.json").read_text())}
    task = tasks["with space/my photo.jpg"]
    assert task["data"] == {
        "image": "s3://bucket/photos/with%20space/my%20photo.jpg",
        "file_name": "with space/my photo.jpg",
        "phrases": ["red car", "blue car", "dog", "tall tree"],
    }
    (prediction,) = task["predictions"]
    scores = [r["score"] for r in prediction["result"] if r["type"] == "rectanglelabels"]
    assert prediction["model_version"] == "fake-varied-1"
    assert prediction["score"] == pytest.approx(sum(scores) / len(scores), abs=1e-4)
    assert tasks[EMPTY]["predictions"][0] == {"model_version": "fake-varied-1", "score": 0, "result": []}
    assert [r["id"] for r in prediction["result"]] == [
        f"vg{i}" for i in sorted({int(r["id"][2:]) for r in prediction["result"]}) for _ in "lt"
    ]
    # Label Studio serves local files only from a storage folder strictly below its document root
    # (a root-level image of the storage == document root gives 404): URLs name that folder too.
    default = _export(grounded_run, "labelstudio", tmp_path / "ls2", images_mode="none")
    root_name = json.loads((grounded_run / "run.json").read_text())["image_root"].rsplit("/", 1)[-1]
    for task in json.loads((default / "tasks.json").read_text()):
        assert task["data"]["image"] == "/data/local-files/?d=" + quote(
            f"{root_name}/{task['data']['file_name']}"
        )
    copied = _export(grounded_run, "labelstudio", tmp_path / "ls3")
    for task in json.loads((copied / "tasks.json").read_text()):
        served = unquote(task["data"]["image"].removeprefix("/data/local-files/?d="))
        assert served.startswith("images/") and (copied / served).is_file()


def test_labelstudio_export_reads_back_with_the_labelstudio_reader(grounded_run: Path, tmp_path: Path):
    reader = pytest.importorskip("vgtool.datasets.labelstudio")
    out = _export(grounded_run, "labelstudio", tmp_path / "ls")
    tasks = json.loads((out / "tasks.json").read_text())
    for task in tasks:  # as if an annotator accepted every prediction
        task["annotations"] = [{"result": task["predictions"][0]["result"], "was_cancelled": False}]
    (out / "reviewed.json").write_text(json.dumps(tasks))
    samples = reader.load_labelstudio(out / "reviewed.json", None, out / "images")
    expected = _expected(grounded_run)
    for sample in samples:
        file_name = sample.image_path.relative_to(out / "images").as_posix()
        want = sorted(box for _, box, _, p in expected[file_name] if p == sample.phrase)
        np.testing.assert_allclose(sorted(sample.boxes_xyxy.tolist()), want, atol=1e-3)
    assert {s.phrase for s in samples} == {"red car", "blue car", "dog", "tall tree"}


def test_options_shape_every_format(grounded_run: Path, tmp_path: Path):
    options = {"min_score": 0.5, "classes": ("dog", "tree"), "keep_empty": False}
    expected = {
        name: [b for b in boxes if b[2] >= 0.5 and b[0] in ("dog", "tree")]
        for name, boxes in _expected(grounded_run).items()
    }
    expected = {name: boxes for name, boxes in expected.items() if boxes}
    for to, (reader, keep, tolerance) in READERS.items():
        out = _export(
            grounded_run, to, tmp_path / to, images_mode="none" if to != "yolo" else "copy", **options
        )
        want = {
            n: [
                (c, box, s if keep.get("score", True) else None, p if keep.get("phrase", True) else None)
                for c, box, s, p in b
            ]
            for n, b in expected.items()
        }
        _assert_same(reader(out), want, tolerance)
        manifest = _manifest(out)
        assert manifest["options"]["classes"] == ["dog", "tree"] and manifest["options"]["min_score"] == 0.5
        assert [c["name"] for c in manifest["categories"]] == ["dog", "tree"]
        assert manifest["counts"]["skipped_by_run"] == 1


def test_several_formats_go_to_one_folder_each(grounded_run: Path, tmp_path: Path):
    results = export_labels(
        grounded_run,
        to=["yolo", "coco"],
        out=tmp_path / "all",
        options=ExportOptions(images_mode="none"),
        quiet=True,
    )
    assert [r.out_dir for r in results] == [tmp_path / "all" / "yolo", tmp_path / "all" / "coco"]
    assert all((r.out_dir / "export.json").is_file() for r in results)


def test_default_out_is_inside_the_run(grounded_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(grounded_run, run)
    (result,) = export_labels(run, to="odvg", options=ExportOptions(images_mode="none"), quiet=True)
    assert result.out_dir == run / "exports" / "odvg" and (result.out_dir / "train.jsonl").is_file()


def test_an_existing_folder_is_replaced_only_when_it_is_an_export(grounded_run: Path, tmp_path: Path):
    out = _export(grounded_run, "yolo", tmp_path / "yolo", images_mode="none")
    with pytest.raises(InputError, match=r"not empty \(--overwrite replaces an earlier export\)"):
        _export(grounded_run, "yolo", out)
    export_labels(
        grounded_run,
        to="yolo",
        out=out,
        options=ExportOptions(images_mode="none", classes=("dog",)),
        overwrite=True,
        quiet=True,
    )
    assert _manifest(out)["options"]["classes"] == ["dog"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(
        InputError, match=r"not an earlier export \(no export\.json\); refusing to replace it"
    ):
        export_labels(grounded_run, to="yolo", out=precious, overwrite=True, quiet=True)
    assert (precious / "thesis.txt").read_text() == "years of work"


def test_moved_images_are_found_with_images_and_otherwise_named(grounded_run: Path, tmp_path: Path):
    moved = tmp_path / "moved"
    shutil.copytree(grounded_run.parent / "images", moved)
    run = tmp_path / "run"
    shutil.copytree(grounded_run, run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["image_root"] = str(tmp_path / "gone")
    (run / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"image not found \(pass --images with the folder the run read\)"):
        export_labels(run, to="voc", out=tmp_path / "voc", quiet=True)
    assert not (tmp_path / "voc").exists()  # a failed export leaves nothing behind
    export_labels(run, to="voc", out=tmp_path / "voc", images=moved, quiet=True)
    assert len(list((tmp_path / "voc" / "JPEGImages").iterdir())) == len(IMAGES)


def test_an_image_of_another_size_is_refused(grounded_run: Path, tmp_path: Path):
    images = tmp_path / "images"
    shutil.copytree(grounded_run.parent / "images", images)
    Image.new("RGB", (10, 10)).save(images / "a.png")
    with pytest.raises(InputError, match=r"a\.png: is 10x10 but the run labelled a 56x40 image"):
        export_labels(grounded_run, to="labelme", out=tmp_path / "lm", images=images, quiet=True)


def test_a_run_without_image_root_needs_images_unless_labels_only(grounded_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(grounded_run, run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["image_root"] = None
    (run / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"has no image_root .*pass --images DIR, or --images-mode none"):
        export_labels(run, to="coco", out=tmp_path / "coco", quiet=True)
    export_labels(
        run, to="coco", out=tmp_path / "coco", options=ExportOptions(images_mode="none"), quiet=True
    )
