"""Read a Label Studio "JSON" export: vgtool's pre-labels after annotators corrected them.

The export is a list of tasks ``{"id", "data", "annotations": [...], "predictions": [...]}``. vgtool's
tasks carry ``data = {"image": <URL>, "file_name": <path under the image root>, "phrases": [...]}``
and, per box, a ``rectanglelabels`` result (``value.x/y/width/height`` in percent of
``original_width``/``original_height``, the class in ``value.rectanglelabels``, the phrase in
``meta.text``) plus a ``textarea`` result with the same region ``id`` holding the phrase.

Rules:

- Each task's annotation is its most recent one that was not cancelled (``was_cancelled`` or
  ``skipped``): latest ``updated_at`` (else ``created_at``); one without either counts as older
  than any with one, and among equals the later in the list wins. Predictions are never read.
  Tasks without such an annotation are skipped; their count is logged as one warning.
- A region's phrase is its textarea's text (same region ``id``; the last non-empty entry), else its
  ``meta.text``, else its label. Its category is its label. A region with neither phrase nor label
  is an error.
- Boxes: pixels = percent * original size / 100, clipped to the image. A box with nothing left
  inside the image is dropped (one warning with the count). A rotated box (``value.rotation`` or
  ``image_rotation`` not 0) is an error, not a skip: dropping it could turn its phrase into a
  wrong "names nothing" sample. Straighten it in Label Studio, or turn rotation off.
- One sample per phrase of an image, with all its boxes. A phrase of ``data.phrases`` that no
  region keeps becomes a sample with zero boxes (the phrase names nothing there).
- The image is ``image_root / data.file_name``; without ``file_name``, ``data.image`` with its
  ``/data/local-files/?d=`` prefix stripped and URL-unquoted, or else the file name at the end of
  the URL's path. ``image_root`` defaults to the export's folder. Two tasks of one image are an error.
- Label Studio's "JSON-MIN" export is not read: it drops region ids, so corrected phrases cannot
  be tied to their boxes. It is recognised and refused with that reason.

Malformed input raises :class:`~vgtool.errors.InputError` naming the file and the task (``#1`` is
the first in the list).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError

logger = logging.getLogger(__name__)

LOCAL_FILES_PREFIX = "/data/local-files/?d="
BOX_TYPES = ("rectanglelabels", "rectangle")
PEEK_CHARS = 65536
_NO_TIME = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Region:
    """One corrected box of a task.

    Attributes:
        region_id: Label Studio's region id (shared by the box and its phrase textarea).
        phrase: the phrase the box belongs to, after the rules of this module.
        label: the region's class, if it has one.
        box_xyxy: pixels of the original image, clipped to it.
    """

    region_id: str
    phrase: str
    label: str | None
    box_xyxy: tuple[float, float, float, float]


class _TaskError(ValueError):
    """A reason a task cannot be read; the loader adds the file and the task."""


def looks_like_labelstudio(path: Path) -> bool:
    """Whether ``path`` is a Label Studio JSON (or JSON-MIN) export, judged from its first task.

    Reads the first 64 KiB only, unless the first task is longer.
    """
    try:
        with path.open(encoding="utf-8") as file:
            head = file.read(PEEK_CHARS)
    except (OSError, UnicodeDecodeError):
        return False
    text = head.lstrip()
    if not text.startswith("["):
        return False
    try:
        first, _ = json.JSONDecoder().raw_decode(text[1:].lstrip())
    except json.JSONDecodeError:
        if len(head) < PEEK_CHARS:
            return False
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        first = document[0] if isinstance(document, list) and document else None
    return isinstance(first, dict) and (_is_task(first) or _is_json_min(first))


def _is_task(record: dict[str, Any]) -> bool:
    return isinstance(record.get("data"), dict) and ("annotations" in record or "predictions" in record)


def _is_json_min(record: dict[str, Any]) -> bool:
    return "data" not in record and "annotation_id" in record and "annotator" in record


def resolve_export(path: Path, split: str | None) -> Path:
    """The export to read: ``path`` itself, or in a folder ``<split>.json`` or its one ``.json``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: no such Label Studio export file or folder")
    if split is not None and (path / f"{split}.json").is_file():
        return path / f"{split}.json"
    candidates = sorted(path.glob("*.json"))
    if split is not None or len(candidates) != 1:
        wanted = f"{split}.json" if split is not None else "a single .json export"
        raise InputError(f"{path}: expected {wanted} in this folder")
    return candidates[0]


