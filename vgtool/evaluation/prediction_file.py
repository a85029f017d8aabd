"""Read any tool's COCO predictions and match them to dataset samples by image and phrase.

Matching rules: an image is found by ``file_name`` (the full relative path as a path suffix, then the
base name; an ambiguous name matches nothing), or by ``image_id`` when the file has no images table.
A prediction's phrase and score are its ``attributes.phrase`` and ``attributes.score`` (where CVAT and
datumaro keep them), else its ``phrase`` and ``score`` fields; without a phrase, its category name.
Samples left without a prediction count as "no prediction".
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vgtool.datasets import DataConfig, GroundingSample, detect_format
from vgtool.datasets.coco_phrases import annotation_phrase, annotation_score, resolve_coco_json
from vgtool.errors import InputError

Prediction = tuple[np.ndarray, np.ndarray]  # (boxes_xyxy [N, 4] pixels, scores [N]) by decreasing score


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not JSON ({err})") from None


def _dataset_category_names(data: DataConfig) -> dict[Any, str]:
    """Category names of a COCO dataset (for predictions that carry only ``category_id``)."""
    data_format = detect_format(data.path) if data.format == "auto" else data.format
    if data_format != "coco":
        return {}
    coco = _read_json(resolve_coco_json(Path(data.path), data.split))
    return (
        {cat["id"]: str(cat["name"]) for cat in coco.get("categories", [])} if isinstance(coco, dict) else {}
    )


def _prediction_records(document: Any, path: Path, data: DataConfig) -> list[tuple[Any, str, Any, Any]]:
    """``(image_id, phrase, bbox_xywh, score)`` per predicted box of a results list or COCO dict."""
    if isinstance(document, list):
        anns, phrase_entries, names = document, [], {}
    elif isinstance(document, dict) and isinstance(document.get("annotations"), list):
        anns, phrase_entries = document["annotations"], document.get("phrases") or []
        names = {cat["id"]: str(cat["name"]) for cat in document.get("categories", [])}
    else:
        raise InputError(f"{path}: expected a COCO results list or a COCO dict with 'annotations'")
    by_id = {ann.get("id"): ann for ann in anns if isinstance(ann, dict)}
    pairs: list[tuple[dict[str, Any], str]] = []
    listed: set[Any] = set()
    for entry in phrase_entries:  # a COCO-with-phrases file: phrases name their annotations
        for ann_id in entry.get("annotation_ids", []):
            if ann_id in by_id:
                pairs.append((by_id[ann_id], str(entry["phrase"])))
                listed.add(ann_id)
    dataset_names: dict[Any, str] | None = None
    for number, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise InputError(f"{path}: prediction {number} is not an object")
        if phrase_entries and ann.get("id") in listed:
            continue
        try:
            phrase = annotation_phrase(ann)
        except ValueError as err:  # attributes that are no object, or a rotated box
            raise InputError(f"{path}: prediction {number}: {err}") from None
        if not phrase:
            if ann.get("category_id") not in names and dataset_names is None:
                dataset_names = _dataset_category_names(data)
            phrase = names.get(ann.get("category_id")) or (dataset_names or {}).get(ann.get("category_id"))
        if not phrase:
            raise InputError(
                f"{path}: prediction {number} has no 'phrase', and category {ann.get('category_id')!r} "
                "has no name in the file's or the dataset's 'categories'"
            )
        pairs.append((ann, str(phrase)))
    records = []
    for ann, phrase in pairs:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            raise InputError(f"{path}: prediction {ann.get('id', '?')} has no 'bbox' [x, y, w, h]: {bbox!r}")
        if "image_id" not in ann:
            raise InputError(f"{path}: prediction {ann.get('id', '?')} has no 'image_id'")
        records.append((ann["image_id"], phrase.strip(), bbox, _score(ann, path)))
    return records


def _score(ann: dict[str, Any], path: Path) -> float:
    """:func:`annotation_score` (``attributes.score``, else ``score``), else 1."""
    try:
        score = annotation_score(ann)
    except ValueError as err:  # attributes that are no object, or a rotated box
        raise InputError(f"{path}: prediction {ann.get('id', '?')}: {err}") from None
    if score is not None:
        return score
    value = (ann.get("attributes") or {}).get("score", ann.get("score"))
    if value is not None:
        raise InputError(f"{path}: prediction {ann.get('id', '?')} has a non-numeric 'score': {value!r}")
    return 1.0


def _path_suffixes(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Every trailing run of path parts (``a.jpg``, ``val/a.jpg``, ...) -> the paths ending so."""
    index: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        parts = [part for part in path.as_posix().split("/") if part not in ("", ".")]
        for k in range(1, len(parts) + 1):
            index["/".join(parts[-k:])].append(path)
    return index


