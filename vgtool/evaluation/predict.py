"""Run a model over dataset samples: every query box and score of every (image, phrase) sample.

Samples are grouped by image, so each image is decoded and encoded once however many phrases it
has; each distinct phrase is tokenised once. A batch decodes all (image, phrase) pairs of its images
together. No threshold and no NMS: the metrics choose their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vgtool.data.image_dataset import ImageBatch, ImageFileDataset, collate_images
from vgtool.data.listing import ImageEntry
from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.data.tokenize import PhraseTokenizer
from vgtool.datasets.sample import GroundingSample
from vgtool.device import autocast, resolve_device
from vgtool.errors import InputError
from vgtool.models.inference import decode_pairs
from vgtool.models.postprocess import PostProcess, PostProcessConfig


def predict_samples(
    model,
    samples: Sequence[GroundingSample],
    *,
    batch_size: int = 16,
    device: str | torch.device,
    bf16: bool = False,
    progress: bool = True,
    num_workers: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Predict every query box for every sample.

    Args:
        model: a VLGTR in eval mode, already on ``device``.
        samples: the samples; many may share an image.
        batch_size: distinct images per model call.
        device: where the model runs (``auto``, ``cpu``, ``cuda:N`` or a torch device).
        bf16: bf16 autocast.
        progress: show a progress bar (per image).
        num_workers: DataLoader processes that decode images.

    Returns:
        Per sample, in input order, ``(boxes_xyxy [Q', 4] float32, scores [Q'] float32)``: the query
        boxes in pixels of the displayed image, clipped to it, with their object probabilities, by
        decreasing score. As in grounding output, boxes left empty by clipping are dropped, so
        ``Q' <= Q``.

    Raises:
        InputError: an image cannot be decoded (the message names the file).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if not samples:
        return []
    image_paths = sorted({sample.image_path for sample in samples})
    image_pos = {path: i for i, path in enumerate(image_paths)}
    phrases = sorted({sample.phrase for sample in samples})
    phrase_pos = {phrase: i for i, phrase in enumerate(phrases)}
    # Distinct (image, phrase) pairs per image, and the samples each pair answers.
    pairs_of_image: list[dict[int, list[int]]] = [{} for _ in image_paths]
    for i, sample in enumerate(samples):
        pairs_of_image[image_pos[sample.image_path]].setdefault(phrase_pos[sample.phrase], []).append(i)

    tokenizer = PhraseTokenizer.for_model(model)
    tokens = tokenizer(phrases)  # [P, T], tokenised once
    preprocess = PreprocessConfig.from_model(model)
    postprocess = PostProcess(PostProcessConfig(threshold=0.0, top_k=0, nms_iou=1.0))
    dataset = ImageFileDataset(
        [ImageEntry(path=path, file_name=path.name) for path in image_paths], preprocess, keep_images=False
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=device.type == "cuda",
    )
    results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(samples)

    from tqdm import tqdm

    with (
        tqdm(total=len(image_paths), unit="img", disable=not progress, dynamic_ncols=True) as bar,
        torch.inference_mode(),
        autocast(device, bf16),
    ):
        batch: ImageBatch
        for batch in loader:
            if batch.failures:
                index, reason = batch.failures[0]
                raise InputError(f"{image_paths[index]}: {reason}")
            image_memory = model.encode_image(
                normalize(batch.pixels.to(device, non_blocking=True), preprocess)
            )
            # Encode only this batch's phrases; drop token columns that are padding in all of them.
            batch_phrases = sorted({p for index in batch.indices for p in pairs_of_image[index]})
            local = {phrase: j for j, phrase in enumerate(batch_phrases)}
            rows = torch.tensor(batch_phrases)
            mask = tokens["attention_mask"][rows]
            columns = mask.bool().any(0)
            text_memory = model.encode_text(
                tokens["input_ids"][rows][:, columns].to(device), mask[:, columns].to(device)
            )
            pair_keys = [(b, p) for b, index in enumerate(batch.indices) for p in pairs_of_image[index]]
            image_index = torch.tensor([b for b, _ in pair_keys], device=device)
            text_index = torch.tensor([local[p] for _, p in pair_keys], device=device)
            outputs = decode_pairs(model, image_memory, text_memory, image_index, text_index)
            detections = postprocess(outputs, batch.sizes_wh[image_index.cpu()])
            for (b, p), (boxes_xyxy, scores) in zip(pair_keys, detections, strict=True):
                prediction = (boxes_xyxy.numpy().astype(np.float32), scores.numpy().astype(np.float32))
                for i in pairs_of_image[batch.indices[b]][p]:
                    results[i] = prediction
            bar.update(len(batch.indices))
    return results  # type: ignore[return-value]
