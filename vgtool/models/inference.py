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


def prepare_for_inference(net, device: torch.device, *, compile_model: bool = False) -> bool:
    """Make a loaded model fast on ``device``; returns whether inputs should be channels-last.

    On CUDA the vision backbone is switched to channels-last memory (faster convolutions, among
    them a ViT's patch embedding, on tensor cores). With ``compile_model`` the backbone and the
    decoder are wrapped in ``torch.compile`` (the first batches are slow while it compiles; pays off
    on long runs).
    """
    channels_last = device.type == "cuda"
    if channels_last:
        net.vision.to(memory_format=torch.channels_last)
    if compile_model:
        net.vision.forward = torch.compile(net.vision.forward)
        net.decoder.forward = torch.compile(net.decoder.forward, dynamic=True)
    return channels_last
