"""The real annotation libraries read vgtool's exports: datumaro (CVAT's dataset layer),
supervision and label-studio-sdk, in their own environment (``make test`` builds
``.venv-interop`` from requirements-interop.txt; set ``VGTOOL_INTEROP_PYTHON`` to its python).

One script (scripts/read_exports.py) loads every export with the libraries and prints what they
see; each test compares one reader with the run's own annotations.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.exports.conftest import IMAGES, ROTATED, expected_boxes
from vgtool.exports import ExportOptions, export_labels

SCRIPT = Path(__file__).parent / "scripts" / "read_exports.py"
PYTHON_VARIABLE, REQUIRE_VARIABLE = "VGTOOL_INTEROP_PYTHON", "VGTOOL_REQUIRE_INTEROP"


def _interop_python() -> str:
    python = os.environ.get(PYTHON_VARIABLE)
    if python and Path(python).is_file():
        return python
    reason = f"{PYTHON_VARIABLE} is unset" if not python else f"{PYTHON_VARIABLE}={python} does not exist"
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_VARIABLE}=1 (make test builds .venv-interop)")
    pytest.skip(f"{reason}: the annotation-library checks need the interop environment (make test builds it)")


@pytest.fixture(scope="module")
def interop_python() -> str:
    return _interop_python()


@pytest.fixture(scope="module")
def exports(interop_python: str, grounded_run: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("interop")
    split = {"val_fraction": 0.3, "seed": 1}
    export_labels(
        grounded_run,
        to=["coco", "voc", "yolo", "labelme"],
        out=root,
        options=ExportOptions(**split),
        quiet=True,
    )
    export_labels(
        grounded_run,
        to="coco",
        out=root / "coco-sparse",
        options=ExportOptions(classes=("dog", "tree")),
        quiet=True,
    )
    export_labels(
        grounded_run,
        to="yolo",
        out=root / "yolo-link",
        options=ExportOptions(images_mode="link", **split),
        quiet=True,
    )
    export_labels(
        grounded_run,
        to="labelstudio",
        out=root / "labelstudio",
        options=ExportOptions(images_mode="none"),
        quiet=True,
    )
    return root


@pytest.fixture(scope="module")
def seen(interop_python: str, exports: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run(
        [interop_python, str(SCRIPT), str(exports)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"interop readers: {time.perf_counter() - started:.1f} s")
    return json.loads(result.stdout)


def _by_file_name(report: dict, export: Path) -> dict[str, list]:
    """The reader's boxes keyed by run file name (via export.json's image paths)."""
    assert report["error"] is None, report.get("trace") or report["error"]
    file_names = {
        r["image"]: r["file_name"] for r in json.loads((export / "export.json").read_text())["images"]
    }
    return {file_names.get(path, path): boxes for path, boxes in report["images"].items()}


def _compare(
    got: dict[str, list], run: Path, *, tolerance: float, score: bool, phrase: bool, classes=None
) -> None:
    expected = {
        name: [b for b in boxes if classes is None or b[0] in classes]
        for name, boxes in expected_boxes(run).items()
    }
    assert sorted(got) == sorted(expected)
    for name, boxes in expected.items():
        want = sorted((c, [x, y, x + w, y + h], s, p) for c, (x, y, w, h), s, p in boxes)
        mine = sorted((b["label"], b["xyxy"], b["score"], b["phrase"]) for b in got[name])
        assert [m[0] for m in mine] == [w[0] for w in want], name
        for m, w in zip(mine, want, strict=True):
            assert m[1] == pytest.approx(w[1], abs=tolerance), name
            assert (float(m[2]) if score else m[2]) == (w[2] if score else None), name
            assert m[3] == (w[3] if phrase else None), name


def _sizes_are_displayed(report: dict, export: Path, run: Path) -> None:
    sizes = _by_file_name({**report, "images": report["sizes"]}, export)
    coco = json.loads((run / "annotations.json").read_text())
    assert sizes == {i["file_name"]: [i["width"], i["height"]] for i in coco["images"]}


def test_datumaro_imports_the_coco_layout_with_phrase_and_score(seen, exports, grounded_run):
    report = seen["datumaro_coco"]
    _compare(_by_file_name(report, exports / "coco"), grounded_run, tolerance=0.01, score=True, phrase=True)
    _sizes_are_displayed(report, exports / "coco", grounded_run)  # the EXIF image decodes upright
    manifest = json.loads((exports / "coco" / "export.json").read_text())
    assert report["subsets"] == {r["image"]: r["subset"] for r in manifest["images"]}
    assert set(report["subsets"].values()) == {"train", "val"}


def test_datumaro_imports_voc_one_based_with_phrase_and_score(seen, exports, grounded_run):
    report = seen["datumaro_voc"]
    _compare(_by_file_name(report, exports / "voc"), grounded_run, tolerance=0.5, score=True, phrase=True)
    _sizes_are_displayed(report, exports / "voc", grounded_run)


def test_datumaro_default_voc_mode_reads_the_one_based_corner_as_zero_based(seen, exports):
    one_based = _by_file_name(seen["datumaro_voc"], exports / "voc")
    default = _by_file_name(seen["datumaro_voc_default_mode"], exports / "voc")
    for name, boxes in one_based.items():
        for a, b in zip(boxes, default[name], strict=True):
            assert b["xyxy"] == pytest.approx([a["xyxy"][0] + 1, a["xyxy"][1] + 1, *a["xyxy"][2:]])


def test_datumaro_imports_yolo_train_and_val(seen, exports, grounded_run):
    report = seen["datumaro_yolo"]
    _compare(_by_file_name(report, exports / "yolo"), grounded_run, tolerance=1e-3, score=False, phrase=False)
    _sizes_are_displayed(report, exports / "yolo", grounded_run)
    assert set(report["subsets"].values()) == {"train", "val"}
    assert seen["datumaro_yolo_detected"]["format"] == ["yolo"]


def test_datumaro_decodes_a_linked_exif_image_sideways(seen, exports):
    """Why copies of EXIF-rotated images are written upright: datumaro ignores the orientation."""
    sizes = _by_file_name(
        {**seen["datumaro_yolo_link"], "images": seen["datumaro_yolo_link"]["sizes"]}, exports / "yolo-link"
    )
    width, height, orientation = IMAGES[ROTATED]
    assert orientation == 6 and sizes[ROTATED] == [width, height]  # stored, not displayed (height, width)


def test_datumaro_keeps_sparse_category_ids_apart(seen, exports, grounded_run):
    report = seen["datumaro_coco_sparse_ids"]
    _compare(
        _by_file_name(report, exports / "coco-sparse"),
        grounded_run,
        tolerance=0.01,
        score=True,
        phrase=True,
        classes={"dog", "tree"},
    )


@pytest.mark.parametrize(
    ("reader", "export", "tolerance", "classes"),
    [
        ("supervision_yolo", "yolo", 1e-3, None),
        ("supervision_voc", "voc", 0.5, None),
        ("supervision_coco", "coco", 0.01, None),
        ("supervision_coco_sparse_ids", "coco-sparse", 0.01, {"dog", "tree"}),
        ("supervision_labelme", "labelme", 0.01, None),
    ],
)
def test_supervision_reads_boxes_and_classes_but_not_scores_or_phrases(
    seen, exports, grounded_run, reader, export, tolerance, classes
):
    got = _by_file_name(seen[reader], exports / export)
    _compare(got, grounded_run, tolerance=tolerance, score=False, phrase=False, classes=classes)


def test_label_studio_sdk_validates_config_and_every_prediction(seen, grounded_run):
    report = seen["labelstudio_sdk"]
    assert report["error"] is None, report.get("trace")
    assert report["errors"] == []
    assert report["labels"] == ["car", "dog", "tree"]
    _compare(report["images"], grounded_run, tolerance=1e-4, score=True, phrase=True)


def test_a_datumaro_reexport_reads_back_as_training_data(seen, exports, grounded_run):
    """Round trip: vgtool's coco export -> datumaro import and export (CVAT's dataset layer) ->
    vgtool's dataset reader: the same boxes, classes and phrases (phrases from the attributes)."""
    from vgtool.datasets.registry import DataConfig, load_samples

    assert seen["datumaro_reexport"]["error"] is None, seen["datumaro_reexport"].get("trace")
    manifest = json.loads((exports / "coco" / "export.json").read_text())
    file_names = {r["image"].split("/", 2)[-1]: r["file_name"] for r in manifest["images"]}
    got: dict[str, list] = {}
    for subset in ("train", "val"):
        for sample in load_samples(DataConfig(path=str(exports / "coco-reexported"), split=subset)):
            assert sample.image_path.is_file()
            name = sample.image_path.relative_to(exports / "coco-reexported" / "images" / subset).as_posix()
            for box in sample.boxes_xyxy.tolist():
                got.setdefault(file_names[name], []).append((sample.category, sample.phrase, box))
    expected: dict[str, list] = {}
    for name, boxes in expected_boxes(grounded_run).items():
        for c, (x, y, w, h), _, p in boxes:
            expected.setdefault(name, []).append((c, p, [x, y, x + w, y + h]))
    assert sorted(got) == sorted(name for name, boxes in expected.items() if boxes)
    for name, boxes in got.items():
        mine, want = sorted(boxes), sorted(expected[name])
        assert [(c, p) for c, p, _ in mine] == [(c, p) for c, p, _ in want], name
        for (_, _, m), (_, _, w) in zip(mine, want, strict=True):
            assert m == pytest.approx(w, abs=0.01), name
