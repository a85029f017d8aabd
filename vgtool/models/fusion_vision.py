"""The ``fusion`` family's vision encoder: a backbone's feature map, with CLIP's image embedding
packed in as a few extra channels.

The trainer caches one tensor per image while the vision encoder is frozen, so both outputs travel
as one ``[B, C + k, h, w]`` map: channels ``[:C]`` are the backbone's map; the ``E``-d CLIP
embedding fills the ``k = ceil(E / (h * w))`` channels after them, row-major (channel, row,
column), zero-padded. Packed, a 1024-d embedding costs 6 channels of a 14 x 14 map instead of the
1024 of the broadcast map the head builds from it (:func:`pack_embedding`, :func:`unpack_embedding`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vgtool.models.config import VisionConfig
from vgtool.models.vision import VisionBackbone


def pack_embedding(feature_map: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` map and ``[B, E]`` embedding -> ``[B, C + ceil(E / (h*w)), h, w]``."""
    batch, _, height, width = feature_map.shape
    cells = height * width
    channels = math.ceil(embedding.shape[1] / cells)
    packed = embedding.new_zeros(batch, channels * cells)
    packed[:, : embedding.shape[1]] = embedding
    packed = packed.view(batch, channels, height, width).to(feature_map.dtype)
    return torch.cat([feature_map, packed.contiguous(memory_format=_memory_format(feature_map))], 1)


def unpack_embedding(
    features: torch.Tensor, map_dim: int, embed_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_embedding`: ``[B, map_dim, h, w]`` map and ``[B, embed_dim]`` embedding."""
    embedding = features[:, map_dim:].flatten(1)[:, :embed_dim]
    return features[:, :map_dim], embedding


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    channels_last = tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def _stride(backbone: VisionBackbone) -> int:
    """Input pixels per feature-map cell: the patch size, or a timm CNN's reduction (16 if unknown)."""
    if backbone.patch_size:
        return backbone.patch_size
    feature_info = getattr(backbone.model, "feature_info", None)
    try:
        return int(feature_info.reduction()[-1])
    except (AttributeError, TypeError, IndexError):
        return 16


class FusionVision(nn.Module):
    """A :class:`VisionBackbone` and, optionally, CLIP's image tower, run on the same image.

    Attributes:
        backbone: the feature-map backbone (HRNet in the seed).
        clip: CLIP's image tower, or None (the head then pools the backbone's map).
        map_dim: channels of the backbone's map (``C``).
        clip_dim: width of the CLIP embedding (``E``), 0 without CLIP.
        embed_dim: channels of the returned map at ``image_size`` (``C + k``).
        image_size, mean, std, patch_size, num_prefix_tokens: the backbone's; images are normalised
            for the backbone and renormalised for CLIP here.
    """

    def __init__(self, backbone: VisionBackbone, clip: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.clip = clip
        self.config: VisionConfig = backbone.config
        self.image_size = backbone.image_size
        self.mean, self.std = backbone.mean, backbone.std
        self.patch_size = backbone.patch_size
        self.num_prefix_tokens = backbone.num_prefix_tokens
        self.map_dim = backbone.embed_dim
        self.clip_dim = int(clip.embed_dim) if clip is not None else 0
        self.embed_dim = self.map_dim
        if clip is not None:
            # x_clip = (x * std + mean - clip_mean) / clip_std, for x normalised with the backbone's mean/std
            mean, std = torch.tensor(self.mean), torch.tensor(self.std)
            clip_mean, clip_std = torch.tensor(clip.mean), torch.tensor(clip.std)
            self.register_buffer("clip_scale", (std / clip_std).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(
                "clip_shift", ((mean - clip_mean) / clip_std).view(1, 3, 1, 1), persistent=False
            )
            cells = math.ceil(self.image_size / _stride(backbone)) ** 2
            self.embed_dim = self.map_dim + math.ceil(self.clip_dim / cells)

    @property
    def image_embed_dim(self) -> int:
        """Width of the image embedding :meth:`split` returns."""
        return self.clip_dim or self.map_dim

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            pixel_values: ``[B, 3, S, S]`` normalised with ``mean``/``std``.

        Returns:
            ``[B, C, h, w]`` backbone features, or with CLIP ``[B, C + k, h, w]`` with the CLIP
            embedding packed in (see the module docstring).
        """
        feature_map = self.backbone(pixel_values)
        if self.clip is None:
            return feature_map
        clip_pixels = pixel_values * self.clip_scale.to(pixel_values.dtype) + self.clip_shift.to(
            pixel_values.dtype
        )
        return pack_embedding(feature_map, self.clip(clip_pixels))

    def split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward`'s output -> ``[B, C, h, w]`` map and ``[B, E]`` image embedding (the
        CLIP embedding, or the map's spatial mean without CLIP)."""
        if self.clip is None:
            return features, features.mean(dim=(2, 3))
        return unpack_embedding(features, self.map_dim, self.clip_dim)
