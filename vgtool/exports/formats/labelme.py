"""LabelMe / X-AnyLabeling: one JSON per image, beside (a copy of) the image, under ``images/``.

Folders are kept; only same-stem files are renamed (both would want ``<stem>.json``). Open
``images/`` in the tool; ``export.json`` stays outside it, since readers such as supervision take
every ``.json`` in the folder for an annotation. A box is a
``rectangle`` shape with two corner points ``[[x0, y0], [x1, y1]]`` in displayed pixels, its class
as ``label``, its score as ``score`` (X-AnyLabeling shows it) and its phrase as ``description``.
``imagePath`` is the image's file name (the JSON sits beside it); ``imageData`` is null.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from vgtool.exports.naming import label_name
from vgtool.exports.plan import ExportItem, ExportPlan
from vgtool.exports.run import RunBox

LABELME_VERSION = "5.5.0"
POINT_DECIMALS = 2


def labelme_shape(box: RunBox, class_name: str) -> dict[str, Any]:
    """One ``rectangle`` shape."""
    x0, y0, x1, y1 = (round(v, POINT_DECIMALS) for v in box.box_xyxy)
    return {
        "label": class_name,
        "score": box.score,
        "points": [[x0, y0], [x1, y1]],
        "group_id": None,
        "description": box.phrase,
        "difficult": False,
        "shape_type": "rectangle",
        "flags": {},
        "attributes": {},
    }


def labelme_document(item: ExportItem, class_names: dict[int, str]) -> dict[str, Any]:
    """The JSON document of one image."""
    image = item.image
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": [labelme_shape(b, class_names[b.category_id]) for b in image.boxes],
        "imagePath": PurePosixPath(item.name).name,
        "imageData": None,
        "imageHeight": image.height,
        "imageWidth": image.width,
    }


class LabelMeFormat:
    name = "labelme"
    layout = "tree"
    summary = "LabelMe / X-AnyLabeling: images/ with one <stem>.json beside each image"

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.name}"

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        names = {c.id: c.name for c in plan.categories}
        written: dict[str, list[str]] = {}
        for item in plan.items:
            relative = label_name(f"images/{item.name}", ".json")
            path = out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            document = labelme_document(item, names)
            path.write_text(json.dumps(document, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            written[item.image.file_name] = [relative]
        return written
