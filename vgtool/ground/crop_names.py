"""Crop names that do not depend on who grounded an image: pending crops, named once ids are known.

A crop is named by its annotation id (``crops/<category>/<stem>_<id>.jpg``), and ids count up in
image order over the whole run (see :mod:`~vgtool.writers.assemble`), so a rank of a sharded run
cannot know them while it grounds: images before its own are still being grounded elsewhere. Its
journal records carry ``"local_ids": true`` (annotation ids 1..n within the image), and their crops
are written under ``.pending/crops/<category>/<image id>_<n>.jpg``. Once every image is grounded,
:func:`name_crops` moves each pending crop to its final name. A run of one process in a folder that
holds no such records journals final ids and writes final names at once, as it always has.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from vgtool.data.listing import ImageList
from vgtool.ground.output_dir import RunState
from vgtool.writers.assemble import numbered_records
from vgtool.writers.crops import crop_path
from vgtool.writers.run_folder import PENDING_DIR


def pending_crop_path(out_dir: Path, category: str, image_id: int, index: int) -> Path:
    """Where the ``index``-th (from 1) crop of image ``image_id`` waits for its final name."""
    return crop_path(out_dir / PENDING_DIR, category, str(image_id), index)


def name_crops(journal_paths: Sequence[Path], state: RunState, entries: ImageList, crops: bool = True) -> int:
    """Move every pending crop to its final name, re-write the crops that neither name holds (by
    decoding the image again), and drop ``.pending``; returns the number of images re-written.
    Without ``crops`` (a run that writes none) only ``.pending`` is dropped.

    Safe to repeat: a crop already moved is found under its final name.
    """
    from vgtool.ground.resume import journaled_position, repair_outputs

    out_dir, names = state.out_dir, state.category_names
    repaired = 0
    for record in numbered_records(journal_paths) if crops else ():
        if not record.get("local_ids"):
            continue
        missing = False
        for index, ann in enumerate(record["annotations"], start=1):
            category = names[ann["category_id"]]
            final = crop_path(out_dir, category, record["file_name"], ann["id"])
            pending = pending_crop_path(out_dir, category, record["image_id"], index)
            if pending.exists():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(pending, final)
            elif not final.exists():
                missing = True
        position = journaled_position(entries, record) if missing else None
        if position is not None:
            repair_outputs(entries[position], record["annotations"], state, True, False)
            repaired += 1
    shutil.rmtree(out_dir / PENDING_DIR, ignore_errors=True)
    return repaired
