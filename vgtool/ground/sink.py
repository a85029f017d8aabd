"""The sink of a grounding run: per-image results -> journal lines, crops and overlays, summary.

The journal line of an image is written (and flushed per batch) before its crops and overlay are
queued on the background writer, so the model loop never waits on image encoding or disk, and a
resumed run knows which outputs an interruption may have lost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from vgtool.data.image_dataset import ImageBatch
from vgtool.data.listing import ImageEntry
from vgtool.errors import InputError
from vgtool.ground.output_dir import RunState
from vgtool.writers.background import BackgroundWriter
from vgtool.writers.crops import write_crops
from vgtool.writers.journal import Journal
from vgtool.writers.overlays import write_overlay


def warn(message: str) -> None:
    """One warning line on stderr that does not break the progress bar."""
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def write_image_outputs(
    image_array: np.ndarray,
    annotations: list[dict[str, Any]],
    state: RunState,
    file_name: str,
    crops: bool,
    overlays: bool,
) -> None:
    """Write one image's crops and overlay (``image_array``: uint8 ``[H, W, 3]``, displayed frame)."""
    image = Image.fromarray(image_array)
    if crops and annotations:
        write_crops(image, annotations, state.category_names, state.out_dir, file_name)
    if overlays:
        write_overlay(image, annotations, state.out_dir, file_name)


class ResultSink:
    """Records each batch's results in order: journal line, then background crops/overlay.

    Attributes:
        grounded: images grounded by this run.
        skipped: ``{"file", "reason"}`` of images this run could not decode.
    """

    def __init__(
        self,
        journal: Journal,
        writer: BackgroundWriter,
        state: RunState,
        todo: Sequence[tuple[int, ImageEntry]],
        *,
        crops: bool,
        overlays: bool,
        strict: bool,
        warn: Callable[[str], None] = warn,
    ):
        self.journal = journal
        self.writer = writer
        self.state = state
        self.todo = todo
        self.crops, self.overlays, self.strict = crops, overlays, strict
        self.warn = warn
        self.grounded = 0
        self.skipped: list[dict[str, str]] = []

    def __call__(self, batch: ImageBatch, results: dict[int, list[dict[str, Any]]]) -> int:
        """Record a batch (``results`` from :class:`GroundingStep`); returns the images finished.

        Raises:
            InputError: with ``strict``, at the first image that could not be decoded.
        """
        failures = dict(batch.failures)
        for index in sorted([*results, *failures]):
            image_id, entry = self.todo[index]
            if index in failures:
                self._skip(image_id, entry, failures[index])
                continue
            b = batch.indices.index(index)
            width, height = (int(v) for v in batch.sizes_wh[b].tolist())
            self.journal.append(
                {
                    "image_id": image_id + 1,
                    "file_name": entry.file_name,
                    "width": width,
                    "height": height,
                    "annotations": results[index],
                }
            )
            self.grounded += 1
            if batch.images is not None and (self.crops or self.overlays):
                self.writer.submit(
                    write_image_outputs,
                    batch.images[b],
                    results[index],
                    self.state,
                    entry.file_name,
                    self.crops,
                    self.overlays,
                )
        self.journal.flush()
        return len(results) + len(failures)

    def _skip(self, image_id: int, entry: ImageEntry, reason: str) -> None:
        if self.strict:
            raise InputError(f"{entry.path}: {reason}")
        self.warn(f"skipped {entry.path}: {reason}")
        self.journal.append({"image_id": image_id + 1, "file_name": entry.file_name, "skipped": reason})
        self.skipped.append({"file": entry.file_name, "reason": reason})
