"""Image -> model input. Boxes stay normalised to the displayed image, so a plain resize suffices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class PreprocessConfig:
    """What the vision backbone expects.

    Attributes:
        image_size: square side in pixels the image is resized to (aspect ratio is not kept; the
            model predicts boxes normalised to the image, which a resize leaves unchanged).
        mean, std: per-channel normalisation of RGB in [0, 1].
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_model(cls, model) -> PreprocessConfig:
        vision = model.vision
        return cls(image_size=vision.image_size, mean=tuple(vision.mean), std=tuple(vision.std))


def resize_to_input(image: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """Resize an RGB PIL image and return ``[3, S, S]`` uint8 (normalised later, on the device)."""
    resized = image.resize((config.image_size, config.image_size), Image.BILINEAR, reducing_gap=3.0)
    array = np.asarray(resized, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def normalize(pixels_uint8: torch.Tensor, config: PreprocessConfig, dtype=torch.float32) -> torch.Tensor:
    """``[B, 3, S, S]`` uint8 -> normalised float ``[B, 3, S, S]`` on the same device."""
    mean = torch.tensor(config.mean, device=pixels_uint8.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(config.std, device=pixels_uint8.device, dtype=dtype).view(1, 3, 1, 1) * 255.0
    return (pixels_uint8.to(dtype) - mean) / std
