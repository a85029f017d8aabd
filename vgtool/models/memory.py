"""Encoded images and phrases: what VL-GTR's encoders hand to its decoder (DETR's "memory").

Images and phrases are encoded apart and paired only when decoding, so each image is encoded once
however many phrases are grounded in it, and each phrase once however many images it is grounded in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageMemory:
    """Encoded images, ready for any number of phrases.

    Attributes:
        tokens: ``[B, N, D]`` projected patch tokens (decoder values).
        keys: ``[B, N, D]`` tokens plus the 2D positional encoding (decoder keys).
        grid: ``(h, w)`` of the token grid, ``N = h * w`` in row-major order.
    """

    tokens: torch.Tensor
    keys: torch.Tensor
    grid: tuple[int, int] = (0, 0)


@dataclass
class TextMemory:
    """Encoded phrases, ready for any number of images.

    Attributes:
        tokens: ``[P, T, D]`` projected token features (decoder values).
        keys: ``[P, T, D]`` tokens plus the text type embedding (decoder keys).
        valid: ``[P, T]`` bool, True for real tokens.
        pooled: ``[P, D]`` mean of the valid tokens, the phrase's query content.
    """

    tokens: torch.Tensor
    keys: torch.Tensor
    valid: torch.Tensor
    pooled: torch.Tensor