def _match_file_name(file_name: str, suffixes: dict[str, list[Path]]) -> Path | None:
    parts = [part for part in PurePosixPath(file_name.replace("\\", "/")).parts if part not in ("/", ".")]
    for key in ("/".join(parts), parts[-1] if parts else ""):
        found = suffixes.get(key, [])
        if found:
            return found[0] if len(found) == 1 else None
    return None


def load_prediction_file(
    predictions: Path, samples: Sequence[GroundingSample], data: DataConfig
) -> tuple[list[Prediction], dict[str, int]]:
    """Read a predictions file and give each sample its boxes (see :func:`evaluate_predictions`).

    Returns:
        Per sample, ``(boxes_xyxy, scores)`` by decreasing score (empty when nothing matched), and
        counts: ``boxed_samples_without_prediction`` (samples with a ground-truth box that no
        prediction matched), ``unmatched_predictions`` (boxes whose image or phrase is no sample's)
        and ``unmatched_images`` (file names matching no dataset image, or more than one).
    """
    path = Path(predictions)
    document = _read_json(path)
    records = _prediction_records(document, path, data)
    file_names = None
    if isinstance(document, dict) and isinstance(document.get("images"), list):
        file_names = {image.get("id"): str(image.get("file_name", "")) for image in document["images"]}

    image_key: dict[Any, Any] = {}  # prediction image_id -> the key of a dataset image
    unmatched_images = 0
    if file_names is not None:
        suffixes = _path_suffixes(sorted({s.image_path for s in samples}))
        for image_id, file_name in file_names.items():
            image_key[image_id] = _match_file_name(file_name, suffixes)
            unmatched_images += image_key[image_id] is None
        sample_keys = [(s.image_path, s.phrase.strip()) for s in samples]
    else:
        sample_keys = [(str(s.image_id), s.phrase.strip()) for s in samples]

    grouped: dict[tuple[Any, str], list[tuple[list[float], float]]] = defaultdict(list)
    for image_id, phrase, bbox_xywh, score in records:
        key = image_key.get(image_id) if file_names is not None else str(image_id)
        grouped[(key, phrase)].append((bbox_xywh, score))
    wanted = set(sample_keys)
    unmatched_predictions = sum(len(boxes) for key, boxes in grouped.items() if key not in wanted)

    results: list[Prediction] = []
    for key in sample_keys:
        boxes = grouped.get(key, [])
        bbox_xywh = np.asarray([b for b, _ in boxes], dtype=np.float32).reshape(-1, 4)
        scores = np.asarray([s for _, s in boxes], dtype=np.float32)
        order = np.argsort(-scores, kind="stable")
        boxes_xyxy = np.concatenate([bbox_xywh[:, :2], bbox_xywh[:, :2] + bbox_xywh[:, 2:]], axis=1)
        results.append((boxes_xyxy[order], scores[order]))
    counts = {
        "boxed_samples_without_prediction": sum(
            len(scores) == 0 and len(sample.boxes_xyxy) > 0
            for sample, (_, scores) in zip(samples, results, strict=True)
        ),
        "unmatched_predictions": unmatched_predictions,
        "unmatched_images": unmatched_images,
    }
    return results, counts


# ---- plots --------------------------------------------------------------------------------------
