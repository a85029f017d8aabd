"""Crops: ``crops/<category>/<image-stem>_<annotation-id>.jpg``, one per annotation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vgtool.atomic import atomic_open
from vgtool.writers.paths import safe_component


def crop_path(out_dir: Path, category: str, file_name: str, annotation_id: int) -> Path:
    """Where the crop of an annotation goes; every component is sanitised."""
    stem = safe_component(Path(file_name).stem)
    return out_dir / "crops" / safe_component(category) / f"{stem}_{annotation_id}.jpg"


def crop_box_xyxy(bbox_xywh: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer pixel crop window for a COCO box, at least 1 pixel, inside the image."""
    x, y, w, h = bbox_xywh
    left = min(max(int(x), 0), width - 1)
    top = min(max(int(y), 0), height - 1)
    right = max(min(round(x + w), width), left + 1)
    bottom = max(min(round(y + h), height), top + 1)
    return left, top, right, bottom


def write_crops(
    image: Image.Image,
    annotations: Sequence[dict[str, Any]],
    category_names: dict[int, str],
    out_dir: Path,
    file_name: str,
    quality: int = 92,
) -> list[Path]:
    """Save one JPEG crop per annotation of one image; returns the paths written."""
    written = []
    for ann in annotations:
        path = crop_path(out_dir, category_names[ann["category_id"]], file_name, ann["id"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(
            path, "wb", durable=False
        ) as handle:  # a kill never leaves a half-written crop behind
            image.crop(crop_box_xyxy(ann["bbox"], image.width, image.height)).save(
                handle, "JPEG", quality=quality
            )
        written.append(path)
    return written