def _read_tasks(path: Path) -> list[Any]:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not JSON ({err})") from None
    if not isinstance(tasks, list):
        raise InputError(f"{path}: not a Label Studio JSON export: the top level is not a list of tasks")
    if tasks and isinstance(tasks[0], dict) and _is_json_min(tasks[0]):
        raise InputError(
            f"{path}: a Label Studio JSON-MIN export, which drops region ids so corrected phrases "
            "cannot be tied to their boxes; export as JSON instead"
        )
    return tasks


def _timestamp(annotation: dict[str, Any]) -> datetime:
    text = annotation.get("updated_at") or annotation.get("created_at")
    if text is None:
        return _NO_TIME
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))  # Python 3.10 wants no Z
    except ValueError:
        raise _TaskError(f"annotation {annotation.get('id')!r} has a bad time {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def latest_annotation(annotations: Sequence[Any]) -> dict[str, Any] | None:
    """The most recent annotation that was not cancelled, or ``None`` (see the module rules)."""
    kept = []
    for position, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise _TaskError(f"annotation #{position + 1} is not an object")
        if not (annotation.get("was_cancelled") or annotation.get("skipped")):
            kept.append((_timestamp(annotation), position, annotation))
    return max(kept, key=lambda item: item[:2])[2] if kept else None


def _texts(value: Any) -> list[str]:
    """Non-empty stripped strings of a Label Studio ``text`` field (a string or a list of them)."""
    items = value if isinstance(value, list) else [value]
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def _number(container: dict[str, Any], key: str, what: str) -> float:
    value = container.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise _TaskError(f"{what} has no number {key!r}")
    return float(value)


def _region(item: dict[str, Any], phrase_texts: dict[str, list[str]]) -> tuple[Region, tuple[float, float]]:
    """A box result -> its region (pixel box, phrase, label) and the original image size."""
    region_id = str(item.get("id", ""))
    what = f"region {region_id!r}" if region_id else "a region without id"
    value = item.get("value")
    if not isinstance(value, dict):
        raise _TaskError(f"{what} has no 'value' object")
    rotation = value.get("rotation") or 0
    image_rotation = item.get("image_rotation") or 0
    if rotation or image_rotation:
        turned = f"rotated by {rotation}" if rotation else f"on an image rotated by {image_rotation}"
        raise _TaskError(f"{what} is {turned} degrees; only upright boxes are read (straighten it)")
    width, height = _number(item, "original_width", what), _number(item, "original_height", what)
    if width <= 0 or height <= 0:
        raise _TaskError(f"{what} has an image size of {width:g}x{height:g}")
    x, y = _number(value, "x", what), _number(value, "y", what)
    w, h = _number(value, "width", what), _number(value, "height", what)
    x0, x1 = np.clip([x * width / 100, (x + w) * width / 100], 0, width)
    y0, y1 = np.clip([y * height / 100, (y + h) * height / 100], 0, height)
    labels = _texts(value.get("rectanglelabels") or value.get("labels") or [])
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    candidates = [*phrase_texts.get(region_id, [])[-1:], *_texts(meta.get("text", []))[:1], *labels[:1]]
    if not candidates:
        raise _TaskError(f"{what} has no phrase and no label")
    box_xyxy = (float(min(x0, x1)), float(min(y0, y1)), float(max(x0, x1)), float(max(y0, y1)))
    return Region(region_id, candidates[0], labels[0] if labels else None, box_xyxy), (width, height)


def task_regions(result: Sequence[Any]) -> tuple[list[Region], tuple[float, float] | None]:
    """The regions of one annotation's ``result`` list, and the image size they were drawn on."""
    phrase_texts: dict[str, list[str]] = {}
    boxes = []
    for item in result:
        if not isinstance(item, dict):
            raise _TaskError("a result item is not an object")
        if item.get("type") == "textarea" and item.get("id") is not None:
            value = item.get("value") if isinstance(item.get("value"), dict) else {}
            phrase_texts[str(item["id"])] = _texts(value.get("text", []))
        elif item.get("type") in BOX_TYPES:
            boxes.append(item)
    regions, sizes = [], set()
    for item in boxes:
        region, size = _region(item, phrase_texts)
        regions.append(region)
        sizes.add(size)
    if len(sizes) > 1:
        raise _TaskError(f"regions disagree on the image size: {sorted(sizes)}")
    return regions, sizes.pop() if sizes else None


def image_file_name(data: dict[str, Any]) -> str:
    """The image's POSIX path under the image root (see the module rules)."""
    file_name = data.get("file_name")
    if isinstance(file_name, str) and file_name:
        return file_name
    url = data.get("image")
    if not isinstance(url, str) or not url:
        raise _TaskError("data has no 'file_name' and no 'image'")
    if url.startswith(LOCAL_FILES_PREFIX):
        return unquote(url[len(LOCAL_FILES_PREFIX) :])
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    if not name:
        raise _TaskError(f"cannot tell the image file from {url!r}")
    return name


def _task_phrases(data: dict[str, Any]) -> list[str]:
    phrases = data.get("phrases", [])
    if not isinstance(phrases, list) or not all(isinstance(phrase, str) for phrase in phrases):
        raise _TaskError("data.phrases is not a list of strings")
    return [phrase.strip() for phrase in phrases if phrase.strip()]


def _task_samples(task: Any, image_root: Path) -> tuple[list[GroundingSample], int] | None:
    """The samples of one task and its number of dropped boxes; ``None`` when it has no annotation."""
    if not isinstance(task, dict):
        raise _TaskError("not an object")
    data = task.get("data")
    if not isinstance(data, dict):
        raise _TaskError("no 'data' object")
    annotations = task.get("annotations", [])
    if not isinstance(annotations, list):
        raise _TaskError("'annotations' is not a list")
    annotation = latest_annotation(annotations)
    if annotation is None:
        return None
    result = annotation.get("result")
    if not isinstance(result, list):
        raise _TaskError(f"annotation {annotation.get('id')!r} has no 'result' list")
    file_name = image_file_name(data)
    regions, size = task_regions(result)
    kept = [r for r in regions if r.box_xyxy[2] > r.box_xyxy[0] and r.box_xyxy[3] > r.box_xyxy[1]]
    by_phrase: dict[str, list[Region]] = {phrase: [] for phrase in _task_phrases(data)}
    for region in kept:
        by_phrase.setdefault(region.phrase, []).append(region)
    samples = []
    for phrase, members in by_phrase.items():
        labels = {region.label for region in members}
        samples.append(
            GroundingSample(
                image_path=image_root / file_name,
                phrase=phrase,
                boxes_xyxy=np.asarray([r.box_xyxy for r in members], dtype=np.float32).reshape(-1, 4),
                image_id=file_name,
                width=round(size[0]) if size else None,
                height=round(size[1]) if size else None,
                category=labels.pop() if len(labels) == 1 else None,
                meta={
                    "task_id": task.get("id"),
                    "annotation_id": annotation.get("id"),
                    "region_ids": [r.region_id for r in members],
                },
            )
        )
    return samples, len(regions) - len(kept)


def load_labelstudio(
    export_path: str | Path,
    split: str | None = None,
    image_root: str | Path | None = None,
) -> list[GroundingSample]:
    """Grounding samples from a Label Studio JSON export of corrected vgtool tasks.

    Args:
        export_path: the export file, or a folder holding ``<split>.json`` or a single ``.json``.
        split: picks ``<split>.json`` in a folder; a file has no splits and is read whole.
        image_root: the folder ``data.file_name`` is relative to; defaults to the export's folder.

    Returns:
        Samples sorted by image (``image_id`` is the file name under the image root), then phrase;
        ``sample_id`` counts from 1 in that order. ``meta`` holds ``task_id``, ``annotation_id`` and
        ``region_ids``.

    Raises:
        InputError: the export is missing, not JSON, not a task list (or a JSON-MIN export), or a
            task is malformed; the message names the file and the task.
    """
    path = resolve_export(Path(export_path), split)
    root = Path(image_root) if image_root is not None else path.parent
    tasks = _read_tasks(path)
    samples: list[GroundingSample] = []
    first_task: dict[str, int] = {}
    skipped = dropped = 0
    for position, task in enumerate(tasks, start=1):
        task_id = task.get("id") if isinstance(task, dict) else None
        where = f"{path}: task #{position}" + (f" (id {task_id})" if task_id is not None else "")
        try:
            read = _task_samples(task, root)
        except ValueError as err:  # a _TaskError, or GroundingSample's own checks
            raise InputError(f"{where}: {err}") from None
        if read is None:
            skipped += 1
            continue
        task_samples, task_dropped = read
        dropped += task_dropped
        file_name = str(task_samples[0].image_id) if task_samples else None
        if file_name is not None:
            if file_name in first_task:
                raise InputError(f"{where}: image {file_name!r} is also task #{first_task[file_name]}'s")
            first_task[file_name] = position
        samples += task_samples
    if skipped:
        logger.warning("%s: skipped %d of %d tasks without a submitted annotation", path, skipped, len(tasks))
    if dropped:
        logger.warning("%s: dropped %d boxes that lie outside their image", path, dropped)
    samples.sort(key=lambda sample: (str(sample.image_id), sample.phrase))
    return [replace(sample, sample_id=number) for number, sample in enumerate(samples, start=1)]
