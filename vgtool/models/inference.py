"""Inference helpers shared by grounding and evaluation."""

from __future__ import annotations

import torch

from vgtool.models.vlgtr import ImageMemory, TextMemory

# (image, phrase) pairs per decoder call, to bound activation memory on large batches.
MAX_PAIRS_PER_DECODE = 512


def decode_pairs(
    model,
    image_memory: ImageMemory,
    text_memory: TextMemory,
    image_index: torch.Tensor,
    text_index: torch.Tensor,
    max_pairs: int = MAX_PAIRS_PER_DECODE,
) -> dict[str, torch.Tensor]:
    """Decode K (image, phrase) pairs in chunks and return float32 CPU tensors.

    Returns:
        ``pred_logits`` ``[K, Q, 2]`` and ``pred_boxes`` ``[K, Q, 4]`` cxcywh in [0, 1].
    """
    chunks = []
    for start in range(0, len(image_index), max_pairs):
        part = slice(start, start + max_pairs)
        out = model.decode(image_memory, text_memory, image_index[part], text_index[part])
        chunks.append({key: out[key].float().cpu() for key in ("pred_logits", "pred_boxes")})
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in ("pred_logits", "pred_boxes")}
