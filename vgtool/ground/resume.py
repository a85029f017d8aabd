"""Resuming a run from its journal: what is done, and which finished images lost their files.

The journal line of an image is written before its crops and overlay (those are written on
background threads), so an interruption can leave a journaled image without them; a resumed run
re-writes those from the journal before it grounds anything new.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.listing import ImageEntry, ImageList
from vgtool.ground.output_dir import RunState
from vgtool.ground.shard import Shard
from vgtool.ground.sink import warn, write_image_outputs
from vgtool.writers.coco import coco_annotations_to_groundings
from vgtool.writers.crops import crop_path
from vgtool.writers.journal import read_journals
from vgtool.writers.overlays import overlay_path
from vgtool.writers.run_folder import journal_paths


@dataclass
class JournalScan:
    """What an earlier run left in the journal, read in one streaming pass.

    Attributes:
        done: ``[N]`` bool, per position in the run's image list: the image is already journaled
            (grounded or skipped).
        last_annotation_id: the highest annotation id used so far (0 for a new run).
        local_ids: some record has image-local annotation ids and pending crops (a sharded run
            wrote it, see :mod:`~vgtool.ground.crop_names`); its crops are checked there.
        skipped: ``{"file", "reason"}`` of images skipped earlier.
        to_repair: ``[N]`` bool, per position: a grounded image whose crops or overlay are missing
            (their records are read again by :meth:`repairs`, so none is held in memory);
            ``repair_crops``: ``[N]`` bool, whether its crops are re-written here (False for
            image-local ids). Both empty when nothing is to be repaired.
    """

    done: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    last_annotation_id: int = 0
    local_ids: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)
    to_repair: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    repair_crops: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def resumed(self) -> int:
        """How many of the run's images are already journaled."""
        return int(np.count_nonzero(self.done))

    @property
    def repaired(self) -> int:
        """How many grounded images lost crops or their overlay."""
        return int(np.count_nonzero(self.to_repair))

    def _mark_repair(self, position: int, crops: bool) -> None:
        if not len(self.to_repair):  # two bytes per listed image, once the first repair is found
            self.to_repair = np.zeros(len(self.done), dtype=bool)
            self.repair_crops = np.zeros(len(self.done), dtype=bool)
        self.to_repair[position] = True
        self.repair_crops[position] = crops

    def repairs(
        self, state: RunState, entries: ImageList
    ) -> Iterator[tuple[ImageEntry, list[dict[str, Any]], bool]]:
        """``(entry, annotations, crops)`` of each image to repair, in journal order: a second
        streaming pass over the journals (only when there is something to repair), taking the
        first record of each image, as the scan did."""
        if not self.repaired:
            return
        pending = self.to_repair.copy()
        for rec in read_journals(journal_paths(state.out_dir)):
            position = journaled_position(entries, rec)
            if position is not None and pending[position]:
                pending[position] = False
                yield entries[position], rec.get("annotations", []), bool(self.repair_crops[position])

    def todo(self, shard: Shard) -> np.ndarray:
        """``[T]`` int64: the positions, ascending, of the images not journaled yet that
        ``shard`` grounds."""
        left = np.flatnonzero(~self.done)
        return left[shard.owns(left)] if shard.sharded else left


def _outputs_missing(record: dict[str, Any], state: RunState, crops: bool, overlays: bool) -> bool:
    """Whether a journaled image lacks its overlay or any crop (one stat per expected file)."""
    if overlays and not overlay_path(state.out_dir, record["file_name"]).exists():
        return True
    if crops and not record.get("local_ids"):
        names = state.category_names
        for ann in record["annotations"]:
            path = crop_path(state.out_dir, names[ann["category_id"]], record["file_name"], ann["id"])
            if not path.exists():
                return True
    return False


def journaled_position(entries: ImageList, record: dict[str, Any]) -> int | None:
    """The position in ``entries`` of the image a journal record is about, or None when it is not
    listed; the record's ``image_id`` (its position + 1 when it was journaled) is looked at first."""
    image_id = record.get("image_id")
    return entries.find(record["file_name"], near=image_id - 1 if isinstance(image_id, int) else None)


def scan_journal(
    state: RunState,
    entries: ImageList,
    crops: bool,
    overlays: bool,
    owns: Callable[[int], bool] | None = None,
) -> JournalScan:
    """Read all of the run's journals (the first record of an image wins, as in assembly).

    What is done is marked by position (one byte per listed image); only the names of journaled
    images that are not listed are kept, to tell their repeats.

    Args:
        owns: whether this process grounds the image at a position (a rank of a sharded run);
            only those images' lost outputs are listed for repair. None: all.
    """
    scan = JournalScan(done=np.zeros(len(entries), dtype=bool))
    unlisted: set[str] = set()
    for rec in read_journals(journal_paths(state.out_dir)):
        name = rec["file_name"]
        position = journaled_position(entries, rec)
        if position is None:
            if name in unlisted:
                continue
            unlisted.add(name)
        elif scan.done[position]:
            continue
        else:
            scan.done[position] = True
        if "skipped" in rec:
            scan.skipped.append({"file": name, "reason": rec["skipped"]})
            continue
        annotations = rec.get("annotations", [])
        scan.local_ids = scan.local_ids or bool(rec.get("local_ids"))
        scan.last_annotation_id = max([scan.last_annotation_id, *(a["id"] for a in annotations)])
        if (
            (crops or overlays)
            and position is not None
            and (owns is None or owns(position))
            and _outputs_missing(rec, state, crops, overlays)
        ):
            scan._mark_repair(position, not rec.get("local_ids"))
    return scan


def repair_outputs(
    entry: ImageEntry, annotations: list[dict[str, Any]], state: RunState, crops: bool, overlays: bool
) -> None:
    """Re-decode an already grounded image and write its crops and overlay from its journal record
    (boxes at the journal's 0.01-pixel precision)."""
    try:
        image = load_rgb(entry.path)
    except ImageDecodeError as err:
        warn(f"cannot re-write the crops/overlay of {entry.path}: {err}")
        return
    phrase_ids = {text: i for i, text in reversed(list(enumerate(state.ontology.texts)))}
    groundings = coco_annotations_to_groundings(annotations, phrase_ids)
    first_id = annotations[0]["id"] if annotations else 0
    write_image_outputs(np.asarray(image), groundings, first_id, state, entry.file_name, crops, overlays)
