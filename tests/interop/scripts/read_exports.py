"""Read vgtool exports with the real annotation libraries and print what they see, as JSON.

Runs in its own environment (requirements-interop.txt: datumaro, supervision, label-studio-sdk),
without vgtool or torch. Usage: python read_exports.py EXPORTS_DIR, where EXPORTS_DIR holds the
exports the interop tests made: coco/, coco-sparse/ (category ids 2 and 3 only), voc/, yolo/,
yolo-link/ (images linked, not copied), labelme/, labelstudio/. It also writes coco-reexported/:
coco/ imported and exported again by datumaro (what CVAT hands back), for vgtool to read.

Output: {"<reader>": {"images": {<image path relative to its export folder>: [box, ...]},
"sizes": {<path>: [width, height]}, "error": null}, ...} with box = {"label", "xyxy",
"score", "phrase"} as far as the reader keeps them (null where it does not); a reader that fails
reports {"error": "<type>: <message>"}.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def _box(label: str, xyxy, score=None, phrase=None) -> dict[str, Any]:
    return {"label": label, "xyxy": [float(v) for v in xyxy], "score": score, "phrase": phrase}


def _number(value):
    return None if value is None else float(value)


def datumaro_reader(folder: Path, format_name: str, **kwargs) -> dict[str, Any]:
    """Import with datumaro; image paths relative to ``folder``; sizes as datumaro decodes them."""
    from datumaro.components.annotation import AnnotationType, Bbox
    from datumaro.components.dataset import Dataset

    dataset = Dataset.import_from(str(folder), format_name, **kwargs)
    labels = dataset.categories()[AnnotationType.label]
    images: dict[str, list] = {}
    sizes: dict[str, list[int]] = {}
    subsets: dict[str, str] = {}
    for item in dataset:
        path = Path(item.media.path).relative_to(folder).as_posix()
        height, width = item.media.data.shape[:2]  # decoded pixels, as datumaro sees them
        sizes[path] = [width, height]
        subsets[path] = item.subset
        images[path] = [
            _box(
                labels[ann.label].name,
                [ann.x, ann.y, ann.x + ann.w, ann.y + ann.h],
                _number(ann.attributes.get("score")),
                ann.attributes.get("phrase"),
            )
            for ann in item.annotations
            if isinstance(ann, Bbox)
        ]
    return {"images": images, "sizes": sizes, "subsets": subsets}


def _supervision_dataset(dataset, folder: Path) -> dict[str, Any]:
    images: dict[str, list] = {}
    for path, detections in dataset.annotations.items():
        confidence = detections.confidence
        images[Path(path).resolve().relative_to(folder.resolve()).as_posix()] = [
            _box(
                dataset.classes[int(class_id)],
                xyxy,
                None if confidence is None else float(confidence[i]),
                None,
            )
            for i, (xyxy, class_id) in enumerate(zip(detections.xyxy, detections.class_id, strict=True))
        ]
    return images


def supervision_yolo(folder: Path) -> dict[str, Any]:
    import supervision as sv

    images: dict[str, list] = {}
    for subset in sorted(p.name for p in (folder / "images").iterdir()):
        dataset = sv.DetectionDataset.from_yolo(
            images_directory_path=str(folder / "images" / subset),
            annotations_directory_path=str(folder / "labels" / subset),
            data_yaml_path=str(folder / "data.yaml"),
        )
        images.update(_supervision_dataset(dataset, folder))
    return {"images": images}


def supervision_voc(folder: Path) -> dict[str, Any]:
    import supervision as sv

    dataset = sv.DetectionDataset.from_pascal_voc(
        images_directory_path=str(folder / "JPEGImages"),
        annotations_directory_path=str(folder / "Annotations"),
    )
    return {"images": _supervision_dataset(dataset, folder)}


def supervision_coco(folder: Path) -> dict[str, Any]:
    import supervision as sv

    images: dict[str, list] = {}
    for annotations_path in sorted((folder / "annotations").glob("instances_*.json")):
        subset = annotations_path.stem.removeprefix("instances_")
        dataset = sv.DetectionDataset.from_coco(
            images_directory_path=str(folder / "images" / subset), annotations_path=str(annotations_path)
        )
        images.update(_supervision_dataset(dataset, folder))
    return {"images": images}


def supervision_labelme(folder: Path) -> dict[str, Any]:
    import supervision as sv

    images: dict[str, list] = {}
    for directory in sorted({p.parent for p in (folder / "images").rglob("*.json")}):
        dataset = sv.DetectionDataset.from_labelme(
            images_directory_path=str(directory), annotations_directory_path=str(directory)
        )
        images.update(_supervision_dataset(dataset, folder))
    return {"images": images}


def labelstudio_sdk(folder: Path) -> dict[str, Any]:
    """Validate the config and every task's prediction with the SDK's LabelInterface, and read the
    regions back as the SDK's own validation accepted them."""
    from label_studio_sdk.label_interface import LabelInterface

    interface = LabelInterface((folder / "labeling_config.xml").read_text(encoding="utf-8"))
    interface.validate()
    value_names = [obj.value_name for obj in interface.objects if obj.value_is_variable]
    errors: list[str] = []
    images: dict[str, list] = {}
    for task in json.loads((folder / "tasks.json").read_text(encoding="utf-8")):
        name = task["data"]["file_name"]
        errors += [f"{name}: no data.{v}" for v in value_names if task["data"].get(v) is None]
        boxes = []
        for prediction in task["predictions"]:
            errors += [f"{name}: {e}" for e in interface.validate_prediction(prediction, return_errors=True)]
            results = prediction["result"]
            phrases = {r["id"]: r["value"]["text"][0] for r in results if r["type"] == "textarea"}
            for r in results:
                if r["type"] != "rectanglelabels":
                    continue
                v, width, height = r["value"], r["original_width"], r["original_height"]
                xyxy = [
                    v["x"] * width / 100,
                    v["y"] * height / 100,
                    (v["x"] + v["width"]) * width / 100,
                    (v["y"] + v["height"]) * height / 100,
                ]
                boxes.append(_box(v["rectanglelabels"][0], xyxy, r["score"], phrases.get(r["id"])))
        images[name] = boxes
    labels = sorted(label for control in interface.controls for label in (control.labels or []))
    return {"images": images, "errors": errors, "labels": labels}


