"""The model step of a grounding run: a batch of decoded images -> COCO annotations per image.

Each image goes through the vision backbone once; all of its phrases are decoded together against
the text memory computed once per run.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from vgtool.data.image_dataset import ImageBatch
from vgtool.data.preprocess import PreprocessConfig, normalize
from vgtool.device import autocast
from vgtool.models.inference import decode_pairs
from vgtool.models.postprocess import PostProcess
from vgtool.models.vlgtr import VLGTR, TextMemory
from vgtool.writers.coco import detections_to_coco_annotations


@dataclass
class GroundingStep:
    """Runs the model on image batches for a fixed set of phrases.

    Attributes:
        net: the model, in eval mode on ``device``.
        text_memory: the run's P phrases, encoded once.
        phrase_texts: the P phrase texts (written into each annotation).
        category_ids: ``[P]`` COCO category id of each phrase.
        image_ids: COCO image id per position in the run's image list (``ImageBatch.indices``).
        measure: ``measure(stage_name)`` context manager that accumulates stage timings.
    """

    net: VLGTR
    device: torch.device
    bf16: bool
    preprocess: PreprocessConfig
    postprocess: PostProcess
    text_memory: TextMemory
    phrase_texts: list[str]
    category_ids: list[int]
    image_ids: list[int]
    measure: Callable[[str], AbstractContextManager]

    def __call__(self, batch: ImageBatch, first_annotation_id: int) -> dict[int, list[dict[str, Any]]]:
        """Ground every phrase in every decoded image of ``batch``.

        Returns:
            ``{index: annotations}`` per decoded image (annotation ids count up from
            ``first_annotation_id`` in batch order); failed images are not included.
        """
        if not batch.indices:
            return {}
        num_phrases, num_images = len(self.phrase_texts), len(batch.indices)
        with torch.inference_mode(), autocast(self.device, self.bf16):
            pixels = normalize(batch.pixels.to(self.device, non_blocking=True), self.preprocess)
            with self.measure("backbone"):
                image_memory = self.net.encode_image(pixels)
            image_index = torch.arange(num_images, device=self.device).repeat_interleave(num_phrases)
            text_index = torch.arange(num_phrases, device=self.device).repeat(num_images)
            with self.measure("decoder"):
                outputs = decode_pairs(self.net, image_memory, self.text_memory, image_index, text_index)
        results: dict[int, list[dict[str, Any]]] = {}
        next_id = first_annotation_id
        with self.measure("postprocess"):
            detections = self.postprocess(outputs, batch.sizes_wh.repeat_interleave(num_phrases, dim=0))
            for b, index in enumerate(batch.indices):
                annotations: list[dict[str, Any]] = []
                for p in range(num_phrases):
                    boxes_xyxy, scores = detections[b * num_phrases + p]
                    new = detections_to_coco_annotations(
                        boxes_xyxy.numpy(),
                        scores.numpy(),
                        image_id=self.image_ids[index],
                        category_id=self.category_ids[p],
                        phrase=self.phrase_texts[p],
                        first_id=next_id,
                    )
                    next_id += len(new)
                    annotations.extend(new)
                results[index] = annotations
        return results
