"""Label Studio pre-annotations: ``tasks.json`` (a list of tasks) and ``labeling_config.xml``.

A task is ``{"data": {"image": <url_prefix + URL-quoted file_name>, "file_name", "phrases": [the
exported phrases]}, "predictions": [{"model_version", "score": <mean region score, 0 if none>,
"result": [...]}]}``. Each box is two results sharing the region id ``vg<annotation id>``: a
``rectanglelabels`` one (``from_name`` ``label``; its phrase in ``meta.text``) and a ``textarea``
one (``from_name`` ``phrase``; ``value.text`` the phrase) with the same geometry: x, y, width,
height in percent of ``original_width``/``original_height``, the displayed size. Both carry the
box's ``score``. This schema is read back by :mod:`vgtool.datasets.labelstudio`; keep them in step.

The default URL prefix serves files through Label Studio's local storage, which (as of Label
Studio 1.23) serves only files inside a storage folder strictly below its document root. So with
images beside the labels (``--images-mode copy`` or ``link``), ``data.image`` is
``/data/local-files/?d=images/<name>``: start Label Studio with
``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``
set to the export folder, and add a "Local files" storage whose path is its ``images/``. With
``--images-mode none`` it is ``?d=<image root's folder name>/<file_name>``: the document root is
the image root's parent and the storage is the image root. Any other prefix (``s3://bucket/prefix/``,
``https://host/images/``) is followed by the run's ``file_name`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from vgtool.errors import InputError
from vgtool.exports.geometry import BoxXYXY, clip_xyxy
from vgtool.exports.options import LOCAL_FILES_PREFIX
from vgtool.exports.plan import ExportItem, ExportPlan
from vgtool.exports.run import RunBox, RunCategory

PERCENT_DECIMALS = 6
LABEL_CONTROL, PHRASE_CONTROL, IMAGE_OBJECT = "label", "phrase", "image"


def percent_geometry(box_xyxy: BoxXYXY, width: int, height: int) -> dict[str, float]:
    """Pixel ``[x0, y0, x1, y1]`` -> Label Studio's ``x, y, width, height`` in percent of the
    image, clipped to it, plus ``rotation: 0``."""
    x0, y0, x1, y1 = clip_xyxy(box_xyxy, width, height)
    return {
        "x": round(100 * x0 / width, PERCENT_DECIMALS),
        "y": round(100 * y0 / height, PERCENT_DECIMALS),
        "width": round(100 * (x1 - x0) / width, PERCENT_DECIMALS),
        "height": round(100 * (y1 - y0) / height, PERCENT_DECIMALS),
        "rotation": 0,
    }


def region_results(box: RunBox, class_name: str, width: int, height: int) -> list[dict[str, Any]]:
    """The ``rectanglelabels`` and ``textarea`` results of one box, sharing one region id."""
    geometry = percent_geometry(box.box_xyxy, width, height)
    common = {
        "id": f"vg{box.annotation_id}",
        "to_name": IMAGE_OBJECT,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
    }
    return [
        {
            **common,
            "from_name": LABEL_CONTROL,
            "type": "rectanglelabels",
            "value": {**geometry, "rectanglelabels": [class_name]},
            "score": box.score,
            "meta": {"text": [box.phrase]},
        },
        {
            **common,
            "from_name": PHRASE_CONTROL,
            "type": "textarea",
            "value": {**geometry, "text": [box.phrase]},
            "score": box.score,
        },
    ]


def local_files_layout(plan: ExportPlan, out_dir: Path) -> tuple[Path, Path, str]:
    """Where Label Studio's local file serving finds the images: ``(document root, storage
    folder, path of the storage folder relative to the document root)``."""
    if plan.options.images_mode != "none":
        return out_dir, out_dir / "images", "images"
    if plan.run.image_root is None:
        raise InputError(
            "labelstudio: --images-mode none needs the run's image root (give --images DIR), "
            "or use --images-mode copy|link"
        )
    root = plan.run.image_root.resolve()
    return root.parent, root, root.name


def image_url(item: ExportItem, plan: ExportPlan, storage_rel: str) -> str:
    """``data.image`` of one task."""
    if plan.options.url_prefix != LOCAL_FILES_PREFIX:
        return plan.options.url_prefix + quote(item.image.file_name, safe="/")
    return LOCAL_FILES_PREFIX + quote(f"{storage_rel}/{item.name}", safe="/")


def labelstudio_task(item: ExportItem, plan: ExportPlan, storage_rel: str = "images") -> dict[str, Any]:
    """The task of one image, with its boxes as one prediction.

    Args:
        storage_rel: the image folder's path under Label Studio's document root (see
            :func:`local_files_layout`); used with the default local-files URL prefix.
    """
    image = item.image
    names = {c.id: c.name for c in plan.categories}
    boxes = image.boxes
    result = [r for b in boxes for r in region_results(b, names[b.category_id], image.width, image.height)]
    return {
        "data": {
            "image": image_url(item, plan, storage_rel),
            "file_name": image.file_name,
            "phrases": list(plan.phrases),
        },
        "predictions": [
            {
                "model_version": plan.run.model_version,
                "score": round(sum(b.score for b in boxes) / len(boxes), 4) if boxes else 0,
                "result": result,
            }
        ],
    }


def labeling_config(categories: tuple[RunCategory, ...]) -> str:
    """The project's labeling config: one rectangle label per class, one phrase text per region."""
    labels = "".join(f"    <Label value={quoteattr(c.name)}/>\n" for c in categories)
    return (
        "<View>\n"
        f'  <Image name="{IMAGE_OBJECT}" value="$image"/>\n'
        f'  <RectangleLabels name="{LABEL_CONTROL}" toName="{IMAGE_OBJECT}">\n'
        f"{labels}"
        "  </RectangleLabels>\n"
        f'  <TextArea name="{PHRASE_CONTROL}" toName="{IMAGE_OBJECT}" perRegion="true" editable="true" rows="1"/>\n'
        "</View>\n"
    )


class LabelStudioFormat:
    name = "labelstudio"
    layout = "keep"
    summary = "Label Studio pre-annotations: tasks.json, labeling_config.xml (images/ for local serving)"

    def image_path(self, item: ExportItem) -> str:
        return f"images/{item.name}"

    def serving(self, plan: ExportPlan, out_dir: Path) -> tuple[Path, Path] | None:
        """Label Studio's local-files document root and storage folder, with the default prefix."""
        if plan.options.url_prefix != LOCAL_FILES_PREFIX:
            return None
        root, storage, _ = local_files_layout(plan, out_dir)
        return root.resolve(), storage.resolve()

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        out_dir.mkdir(parents=True, exist_ok=True)
        _, _, storage_rel = local_files_layout(plan, out_dir)
        tasks = [
            json.dumps(labelstudio_task(item, plan, storage_rel), ensure_ascii=False) for item in plan.items
        ]
        text = "[\n" + ",\n".join(tasks) + "\n]\n" if tasks else "[]\n"  # one task per line
        (out_dir / "tasks.json").write_text(text, encoding="utf-8")
        (out_dir / "labeling_config.xml").write_text(labeling_config(plan.categories), encoding="utf-8")
        return {item.image.file_name: ["tasks.json"] for item in plan.items}
