"""Crops: ``crops/<category>/<image-stem>_<annotation-id>.jpg``, one per annotation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from vgtool.atomic import atomic_open
from vgtool.groundings import Groundings
from vgtool.writers.paths import safe_component


def crop_path(out_dir: Path, category: str, file_name: str, annotation_id: int) -> Path:
    """Where the crop of an annotation goes; every component is sanitised."""
    stem = safe_component(Path(file_name).stem)
    return out_dir / "crops" / safe_component(category) / f"{stem}_{annotation_id}.jpg"


def crop_box_xyxy(box_xyxy: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """The integer pixel window of a float ``xyxy`` box (each edge rounded to the nearest pixel
    boundary, as supervision crops): at least 1 pixel, inside the image."""
    x0, y0, x1, y1 = (round(float(v)) for v in box_xyxy)
    left = min(max(x0, 0), width - 1)
    top = min(max(y0, 0), height - 1)
    right = max(min(x1, width), left + 1)
    bottom = max(min(y1, height), top + 1)
    return left, top, right, bottom


def write_crops(
    image: Image.Image,
    groundings: Groundings,
    *,
    folders: Sequence[str],
    first_id: int,
    out_dir: Path,
    file_name: str,
    quality: int = 92,
) -> list[Path]:
    """Save one JPEG crop per box of one image; returns the paths written.

    Args:
        groundings: the image's boxes, float pixels.
        folders: per phrase id, the folder (category name) its crops go to.
        first_id: the annotation id of the first box; the rest follow consecutively.
    """
    written = []
    for offset, (box_xyxy, phrase_id) in enumerate(
        zip(groundings.xyxy, groundings.phrase_ids.tolist(), strict=True)
    ):
        path = crop_path(out_dir, folders[phrase_id], file_name, first_id + offset)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb", durable=False) as handle:  # a kill never leaves half a crop
            image.crop(crop_box_xyxy(box_xyxy, image.width, image.height)).save(
                handle, "JPEG", quality=quality
            )
        written.append(path)
    return written
