"""Assemble ``annotations.json`` from the journals, streaming, in image-id order.

Annotation ids are given here: consecutive from 1 in image-id order, each image's boxes in their
journal order. They depend on the images and their boxes only, not on which process grounded which
image or in which order; a run of one process, which journals images in order with ids counting up
from 1, keeps the ids of its journal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vgtool.writers.coco import coco_result, write_coco_streaming, write_json_list_streaming


def _records_in_order(journal_paths: Sequence[Path]) -> list[tuple[int, int, int]]:
    """(image_id, journal index, byte offset) of each image's first record, sorted by image id.

    The first record of an image wins: earlier journals first, earlier lines first."""
    order: dict[int, tuple[int, int]] = {}
    for index, path in enumerate(journal_paths):
        offset = 0
        with open(path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break
                start = line.index(b'"image_id":') + len(b'"image_id":')
                end = start
                while line[end : end + 1].isdigit():
                    end += 1
                order.setdefault(int(line[start:end]), (index, offset))
                offset += len(line)
    return sorted((image_id, index, offset) for image_id, (index, offset) in order.items())


def _iter_records(journal_paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """The grounded images' first records in image-id order, their annotation ids renumbered."""
    positions = _records_in_order(journal_paths)
    handles = [open(path, "rb") for path in journal_paths]  # noqa: SIM115 - closed below
    try:
        next_id = 1
        for _, index, offset in positions:
            handle = handles[index]
            handle.seek(offset)
            record = json.loads(handle.readline())
            if "skipped" in record:
                continue
            for ann in record["annotations"]:
                ann["id"] = next_id
                next_id += 1
            yield record
    finally:
        for handle in handles:
            handle.close()


def numbered_records(journal_paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Each grounded image's record in image-id order, with the annotation ids of
    ``annotations.json`` (one streaming pass; skipped images are left out)."""
    return _iter_records(journal_paths)


def assemble_annotations(
    journal_paths: Sequence[Path],
    out_path: Path,
    *,
    info: dict[str, Any],
    categories: Sequence[dict[str, Any]],
    results_path: Path | None = None,
) -> int:
    """Write ``annotations.json`` (``out_path``) from a run's journals; returns the number of
    annotations.

    Args:
        journal_paths: the run's journals, in the order their records win (see
            :func:`~vgtool.ground.run_folder.journal_paths`); missing ones count as empty.
        info: the file's ``info`` record.
        categories: its category records.
        results_path: where to write the same boxes as a detection-results list (``image_id``,
            ``category_id``, ``bbox``, ``score``: what pycocotools' ``COCO.loadRes`` reads).

    Memory stays flat: the journals are read record by record, two or three times, and only a table
    of (image id, journal, file offset) triples is held.
    """
    journal_paths = [p for p in journal_paths if p.exists()]
    count = 0

    def images():
        for rec in _iter_records(journal_paths):
            yield {
                "id": rec["image_id"],
                "file_name": rec["file_name"],
                "width": rec["width"],
                "height": rec["height"],
            }

    def annotations():
        nonlocal count
        for rec in _iter_records(journal_paths):
            for ann in rec["annotations"]:
                count += 1
                yield ann

    write_coco_streaming(out_path, info, images(), categories, annotations())
    if results_path is not None:
        write_json_list_streaming(
            results_path,
            (coco_result(ann) for rec in _iter_records(journal_paths) for ann in rec["annotations"]),
        )
    return count
