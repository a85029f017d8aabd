"""Run a grounder over dataset samples: every box and score of every (image, phrase) sample.

Samples are grouped by image, so each image is decoded and encoded once however many phrases it
has, and each batch encodes the distinct phrases of its images once. No threshold and no NMS: the
metrics choose their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vgtool.data.listing import ImageEntry
from vgtool.datasets.sample import GroundingSample
from vgtool.errors import InputError
from vgtool.grounders.base import Grounder
from vgtool.models.postprocess import PostProcessConfig
from vgtool.prediction.loop import predict_images

# Every box the model gives, for metrics that pick their own operating points.
ALL_BOXES = PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0)


def predict_samples(
    grounder: Grounder,
    samples: Sequence[GroundingSample],
    *,
    batch_size: int = 16,
    progress: bool = True,
    num_workers: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Predict every box for every sample.

    Args:
        grounder: the loaded model.
        samples: the samples; many may share an image.
        batch_size: distinct images per model call.
        progress: show a progress bar (per image).
        num_workers: DataLoader processes that decode images.

    Returns:
        Per sample, in input order, ``(boxes_xyxy [Q', 4] float32, scores [Q'] float32)``: the boxes
        in pixels of the displayed image, clipped to it, by decreasing score. As in grounding output,
        boxes left empty by clipping are dropped.

    Raises:
        InputError: an image cannot be decoded (the message names the file).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not samples:
        return []
    image_paths = sorted({sample.image_path for sample in samples})
    image_pos = {path: i for i, path in enumerate(image_paths)}
    phrases = sorted({sample.phrase for sample in samples})
    phrase_pos = {phrase: i for i, phrase in enumerate(phrases)}
    # Distinct phrases per image, and the samples each (image, phrase) pair answers.
    samples_of_pair: dict[tuple[int, int], list[int]] = {}
    for i, sample in enumerate(samples):
        key = (image_pos[sample.image_path], phrase_pos[sample.phrase])
        samples_of_pair.setdefault(key, []).append(i)
    pairs_of_image: list[list[int]] = [[] for _ in image_paths]
    for image, phrase in sorted(samples_of_pair):
        pairs_of_image[image].append(phrase)

    from tqdm import tqdm

    results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(samples)
    entries = [ImageEntry(path=path, file_name=path.name) for path in image_paths]
    with tqdm(total=len(image_paths), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for predicted in predict_images(
            grounder,
            entries,
            phrases,
            postprocess=ALL_BOXES,
            batch_size=batch_size,
            num_workers=num_workers,
            pairs_of_image=pairs_of_image,
        ):
            batch = predicted.batch
            if batch.failures:
                index, reason = batch.failures[0]
                raise InputError(f"{image_paths[index]}: {reason}")
            for index, groundings in zip(batch.indices, predicted.groundings, strict=True):
                for phrase in pairs_of_image[index]:
                    mine = groundings[groundings.phrase_ids == phrase]
                    for i in samples_of_pair[(index, phrase)]:
                        results[i] = (mine.xyxy, mine.scores)
            bar.update(len(batch.indices))
    return results  # type: ignore[return-value]
