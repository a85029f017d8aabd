"""Assemble ``annotations.json`` from the journal, streaming, in image-id order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vgtool import __version__
from vgtool.ground.output_dir import RunState
from vgtool.writers.coco import categories_to_coco, write_coco_streaming


def _records_in_order(state: RunState) -> list[tuple[int, int]]:
    """(image_id, byte offset) of each image's first journal record, sorted by image id."""
    order: dict[int, int] = {}
    offset = 0
    with open(state.journal_path, "rb") as handle:
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


def _iter_records(state: RunState) -> Iterator[dict[str, Any]]:
    import json

    positions = _records_in_order(state)
    with open(state.journal_path, "rb") as handle:
        for _, offset in positions:
            handle.seek(offset)
            record = json.loads(handle.readline())
            if "skipped" not in record:
                yield record


def assemble_annotations(state: RunState, entries_count: int) -> int:
    """Write ``annotations.json``; returns the number of annotations.

    Memory stays flat: the journal is read twice, record by record, and only a table of
    (image id, file offset) pairs is held.
    """
    if not state.journal_path.exists():
        state.journal_path.touch()
    count = 0

    def images():
        for rec in _iter_records(state):
            yield {
                "id": rec["image_id"],
                "file_name": rec["file_name"],
                "width": rec["width"],
                "height": rec["height"],
            }

    def annotations():
        nonlocal count
        for rec in _iter_records(state):
            for ann in rec["annotations"]:
                count += 1
                yield ann

    info = {
        "description": "vgtool grounding results",
        "version": __version__,
        "model": state.run_key["model"],
        "images_listed": entries_count,
    }
    categories = categories_to_coco(state.ontology.categories)
    write_coco_streaming(state.out_dir / "annotations.json", info, images(), categories, annotations())
    return count
