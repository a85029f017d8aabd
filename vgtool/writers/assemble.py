"""Assemble ``annotations.json`` from the journal, streaming, in image-id order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vgtool.writers.coco import coco_result, write_coco_streaming, write_json_list_streaming


def _records_in_order(journal_path: Path) -> list[tuple[int, int]]:
    """(image_id, byte offset) of each image's first journal record, sorted by image id."""
    order: dict[int, int] = {}
    offset = 0
    with open(journal_path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            start = line.index(b'"image_id":') + len(b'"image_id":')
            end = start
            while line[end : end + 1].isdigit():
                end += 1
            order.setdefault(int(line[start:end]), offset)
            offset += len(line)
    return sorted(order.items())


def _iter_records(journal_path: Path) -> Iterator[dict[str, Any]]:
    import json

    positions = _records_in_order(journal_path)
    with open(journal_path, "rb") as handle:
        for _, offset in positions:
            handle.seek(offset)
            record = json.loads(handle.readline())
            if "skipped" not in record:
                yield record


def assemble_annotations(
    journal_path: Path,
    out_path: Path,
    *,
    info: dict[str, Any],
    categories: Sequence[dict[str, Any]],
    results_path: Path | None = None,
) -> int:
    """Write ``annotations.json`` (``out_path``) from a run's journal; returns the number of
    annotations.

    Args:
        info: the file's ``info`` record.
        categories: its category records.
        results_path: where to write the same boxes as a detection-results list (``image_id``,
            ``category_id``, ``bbox``, ``score``: what pycocotools' ``COCO.loadRes`` reads).

    Memory stays flat: the journal is read record by record, two or three times, and only a table
    of (image id, file offset) pairs is held.
    """
    if not journal_path.exists():
        journal_path.touch()
    count = 0

    def images():
        for rec in _iter_records(journal_path):
            yield {
                "id": rec["image_id"],
                "file_name": rec["file_name"],
                "width": rec["width"],
                "height": rec["height"],
            }

    def annotations():
        nonlocal count
        for rec in _iter_records(journal_path):
            for ann in rec["annotations"]:
                count += 1
                yield ann

    write_coco_streaming(out_path, info, images(), categories, annotations())
    if results_path is not None:
        write_json_list_streaming(
            results_path,
            (coco_result(ann) for rec in _iter_records(journal_path) for ann in rec["annotations"]),
        )
    return count
