"""A finished grounding run folder, read and checked: what every export format starts from.

A run folder holds ``annotations.json`` (COCO; boxes are xywh pixels of the *displayed* image,
EXIF orientation applied), ``run.json`` (``image_root``, the model, skipped files) and
``run-key.json`` (the grounder's identity and the run's ``[phrase, class]`` pairs). Images the run
could not read are in ``run.json``'s ``skipped`` list and nowhere else.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vgtool.errors import InputError
from vgtool.exports.geometry import BoxXYXY, xywh_to_xyxy

ANNOTATIONS_NAME = "annotations.json"
MANIFEST_NAME = "run.json"
RUN_KEY_NAME = "run-key.json"
_LONG_REVISION = re.compile(r"@([0-9a-f]{40})$")


@dataclass(frozen=True)
class RunCategory:
    """A COCO category of the run; ``id`` as in ``annotations.json`` (from 1, maybe not contiguous)."""

    id: int
    name: str
    supercategory: str = "object"


@dataclass(frozen=True)
class RunBox:
    """One grounded box.

    Attributes:
        bbox_xywh: ``[x, y, w, h]`` pixels of the displayed image.
    """

    annotation_id: int
    category_id: int
    bbox_xywh: tuple[float, float, float, float]
    score: float
    phrase: str

    @property
    def box_xyxy(self) -> BoxXYXY:
        return xywh_to_xyxy(self.bbox_xywh)


@dataclass(frozen=True)
class RunImage:
    """One image of the run with its boxes, in ``annotations.json`` order.

    Attributes:
        file_name: POSIX path relative to the image root (may hold folders and spaces).
        width, height: the displayed size, which every box refers to.
    """

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: tuple[RunBox, ...]


@dataclass(frozen=True)
class FinishedRun:
    """Everything an export needs from a run folder.

    Attributes:
        run_dir: the run folder.
        image_root: the folder each ``file_name`` is relative to (from ``run.json``), or None.
        images: in ``annotations.json`` order.
        categories: in ``annotations.json`` order.
        phrases: ``(phrase, class)`` pairs in the order the run asked them.
        model: the grounder's identity (``run-key.json``'s ``model``).
        skipped: files the run could not read, as ``{"file", "reason"}``.
    """

    run_dir: Path
    image_root: Path | None
    images: tuple[RunImage, ...]
    categories: tuple[RunCategory, ...]
    phrases: tuple[tuple[str, str], ...]
    model: str
    skipped: tuple[dict[str, str], ...] = ()

    @property
    def category_names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.categories}

    @property
    def model_version(self) -> str:
        """The model's identity, short and stable: a 40-hex hub revision is cut to 12 digits."""
        return _LONG_REVISION.sub(lambda m: "@" + m.group(1)[:12], self.model)


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: missing; {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number: {value!r}")
    return float(value)


def _box(record: dict[str, Any], image_ids: set[int], category_ids: set[int]) -> tuple[int, RunBox]:
    attributes = record.get("attributes") or {}
    phrase = attributes.get("phrase", record.get("phrase"))
    score = attributes.get("score", record.get("score"))
    bbox = record["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"bbox is not [x, y, w, h]: {bbox!r}")
    x, y, w, h = (_finite(v, "bbox") for v in bbox)
    if w < 0 or h < 0:
        raise ValueError(f"bbox has a negative width or height: {bbox!r}")
    if not isinstance(phrase, str):
        raise ValueError("no phrase (neither attributes.phrase nor phrase)")
    image_id, category_id = int(record["image_id"]), int(record["category_id"])
    if image_id not in image_ids:
        raise ValueError(f"image_id {image_id} is not among the images")
    if category_id not in category_ids:
        raise ValueError(f"category_id {category_id} is not among the categories")
    box = RunBox(
        annotation_id=int(record["id"]),
        category_id=category_id,
        bbox_xywh=(x, y, w, h),
        score=_finite(score, "score"),
        phrase=phrase,
    )
    return image_id, box


def _parse_annotations(path: Path) -> tuple[tuple[RunImage, ...], tuple[RunCategory, ...]]:
    coco = _read_json(path, "not a finished vgtool run (re-run the same `vgtool ground` command)")
    if not isinstance(coco, dict) or not all(
        isinstance(coco.get(k), list) for k in ("images", "categories", "annotations")
    ):
        raise InputError(f"{path}: not a COCO file (needs lists 'images', 'categories', 'annotations')")
    where = "categories"
    try:
        categories = tuple(
            RunCategory(id=int(c["id"]), name=str(c["name"]), supercategory=str(c.get("supercategory") or ""))
            for c in coco["categories"]
        )
        where = "images"
        records = [
            (int(r["id"]), str(r["file_name"]), int(r["width"]), int(r["height"])) for r in coco["images"]
        ]
        boxes: dict[int, list[RunBox]] = {image_id: [] for image_id, *_ in records}
        category_ids = {c.id for c in categories}
        for index, record in enumerate(coco["annotations"]):
            where = f"annotation #{index + 1}"
            image_id, box = _box(record, set(boxes), category_ids)
            boxes[image_id].append(box)
    except KeyError as err:
        raise InputError(f"{path}: {where}: no {err} field") from None
    except (TypeError, ValueError) as err:
        raise InputError(f"{path}: {where}: {err}") from None
    if len(boxes) != len(records):
        raise InputError(f"{path}: two images share an id")
    if len({f for _, f, _, _ in records}) != len(records):
        raise InputError(f"{path}: two images share a file_name")
    for _, file_name, _, _ in records:
        relative = PurePosixPath(file_name)
        if not file_name or relative.is_absolute() or ".." in relative.parts or "\\" in file_name:
            raise InputError(f"{path}: file_name {file_name!r} is not a plain relative path")
    if len({c.id for c in categories}) != len(categories):
        raise InputError(f"{path}: two categories share an id")
    images = tuple(
        RunImage(image_id=i, file_name=f, width=w, height=h, boxes=tuple(boxes[i])) for i, f, w, h in records
    )
    return images, categories


def load_run(run_dir: str | Path, image_root: str | Path | None = None) -> FinishedRun:
    """Read a finished run folder.

    Args:
        run_dir: the folder ``vgtool ground --out`` wrote.
        image_root: the folder the images' ``file_name`` values are relative to, overriding
            ``run.json``'s ``image_root`` (a run that was moved, or made from image lists).

    Raises:
        InputError: a file is missing or corrupt; the one-line message names it and why.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run folder")
    images, categories = _parse_annotations(run_dir / ANNOTATIONS_NAME)
    manifest = _read_json(run_dir / MANIFEST_NAME, "not a finished vgtool run")
    key = _read_json(run_dir / RUN_KEY_NAME, "not a vgtool run folder")
    if not isinstance(manifest, dict):
        raise InputError(f"{run_dir / MANIFEST_NAME}: not a JSON object")
    if not isinstance(key, dict) or not isinstance(key.get("model"), str):
        raise InputError(f"{run_dir / RUN_KEY_NAME}: no 'model' string")
    try:
        phrases = tuple((str(text), str(category)) for text, category in key.get("phrases", []))
    except (TypeError, ValueError):
        raise InputError(f"{run_dir / RUN_KEY_NAME}: 'phrases' is not a list of [phrase, class]") from None
    if image_root is None and manifest.get("image_root") is not None:
        image_root = manifest["image_root"]
    skipped = manifest.get("skipped") or []
    return FinishedRun(
        run_dir=run_dir,
        image_root=None if image_root is None else Path(image_root),
        images=images,
        categories=categories,
        phrases=phrases,
        model=key["model"],
        skipped=tuple(s for s in skipped if isinstance(s, dict)),
    )