READERS = {
    "datumaro_coco": lambda root: datumaro_reader(root / "coco", "coco_instances"),
    "datumaro_coco_sparse_ids": lambda root: datumaro_reader(root / "coco-sparse", "coco_instances"),
    "datumaro_voc": lambda root: datumaro_reader(
        root / "voc", "voc_detection", coordinate_mode="voc-one-based"
    ),
    "datumaro_voc_default_mode": lambda root: datumaro_reader(root / "voc", "voc_detection"),
    "datumaro_yolo": lambda root: datumaro_reader(root / "yolo", "yolo"),
    "datumaro_yolo_link": lambda root: datumaro_reader(root / "yolo-link", "yolo"),
    "datumaro_yolo_detected": lambda root: {"format": _detect(root / "yolo")},
    "supervision_yolo": lambda root: supervision_yolo(root / "yolo"),
    "supervision_voc": lambda root: supervision_voc(root / "voc"),
    "supervision_coco": lambda root: supervision_coco(root / "coco"),
    "supervision_coco_sparse_ids": lambda root: supervision_coco(root / "coco-sparse"),
    "supervision_labelme": lambda root: supervision_labelme(root / "labelme"),
    "labelstudio_sdk": lambda root: labelstudio_sdk(root / "labelstudio"),
}


def _detect(folder: Path) -> list[str]:
    from datumaro.components.environment import Environment

    return sorted(Environment().detect_dataset(str(folder)))


def datumaro_reexport(root: Path) -> dict[str, Any]:
    """What CVAT hands back: the coco/ export imported by datumaro and exported again with its own
    COCO exporter (images saved) to ``coco-reexported/``, for vgtool's dataset reader to read."""
    from datumaro.components.dataset import Dataset

    out = root / "coco-reexported"
    Dataset.import_from(str(root / "coco"), "coco_instances").export(
        str(out), "coco_instances", save_media=True
    )
    return {"files": sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())}


def main() -> None:
    root = Path(sys.argv[1])
    report: dict[str, Any] = {}
    try:
        report["datumaro_reexport"] = {**datumaro_reexport(root), "error": None}
    except Exception as err:
        report["datumaro_reexport"] = {
            "error": f"{type(err).__name__}: {err}",
            "trace": traceback.format_exc(limit=4),
        }
    for name, reader in READERS.items():
        try:
            report[name] = {**reader(root), "error": None}
        except Exception as err:  # reported, so that one reader's failure does not hide the others
            report[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=4)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
