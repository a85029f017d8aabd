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
from vgtool.groundings import Groundings

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


def coco_annotation(
    annotation_id: int, image_id: int, category_id: int, box_xyxy: Sequence[float], score: float, phrase: str
) -> dict[str, Any]:
    """One COCO annotation record with vgtool's ``score`` and ``phrase``, also under
    ``attributes`` (where CVAT/datumaro keep them) and an empty ``segmentation`` (which
    pycocotools' drawing and datumaro expect)."""
    bbox = bbox_xyxy_to_coco(box_xyxy)
    score = round(float(score), SCORE_DECIMALS)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": round(bbox[2] * bbox[3], BBOX_DECIMALS),
        "iscrowd": 0,
        "segmentation": [],
        "score": score,
        "phrase": phrase,
        "attributes": {"phrase": phrase, "score": score},
    }


def groundings_to_coco_annotations(
    groundings: Groundings,
    *,
    image_id: int,
    phrases: Sequence[str],
    category_ids: Sequence[int],
    first_id: int,
) -> list[dict[str, Any]]:
    """COCO annotation records for one image's groundings, in their order.

    Args:
        phrases, category_ids: per phrase id, its text and its COCO category id.
        first_id: id of the first record; the rest follow consecutively.
    """
    return [
        coco_annotation(first_id + i, image_id, category_ids[p], box, score, phrases[p])
        for i, (box, score, p) in enumerate(
            zip(groundings.xyxy, groundings.scores, groundings.phrase_ids.tolist(), strict=True)
        )
    ]


def coco_annotations_to_groundings(
    annotations: Sequence[dict[str, Any]], phrase_ids: dict[str, int]
) -> Groundings:
    """One image's COCO annotation records (as :func:`groundings_to_coco_annotations` wrote them)
    back to groundings; boxes come back at the 0.01-pixel precision of ``bbox``.

    Args:
        phrase_ids: phrase text -> phrase id.
    """
    if not annotations:
        return Groundings.empty()
    xywh = np.asarray([a["bbox"] for a in annotations], dtype=np.float32)
    return Groundings(
        xyxy=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
        scores=np.asarray([a["score"] for a in annotations], dtype=np.float32),
        phrase_ids=np.asarray([phrase_ids[a["phrase"]] for a in annotations], dtype=np.int64),
    )


def detections_to_coco_annotations(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    *,
    image_id: int,
    category_id: int,
    phrase: str,
    first_id: int,
) -> list[dict[str, Any]]:
    """COCO annotation records for one phrase's ``[N, 4]`` pixel boxes and ``[N]`` scores in one
    image, with ids from ``first_id``."""
    return [
        coco_annotation(first_id + i, image_id, category_id, box, score, phrase)
        for i, (box, score) in enumerate(zip(boxes_xyxy, scores, strict=True))
    ]


def categories_to_coco(categories: Iterable[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """COCO category records from ``(id, name, supercategory)``, in the given order."""
    return [{"id": i, "name": name, "supercategory": sup} for i, name, sup in categories]


def coco_result(annotation: dict[str, Any]) -> dict[str, Any]:
    """An annotation record as a detection result (what pycocotools' ``COCO.loadRes`` reads)."""
    return {k: annotation[k] for k in ("image_id", "category_id", "bbox", "score")}


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def write_json_list_streaming(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write a JSON list one record per line (flat memory), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n")
        for i, record in enumerate(records):
            handle.write(("," if i else "") + _dump(record) + "\n")
        handle.write("]\n")


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
    dump = _dump
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write('{"info":' + dump(info) + ',\n"images":[\n')
        for i, record in enumerate(images):
            handle.write(("," if i else "") + dump(record) + "\n")
        handle.write('],\n"categories":' + dump(list(categories)) + ',\n"annotations":[\n')
        for i, record in enumerate(annotations):
            handle.write(("," if i else "") + dump(record) + "\n")
        handle.write("]}\n")
