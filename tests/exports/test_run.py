"""Reading a finished run folder: the real pipeline's output, and the ways a folder can be bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.exports.conftest import EMPTY, PHRASES, expected_boxes
from vgtool.errors import InputError
from vgtool.exports.run import FinishedRun, load_run


def test_a_pipeline_run_reads_back_whole(grounded_run: Path):
    run = load_run(grounded_run)
    expected = expected_boxes(grounded_run)
    assert isinstance(run, FinishedRun)
    assert [image.file_name for image in run.images] == list(expected)
    assert run.image_root == grounded_run.parent / "images"
    assert [c.name for c in run.categories] == ["car", "dog", "tree"]
    assert run.phrases == tuple(tuple(p.split("=")) if "=" in p else (p, p) for p in PHRASES)
    assert run.model_version == "fake-varied-1"
    assert [s["file"] for s in run.skipped] == ["broken.jpg"]
    names = run.category_names
    for image in run.images:
        got = [(names[b.category_id], b.bbox_xywh, b.score, b.phrase) for b in image.boxes]
        assert got == expected[image.file_name]
    assert not next(i for i in run.images if i.file_name == EMPTY).boxes
    assert len({b.score for i in run.images for b in i.boxes}) > 5  # scores vary


def test_images_overrides_the_image_root(grounded_run: Path, tmp_path: Path):
    assert load_run(grounded_run, image_root=tmp_path).image_root == tmp_path


def test_a_long_hub_revision_is_shortened_for_model_version(tmp_path: Path, grounded_run: Path):
    run = load_run(grounded_run)
    hub = FinishedRun(**{**run.__dict__, "model": "hf:org/model@" + "a" * 40})
    assert hub.model_version == "hf:org/model@" + "a" * 12


def _copy_run(grounded_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(grounded_run, run)
    return run


def _edit_annotations(run: Path, edit) -> None:
    path = run / "annotations.json"
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))


def test_old_files_without_attributes_and_with_sparse_category_ids_read(grounded_run: Path, tmp_path: Path):
    run = _copy_run(grounded_run, tmp_path)

    def old_style(coco):
        for ann in coco["annotations"]:
            ann.pop("attributes", None)
            ann.pop("segmentation", None)
            ann["category_id"] *= 10
        for category in coco["categories"]:
            category["id"] *= 10

    _edit_annotations(run, old_style)
    loaded = load_run(run)
    assert [c.id for c in loaded.categories] == [10, 20, 30]
    expected = expected_boxes(grounded_run)
    for image in loaded.images:
        assert [(b.score, b.phrase) for b in image.boxes] == [
            (s, p) for _, _, s, p in expected[image.file_name]
        ]


def _remove(name):
    return lambda run: (run / name).unlink()


def _write(name, text):
    return lambda run: (run / name).write_text(text)


def _annotations(edit):
    return lambda run: _edit_annotations(run, edit)


BAD_RUNS = [
    (_remove("annotations.json"), r"annotations\.json: missing; not a finished vgtool run"),
    (_remove("run.json"), r"run\.json: missing"),
    (_remove("run-key.json"), r"run-key\.json: missing"),
    (_write("annotations.json", "{not json"), r"annotations\.json: not JSON"),
    (_write("annotations.json", "[]"), r"annotations\.json: not a COCO file"),
    (_write("run-key.json", '{"phrases": []}'), r"run-key\.json: no 'model'"),
    (_annotations(lambda c: c["annotations"][0].pop("bbox")), r"annotation #1: no 'bbox' field"),
    (_annotations(lambda c: c["annotations"][1].update(category_id=99)), r"annotation #2: category_id 99"),
    (_annotations(lambda c: c["annotations"][0].update(image_id=99)), r"annotation #1: image_id 99"),
    (_annotations(lambda c: c["annotations"][0].update(bbox=[0, 0, -1, 2])), r"negative width"),
    (_annotations(lambda c: c["annotations"][0].update(bbox=[0, 0, 1])), r"bbox is not \[x, y, w, h\]"),
    (_annotations(lambda c: c["images"][0].pop("width")), r"images: no 'width' field"),
    (
        _annotations(lambda c: c["images"][0].update(file_name="../x.jpg")),
        r"'\.\./x\.jpg' is not a plain relative",
    ),
    (
        _annotations(lambda c: c["images"][0].update(file_name="/etc/x.jpg")),
        r"'/etc/x\.jpg' is not a plain relative",
    ),
    (
        _annotations(lambda c: c["images"][1].update(file_name=c["images"][0]["file_name"])),
        r"share a file_name",
    ),
]


@pytest.mark.parametrize(("spoil", "message"), BAD_RUNS)
def test_a_bad_run_is_one_clear_line(grounded_run: Path, tmp_path: Path, spoil, message):
    run = _copy_run(grounded_run, tmp_path)
    spoil(run)
    with pytest.raises(InputError, match=message) as err:
        load_run(run)
    assert "\n" not in str(err.value)


def test_a_missing_folder_is_named(tmp_path: Path):
    with pytest.raises(InputError, match="no such run folder"):
        load_run(tmp_path / "nowhere")
