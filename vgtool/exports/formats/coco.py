"""COCO in the layout datumaro (hence CVAT's "COCO 1.0") imports: ``annotations/instances_<subset>.json``
with the images under ``images/<subset>/``.

Folders are kept (``file_name`` ``sub/a.jpg`` -> ``images/train/sub/a.jpg``); only same-stem files
are renamed, since datumaro takes the path without extension as an item's id. Each annotation has
``segmentation: []`` (without it datumaro warns once per box), ``score`` and
``attributes: {"phrase", "score"}`` (datumaro keeps keys inside ``attributes`` and drops other
extra keys). Image, annotation and category ids are the run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vgtool.exports.plan import ExportItem, ExportPlan
from vgtool.exports.run import RunBox

BBOX_DECIMALS = 2


def coco_record(box: RunBox, image_id: int) -> dict[str, Any]:
    """One COCO annotation carrying vgtool's phrase and score as attributes."""
    x, y, w, h = (round(v, BBOX_DECIMALS) for v in box.bbox_xywh)
    return {
        "id": box.annotation_id,
        "image_id": image_id,
        "category_id": box.category_id,
        "bbox": [x, y, w, h],
        "area": round(w * h, BBOX_DECIMALS),
        "iscrowd": 0,
        "segmentation": [],
        "score": box.score,
        "attributes": {"phrase": box.phrase, "score": box.score},
    }


def coco_document(plan: ExportPlan, items: tuple[ExportItem, ...]) -> dict[str, Any]:
    """The ``instances_<subset>.json`` document of ``items``."""
    return {
        "info": {"description": "vgtool grounding results", "model": plan.run.model_version},
        "licenses": [],
        "categories": [
            {"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in plan.categories
        ],
        "images": [
            {"id": i.image.image_id, "file_name": i.name, "width": i.image.width, "height": i.image.height}
            for i in items
        ],
        "annotations": [coco_record(box, i.image.image_id) for i in items for box in i.image.boxes],
    }


class CocoFormat:
    name = "coco"
    layout = "tree"
    summary = "COCO as datumaro and CVAT import it: annotations/instances_<subset>.json, images/<subset>/"

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.subset}/{item.name}"

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        written: dict[str, list[str]] = {}
        (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
        for subset in plan.subsets:
            items = plan.subset_items(subset)
            relative = f"annotations/instances_{subset}.json"
            document = coco_document(plan, items)
            (out_dir / relative).write_text(json.dumps(document, ensure_ascii=False) + "\n", encoding="utf-8")
            written.update({item.image.file_name: [relative] for item in items})
            (out_dir / "images" / subset).mkdir(parents=True, exist_ok=True)
        return written
