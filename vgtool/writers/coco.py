"""COCO output: pure converters from detections to COCO records, and a streaming file writer.

Conventions: ids start at 1; ``bbox`` is xywh in pixels of the displayed image; no timestamps in
the file (run metadata goes to ``run.json``), so identical runs give byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.atomic import atomic_open

BBOX_DECIMALS = 2
SCORE_DECIMALS = 4


def bbox_xyxy_to_coco(box_xyxy: Sequence[float]) -> list[float]:
    """``[x0, y0, x1, y1]`` pixels -> COCO ``[x, y, w, h]``, rounded."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    return [
        round(x0, BBOX_DECIMALS),
        round(y0, BBOX_DECIMALS),
        round(x1 - x0, BBOX_DECIMALS),
        round(y1 - y0, BBOX_DECIMALS),
    ]


def detections_to_coco_annotations(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    *,
    image_id: int,
    category_id: int,
    phrase: str,
    first_id: int,
) -> list[dict[str, Any]]:
    """COCO annotation records for one phrase's detections in one image.

    Args:
        boxes_xyxy: ``[N, 4]`` pixels.
        scores: ``[N]``.
        first_id: id of the first record; the rest follow consecutively.
    """
    records = []
    for offset, (box, score) in enumerate(zip(boxes_xyxy, scores, strict=True)):
        bbox = bbox_xyxy_to_coco(box)
        records.append(
            {
                "id": first_id + offset,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": bbox,
                "area": round(bbox[2] * bbox[3], BBOX_DECIMALS),
                "iscrowd": 0,
                "score": round(float(score), SCORE_DECIMALS),
                "phrase": phrase,
            }
        )
    return records


def categories_to_coco(names: Sequence[str]) -> list[dict[str, Any]]:
    """Category records with ids from 1, in the given order."""
    return [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(names, start=1)]


def write_coco_streaming(
    path: Path,
    info: dict[str, Any],
    images: Iterable[dict[str, Any]],
    categories: Sequence[dict[str, Any]],
    annotations: Iterable[dict[str, Any]],
) -> None:
    """Write a COCO file one record at a time (flat memory), atomically.

    ``images`` and ``annotations`` may be generators; they are consumed once each, in order.
    """
    path.parent.mkdir(parents=True, exist_ok=True)

    def dump(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write('{"info":' + dump(info) + ',\n"images":[\n')
        for i, record in enumerate(images):
            handle.write(("," if i else "") + dump(record) + "\n")
        handle.write('],\n"categories":' + dump(list(categories)) + ',\n"annotations":[\n')
        for i, record in enumerate(annotations):
            handle.write(("," if i else "") + dump(record) + "\n")
        handle.write("]}\n")
