"""The sink of a grounding run: each batch's groundings -> journal lines, then crops and overlays.

The journal line of an image is written (and flushed per batch) before its crops and overlay are
queued on the background writer, so the model loop never waits on image encoding or disk, and a
resumed run knows which outputs an interruption may have lost. Annotation ids count up from 1 in
image order, across runs that resume one another; a rank of a sharded run journals image-local ids
instead and writes pending crops (see :mod:`~vgtool.ground.crop_names`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from vgtool.data.listing import ImageEntry
from vgtool.errors import InputError
from vgtool.ground.merge import merge_phrases
from vgtool.ground.output_dir import RunState
from vgtool.groundings import Groundings
from vgtool.prediction.loop import PredictedBatch
from vgtool.writers.background import BackgroundWriter
from vgtool.writers.coco import groundings_to_coco_annotations
from vgtool.writers.crops import write_crops
from vgtool.writers.journal import Journal
from vgtool.writers.overlays import write_overlay
from vgtool.writers.run_folder import PENDING_DIR


def warn(message: str) -> None:
    """One warning line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def write_image_outputs(
    image_array: np.ndarray,
    groundings: Groundings,
    first_id: int,
    state: RunState,
    file_name: str,
    crops: bool,
    overlays: bool,
    pending_image_id: int | None = None,
) -> None:
    """Write one image's crops and overlay.

    Args:
        image_array: uint8 ``[H, W, 3]``, the displayed image.
        groundings: its boxes; their annotation ids count up from ``first_id``.
        pending_image_id: the image's id when its crops are pending (image-local ids, named later).
    """
    image = Image.fromarray(image_array)
    ontology = state.ontology
    if crops and len(groundings):
        pending = pending_image_id is not None
        write_crops(
            image,
            groundings,
            folders=ontology.phrase_categories,
            first_id=first_id,
            out_dir=state.out_dir / PENDING_DIR if pending else state.out_dir,
            file_name=str(pending_image_id) if pending else file_name,
        )
    if overlays:
        write_overlay(
            image,
            groundings,
            labels=ontology.texts,
            colour_ids=ontology.category_ids,
            out_dir=state.out_dir,
            file_name=file_name,
        )


class ResultSink:
    """Records each batch's results in order: journal line, then background crops/overlay.

    ``merge`` (each phrase's merge group, and the IoU) merges boxes several phrases put on one
    object (:func:`~vgtool.ground.merge.merge_phrases`) before anything is written. With
    ``local_ids`` each image's annotation ids count from 1, its record says so, and its crops are
    pending (a rank of a sharded run; see :mod:`~vgtool.ground.crop_names`).

    A batch's ``indices`` are places in ``todo``, the positions in ``entries`` (the run's images)
    of the images being grounded; an image's id is its position + 1.

    Attributes:
        next_annotation_id: the id the next box gets.
        grounded: images grounded by this run.
        skipped: ``{"file", "reason"}`` of images this run could not decode.
    """

    def __init__(
        self,
        journal: Journal,
        writer: BackgroundWriter,
        state: RunState,
        entries: Sequence[ImageEntry],
        todo: Sequence[int],
        *,
        first_annotation_id: int,
        crops: bool,
        overlays: bool,
        strict: bool,
        merge: tuple[Sequence[int], float] | None = None,
        local_ids: bool = False,
        warn: Callable[[str], None] = warn,
    ):
        self.journal = journal
        self.writer = writer
        self.state = state
        self.entries = entries
        self.todo = todo
        self.crops, self.overlays, self.strict = crops, overlays, strict
        self.merge = merge
        self.local_ids = local_ids
        self.warn = warn
        self.next_annotation_id = first_annotation_id
        self.grounded = 0
        self.skipped: list[dict[str, str]] = []

    def __call__(self, predicted: PredictedBatch) -> int:
        """Record a batch; returns the number of images finished.

        Raises:
            InputError: with ``strict``, at the first image that could not be decoded.
        """
        batch = predicted.batch
        failures = dict(batch.failures)
        position = {index: b for b, index in enumerate(batch.indices)}
        for index in sorted([*position, *failures]):
            image_id = int(self.todo[index])
            entry = self.entries[image_id]
            if index in failures:
                self._skip(image_id, entry, failures[index])
            else:
                self._record(predicted, position[index], image_id + 1, entry)
        self.journal.flush()
        return len(position) + len(failures)

    def _record(self, predicted: PredictedBatch, b: int, image_id: int, entry: ImageEntry) -> None:
        batch, groundings = predicted.batch, predicted.groundings[b]
        if self.merge is not None:
            groundings = merge_phrases(groundings, *self.merge)
        first_id = 1 if self.local_ids else self.next_annotation_id
        annotations = groundings_to_coco_annotations(
            groundings,
            image_id=image_id,
            phrases=self.state.ontology.texts,
            category_ids=self.state.ontology.category_ids,
            first_id=first_id,
        )
        if not self.local_ids:
            self.next_annotation_id += len(annotations)
        width, height = (int(v) for v in batch.sizes_wh[b].tolist())
        record = {
            "image_id": image_id,
            "file_name": entry.file_name,
            "width": width,
            "height": height,
            "annotations": annotations,
        }
        if self.local_ids:
            record["local_ids"] = True
        self.journal.append(record)
        self.grounded += 1
        if batch.images is not None and (self.crops or self.overlays):
            self.writer.submit(
                write_image_outputs,
                batch.images[b],
                groundings,
                first_id,
                self.state,
                entry.file_name,
                self.crops,
                self.overlays,
                image_id if self.local_ids else None,
            )

    def _skip(self, image_id: int, entry: ImageEntry, reason: str) -> None:
        if self.strict:
            raise InputError(f"{entry.path}: {reason}")
        self.warn(f"skipped {entry.path}: {reason}")
        self.journal.append({"image_id": image_id + 1, "file_name": entry.file_name, "skipped": reason})
        self.skipped.append({"file": entry.file_name, "reason": reason})
