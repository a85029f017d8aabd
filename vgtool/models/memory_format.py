"""Which memory layout the vision backbone runs fastest (and safely) in, for inference and training."""

from __future__ import annotations

import torch


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
