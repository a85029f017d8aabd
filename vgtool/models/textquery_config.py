"""Typed configuration of the text-as-query single-box head (:mod:`vgtool.models.textquery`)."""

from __future__ import annotations

from dataclasses import dataclass

from vgtool.errors import ConfigError


@dataclass(frozen=True)
class TextQueryConfig:
    """The head of the ``textquery`` family: the phrase's tokens query the image tokens.

    The defaults are the seed system's (DINOv3 ViT-B/16 + BGE-small): both encoders projected to 512,
    a 6-layer, 8-head transformer decoder, and a 512 -> 256 -> 4 box MLP.

    Attributes:
        d_model: width the image and text tokens are projected to, and the decoder's width.
        num_layers: decoder layers (self-attention over the phrase's tokens, cross-attention to the
            image tokens, feed-forward).
        num_heads: attention heads; must divide ``d_model``.
        ffn_dim: hidden width of each layer's feed-forward block.
        dropout: dropout inside the decoder layers.
        box_hidden: hidden width of the two-layer box MLP.
    """

    d_model: int = 512
    num_layers: int = 6
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    box_hidden: int = 256

    def __post_init__(self) -> None:
        for name in ("d_model", "num_layers", "num_heads", "ffn_dim", "box_hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"textquery.{name} must be at least 1, not {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"textquery.num_heads ({self.num_heads}) must divide textquery.d_model ({self.d_model})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"textquery.dropout must be in [0, 1), not {self.dropout}")
