"""Assemble ``annotations.json`` from the journals, streaming, in image-id order.

Annotation ids are given here: consecutive from 1 in image-id order, each image's boxes in their
journal order. They depend on the images and their boxes only, not on which process grounded which
image or in which order; a run of one process, which journals images in order with ids counting up
from 1, keeps the ids of its journal.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vgtool.writers.coco import coco_result, write_coco_streaming, write_json_list_streaming

_CHUNK = 1 << 16  # records whose places are turned into Python ints at once


def _records_in_order(journal_paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Where each image's first record is: ``[M]`` uint32 journal index and ``[M]`` int64 byte
    offset, sorted by image id (12 bytes per image; while they are made, up to about 40).

    The first record of an image wins: earlier journals first, earlier lines first."""
    image_ids, journals, offsets = array("q"), array("I"), array("q")
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
                image_ids.append(int(line[start:end]))
                journals.append(index)
                offsets.append(offset)
                offset += len(line)
    at_journal = np.frombuffer(journals, dtype=np.uint32)
    at_offset = np.frombuffer(offsets, dtype=np.int64)
    ids = np.frombuffer(image_ids, dtype=np.int64)
    if np.all(ids[1:] > ids[:-1]):  # one journal in image order: as read
        return at_journal, at_offset
    order = np.argsort(ids, kind="stable")  # one image's records stay in reading order
    ordered = ids[order]
    del ids, image_ids  # each array is let go as soon as it has served
    first = np.ones(len(order), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    del ordered
    order = order[first]
    del first
    return at_journal[order], at_offset[order]


def _iter_records(journal_paths: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """The grounded images' first records in image-id order, their annotation ids renumbered."""
    at_journal, at_offset = _records_in_order(journal_paths)
    handles = [open(path, "rb") for path in journal_paths]  # noqa: SIM115 - closed below
    try:
        next_id = 1
        for start in range(0, len(at_journal), _CHUNK):  # Python ints for a chunk at a time
            stop = start + _CHUNK
            places = zip(at_journal[start:stop].tolist(), at_offset[start:stop].tolist(), strict=True)
            for index, offset in places:
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
            :func:`~vgtool.writers.run_folder.journal_paths`); missing ones count as empty.
        info: the file's ``info`` record.
        categories: its category records.
        results_path: where to write the same boxes as a detection-results list (``image_id``,
            ``category_id``, ``bbox``, ``score``: what pycocotools' ``COCO.loadRes`` reads).

    Memory stays flat: the journals are read record by record, two or three times, and only a table
    of where each image's record is (two numpy arrays, 12 bytes per image) is held.
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
