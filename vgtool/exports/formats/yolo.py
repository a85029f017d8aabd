"""YOLO in the ultralytics layout: ``images/<subset>/``, ``labels/<subset>/<stem>.txt``, ``data.yaml``.

A label line is ``class x_center y_center width height [confidence]``, normalised to the displayed
image size, class numbers 0..C-1 in category order. Images are flattened (``sub/a.jpg`` ->
``sub__a.jpg``), since readers pair an image and its label file by stem within one folder. An
image without boxes gets an empty label file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from vgtool.exports.geometry import BoxXYXY, clip_xyxy
from vgtool.exports.naming import label_name
from vgtool.exports.plan import ExportItem, ExportPlan
from vgtool.exports.run import RunBox
from vgtool.exports.subsets import TRAIN, VAL

DECIMALS = 6


def yolo_box(box_xyxy: BoxXYXY, width: int, height: int) -> list[float]:
    """Pixel ``[x0, y0, x1, y1]`` -> ``[x_center, y_center, w, h]`` in ``[0, 1]``, clipped to the image."""
    x0, y0, x1, y1 = clip_xyxy(box_xyxy, width, height)
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def yolo_line(box: RunBox, class_index: int, width: int, height: int, *, confidence: bool) -> str:
    """One label line; fixed-point numbers (some readers refuse exponents)."""
    fields = [str(class_index), *(f"{v:.{DECIMALS}f}" for v in yolo_box(box.box_xyxy, width, height))]
    if confidence:
        fields.append(f"{box.score:.4f}")
    return " ".join(fields)


def data_yaml(plan: ExportPlan, root: Path) -> str:
    """``data.yaml``: dataset root, subset image folders (``val`` is ``train`` without a split) and
    ``names`` as ``{index: name}``."""
    val = VAL if VAL in plan.subsets else TRAIN
    document = {
        "path": str(root),
        "train": f"images/{TRAIN}",
        "val": f"images/{val}",
        "names": {i: c.name for i, c in enumerate(plan.categories)},
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


class YoloFormat:
    name = "yolo"
    layout = "flat"
    summary = "ultralytics YOLO: images/<subset>/, labels/<subset>/*.txt, data.yaml"

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.subset}/{item.name}"

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        index = plan.class_index
        written: dict[str, list[str]] = {}
        for item in plan.items:
            image = item.image
            lines = [
                yolo_line(
                    b, index[b.category_id], image.width, image.height, confidence=plan.options.confidence
                )
                for b in image.boxes
            ]
            relative = label_name(f"labels/{item.subset}/{item.name}", ".txt")
            path = out_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            written[image.file_name] = [relative]
        for subset in plan.subsets:  # an empty subset still has its folders
            (out_dir / "images" / subset).mkdir(parents=True, exist_ok=True)
            (out_dir / "labels" / subset).mkdir(parents=True, exist_ok=True)
        (out_dir / "data.yaml").write_text(data_yaml(plan, out_dir.resolve()), encoding="utf-8")
        return written
