"""Pascal VOC: ``Annotations/<stem>.xml``, ``JPEGImages/``, ``ImageSets/Main/<subset>.txt``.

Boxes follow the VOC devkit convention, 1-based inclusive integer pixels: ``xmin = round(x0) + 1``,
``xmax = round(x1)`` (at least ``xmin``), clipped to the image; readers that follow it (supervision,
datumaro with ``coordinate_mode="voc-one-based"``) get each edge back within half a pixel.
``<size>`` is the displayed size. Score and phrase travel in datumaro's ``<attributes>`` block,
which other readers skip. ``dataset_meta.json`` lists the classes for datumaro (any characters;
its ``labelmap.txt`` cannot hold ``:`` or ``,``). Images are flattened as for YOLO and keep their
own format (``JPEGImages/`` may hold PNGs).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from vgtool.exports.geometry import BoxXYXY, clip_xyxy
from vgtool.exports.naming import label_name
from vgtool.exports.plan import ExportItem, ExportPlan
from vgtool.exports.run import RunBox


def voc_bndbox(box_xyxy: BoxXYXY, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel ``[x0, y0, x1, y1]`` -> VOC ``(xmin, ymin, xmax, ymax)``, 1-based inclusive, at least
    one pixel wide and high."""
    x0, y0, x1, y1 = clip_xyxy(box_xyxy, width, height)
    xmin, ymin = min(round(x0) + 1, width), min(round(y0) + 1, height)
    return xmin, ymin, max(round(x1), xmin), max(round(y1), ymin)


def _text(parent: ET.Element, tag: str, text: object) -> ET.Element:
    element = ET.SubElement(parent, tag)
    element.text = str(text)
    return element


def _object(parent: ET.Element, box: RunBox, class_name: str, width: int, height: int) -> None:
    obj = ET.SubElement(parent, "object")
    _text(obj, "name", class_name)
    for flag in ("truncated", "occluded", "difficult"):
        _text(obj, flag, 0)
    bndbox = ET.SubElement(obj, "bndbox")
    for tag, value in zip(
        ("xmin", "ymin", "xmax", "ymax"), voc_bndbox(box.box_xyxy, width, height), strict=True
    ):
        _text(bndbox, tag, value)
    attributes = ET.SubElement(obj, "attributes")
    for name, value in (("phrase", box.phrase), ("score", box.score)):
        attribute = ET.SubElement(attributes, "attribute")
        _text(attribute, "name", name)
        _text(attribute, "value", value)


def voc_xml(item: ExportItem, class_names: dict[int, str]) -> str:
    """The ``Annotations/<stem>.xml`` document of one image."""
    image = item.image
    root = ET.Element("annotation")
    _text(root, "folder", "JPEGImages")
    _text(root, "filename", item.name)
    source = ET.SubElement(root, "source")
    _text(source, "database", "vgtool")
    _text(source, "image", image.file_name)
    size = ET.SubElement(root, "size")
    _text(size, "width", image.width)
    _text(size, "height", image.height)
    _text(size, "depth", 3)
    _text(root, "segmented", 0)
    for box in image.boxes:
        _object(root, box, class_names[box.category_id], image.width, image.height)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


class VocFormat:
    name = "voc"
    layout = "flat"
    summary = "Pascal VOC: Annotations/*.xml, JPEGImages/, ImageSets/Main/<subset>.txt"

    def image_path(self, item: ExportItem) -> str:
        return f"JPEGImages/{item.name}"

    def write(self, plan: ExportPlan, out_dir: Path) -> dict[str, list[str]]:
        names = {c.id: c.name for c in plan.categories}
        written: dict[str, list[str]] = {}
        (out_dir / "Annotations").mkdir(parents=True, exist_ok=True)
        (out_dir / "JPEGImages").mkdir(parents=True, exist_ok=True)
        for item in plan.items:
            relative = label_name(f"Annotations/{item.name}", ".xml")
            (out_dir / relative).write_text(voc_xml(item, names), encoding="utf-8")
            written[item.image.file_name] = [relative]
        lists = out_dir / "ImageSets" / "Main"
        lists.mkdir(parents=True, exist_ok=True)
        for subset in plan.subsets:
            stems = [item.stem for item in plan.subset_items(subset)]
            (lists / f"{subset}.txt").write_text("".join(s + "\n" for s in stems), encoding="utf-8")
        meta = {"labels": [c.name for c in plan.categories]}
        (out_dir / "dataset_meta.json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )
        return written
