"""The image encoder: self-attention over an image's tokens before any phrase sees them (as in DETR).

Each token of the projected backbone grid attends to every other token of the same image, so its
features can carry the scene around it (what lies left of it, whether a larger one of its kind exists),
which relations and superlatives need. It runs once per image, however many phrases are grounded in it.
"""

from __future__ import annotations

import torch
from torch import nn

from vgtool.models.config import EncoderConfig
from vgtool.models.decoder import Attention


class EncoderLayer(nn.Module):
    """Pre-norm layer: self-attention (the position added to queries and keys), then feed-forward."""

    def __init__(self, d_model: int, config: EncoderConfig):
        super().__init__()
        self.self_attn = Attention(d_model, config.num_heads, config.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, config.ffn_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_dim, d_model),
        )
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` tokens and ``[N, D]`` positions -> ``[B, N, D]`` tokens."""
        x = self.norm1(tokens)
        qk = x + pos
        tokens = tokens + self.drop(self.self_attn(qk, qk, x))
        return tokens + self.drop(self.ffn(self.norm2(tokens)))


class ImageEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` with a final norm."""

    def __init__(self, d_model: int, config: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            tokens: ``[B, N, D]`` projected patch tokens, ``N = h * w`` in row-major order.
            pos: ``[N, D]`` their 2D positional encoding.

        Returns:
            ``[B, N, D]`` contextualised tokens (normalised).
        """
        for layer in self.layers:
            tokens = layer(tokens, pos)
        return self.norm(tokens)
