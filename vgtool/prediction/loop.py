"""The prediction loop: image files -> decoded in worker processes -> a grounder -> groundings.

Used by ``vgtool ground`` (which journals and writes what it yields), ``vgtool evaluate`` and
calibration (which collect it per sample) and ``vgtool bench``. It knows nothing of any model family:
it speaks to a :class:`~vgtool.grounders.base.Grounder`.

Phrases are encoded once per run when every image gets every phrase; when each image has its own
phrases (evaluation data), each batch encodes just the phrases of its images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vgtool.data.image_dataset import ImageBatch, ImageFileDataset, collate_images, worker_init
from vgtool.data.listing import ImageEntry
from vgtool.grounders.base import EncodedPhrases, Grounder, Measure, no_measure
from vgtool.groundings import Groundings
from vgtool.models.postprocess import PostProcessConfig


@dataclass
class PredictedBatch:
    """One batch's results.

    Attributes:
        batch: the decoded images (``indices`` into the run's entries) and the ``failures``
            (``(index, reason)``) of those that could not be decoded.
        groundings: one per decoded image, in ``batch.indices`` order; ``phrase_ids`` index the
            run's phrase list.
    """

    batch: ImageBatch
    groundings: list[Groundings]


def predict_images(
    grounder: Grounder,
    entries: Sequence[ImageEntry],
    phrases: Sequence[str],
    *,
    postprocess: PostProcessConfig,
    batch_size: int,
    num_workers: int = 0,
    keep_images: bool = False,
    pairs_of_image: Sequence[Sequence[int]] | None = None,
    measure: Measure = no_measure,
    warn: Callable[[str], None] | None = None,
) -> Iterator[PredictedBatch]:
    """Ground ``phrases`` in every image of ``entries``, one batch at a time, in order.

    Args:
        grounder: the loaded model.
        entries: the images; a file that cannot be decoded is reported in its batch's
            ``failures``, never raised.
        phrases: the run's phrases.
        postprocess: threshold, NMS and top-k.
        batch_size: images per model call.
        num_workers: DataLoader processes decoding images (0: in this process).
        keep_images: also hand over the decoded images (``batch.images``), for crops and overlays.
        pairs_of_image: per entry, the ascending indices of the phrases to ground in it; None
            grounds every phrase in every image.
        measure: records stage timings (``text``, ``wait_for_data`` and the grounder's own).
        warn: called once per distinct warning of phrase encoding (a phrase cut short).

    Yields:
        A :class:`PredictedBatch` per batch (including batches whose images all failed).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pairs_of_image is not None and len(pairs_of_image) != len(entries):
        raise ValueError(f"{len(entries)} entries but {len(pairs_of_image)} phrase lists")
    seen_warnings: set[str] = set()

    def encode(texts: Sequence[str]) -> EncodedPhrases:
        encoded = grounder.encode_phrases(texts, measure)
        for message in encoded.warnings:
            if warn is not None and message not in seen_warnings:
                seen_warnings.add(message)
                warn(message)
        return encoded

    run_phrases = encode(list(phrases)) if pairs_of_image is None else None
    loader = torch.utils.data.DataLoader(
        ImageFileDataset(entries, grounder.image_transform, keep_images=keep_images),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=grounder.device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        worker_init_fn=worker_init if num_workers else None,
    )
    batches = iter(loader)
    while True:
        with measure("wait_for_data"):
            batch: ImageBatch | None = next(batches, None)
        if batch is None:
            return
        if run_phrases is not None:
            groundings = grounder.predict(batch, run_phrases, postprocess=postprocess, measure=measure)
        else:
            groundings = _predict_own_phrases(
                grounder, batch, phrases, pairs_of_image, postprocess, encode, measure
            )
        yield PredictedBatch(batch=batch, groundings=groundings)


def _predict_own_phrases(
    grounder: Grounder,
    batch: ImageBatch,
    phrases: Sequence[str],
    pairs_of_image: Sequence[Sequence[int]],
    postprocess: PostProcessConfig,
    encode: Callable[[Sequence[str]], EncodedPhrases],
    measure: Measure,
) -> list[Groundings]:
    """Encode the phrases of this batch's images only, ground each image's own, and map the
    ``phrase_ids`` back to the run's phrase list."""
    if not batch.indices:
        return []
    used = sorted({p for index in batch.indices for p in pairs_of_image[index]})
    local = {p: j for j, p in enumerate(used)}
    pairs = [[local[p] for p in pairs_of_image[index]] for index in batch.indices]
    encoded = encode([phrases[p] for p in used])
    groundings = grounder.predict(batch, encoded, postprocess=postprocess, pairs=pairs, measure=measure)
    to_run = np.asarray(used, dtype=np.int64)
    return [
        Groundings(g.xyxy, g.scores, to_run[g.phrase_ids] if len(g) else g.phrase_ids, g.data)
        for g in groundings
    ]
