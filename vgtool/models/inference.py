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


def prefers_channels_last(net, device: torch.device) -> bool:
    """Whether the vision backbone runs faster on channels-last inputs and weights on ``device``.

    On CUDA, yes (tensor-core convolutions, a ViT's patch embedding among them). On CPU, for
    convolutional backbones: oneDNN's convolutions run the bundled ResNet's forward pass about 1.7x
    faster channels-last; a ViT (one convolution, its patch embedding) gains nothing there.
    """
    if device.type == "cuda":
        return True
    return sum(isinstance(module, torch.nn.Conv2d) for module in net.vision.modules()) > 1


# oneDNN's AVX-512 1x1-convolution weight gradient (the kernel CPUs without AMX run) crashes the process
# on channels-last inputs when a strided 1x1 convolution has fewer input channels than this (PyTorch
# 2.13, seen on AMD EPYC with AVX-512; contiguous tensors and 16 or more channels are unaffected).
_MIN_CHANNELS_STRIDED_1X1_BACKWARD = 16


def channels_last_trains_safely(net, device: torch.device) -> bool:
    """Whether the vision backbone can be trained channels-last on ``device`` (see above).

    Forward passes are unaffected; only the weight gradient of a strided 1x1 convolution (a ResNet's
    downsampling shortcut) with fewer than 16 input channels is. Such a backbone trains contiguous.
    """
    if device.type != "cpu":
        return True
    return not any(
        isinstance(module, torch.nn.Conv2d)
        and module.kernel_size == (1, 1)
        and max(module.stride) > 1
        and module.in_channels < _MIN_CHANNELS_STRIDED_1X1_BACKWARD
        for module in net.vision.modules()
    )


def prepare_for_inference(net, device: torch.device, *, compile_model: bool = False) -> bool:
    """Make a loaded model fast on ``device``; returns whether its backbone now runs channels-last.

    The vision backbone is switched to channels-last memory where that is faster (see
    :func:`prefers_channels_last`); the model then converts its input images itself. With
    ``compile_model`` the backbone and the decoder are wrapped in ``torch.compile`` (the first batches
    are slow while it compiles; pays off on long runs).
    """
    channels_last = prefers_channels_last(net, device)
    if channels_last:
        net.use_channels_last()
    if compile_model:
        net.vision.forward = torch.compile(net.vision.forward)
        net.decoder.forward = torch.compile(net.decoder.forward, dynamic=True)
    return channels_last
