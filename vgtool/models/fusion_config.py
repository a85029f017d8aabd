"""Typed configuration of the ``fusion`` family's head (:mod:`vgtool.models.fusion`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vgtool.errors import ConfigError


@dataclass(frozen=True)
class FusionConfig:
    """The head of the ``fusion`` family: global image and text embeddings fused with a feature map
    by convolutions, and one box regressed from the pooled result.

    The defaults are the seed system's (CLIP RN50 + HRNet-W18 on RefCOCOg): the 1024-d CLIP image
    and text embeddings each reduced to 128 channels and the 512-channel HRNet map to 64 by 1x1
    convolutions, the 320 channels convolved to 256 and pooled, and a 256 -> 256 -> 4 regressor.

    Attributes:
        clip_image: the CLIP image tower whose embedding joins the map, ``MODEL:TAG`` as open_clip
            lists it (``RN50:openai``). It is part of the vision encoder: pretrained when
            ``vision.pretrained`` is, frozen and cached with the backbone. None: the backbone's
            average-pooled feature map is the image embedding (to compare heads on one backbone).
        clip_overrides: open_clip model-config overrides for that tower (tiny models for tests).
        embed_channels: width each embedding (image, text) is reduced to by a 1x1 convolution.
        map_channels: width the backbone's feature map is reduced to by a 1x1 convolution.
        fused_dim: width of the fusion convolutions, and of the pooled vector.
        fusion_layers: 3x3 convolution + batch norm + ReLU + dropout blocks.
        regressor_dim: hidden width of the feed-forward box regressor.
        dropout: after each fusion block and the regressor's hidden layer.
    """

    clip_image: str | None = "RN50:openai"
    clip_overrides: dict[str, Any] = field(default_factory=dict)
    embed_channels: int = 128
    map_channels: int = 64
    fused_dim: int = 256
    fusion_layers: int = 2
    regressor_dim: int = 256
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for name in ("embed_channels", "map_channels", "fused_dim", "fusion_layers", "regressor_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"fusion.{name} must be at least 1, not {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"fusion.dropout must be in [0, 1), not {self.dropout}")
        if self.clip_overrides and self.clip_image is None:
            raise ConfigError("fusion.clip_overrides is set, but fusion.clip_image is None")
