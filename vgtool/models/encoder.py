"""Self-attention encoders over one input's tokens, before the decoder pairs images with phrases.

:class:`ImageEncoder` (as in DETR): each token of the projected backbone grid attends to every other
token of the same image, so its features can carry the scene around it (what lies left of it, whether
a larger one of its kind exists), which relations and superlatives need. It runs once per image,
however many phrases are grounded in it.

:class:`PhraseEncoder`: each projected token of a phrase attends to the phrase's other real tokens, so
that trainable layers can mark which words describe the target and which describe another object.
It runs once per phrase, however many images it is grounded in.
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

    def forward(
        self, tokens: torch.Tensor, pos: torch.Tensor | None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """One layer.

        Args:
            tokens: ``[B, N, D]``.
            pos: ``[N, D]`` positions added to queries and keys, or None.
            mask: ``[B, 1, 1, N]`` bool, True where a token may be attended to; None: all.

        Returns:
            ``[B, N, D]`` tokens.
        """
        x = self.norm1(tokens)
        qk = x if pos is None else x + pos
        tokens = tokens + self.drop(self.self_attn(qk, qk, x, mask))
        return tokens + self.drop(self.ffn(self.norm2(tokens)))


class _EncoderStack(nn.Module):
    """A stack of :class:`EncoderLayer` with a final norm."""

    def __init__(self, d_model: int, config: EncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d_model)


class ImageEncoder(_EncoderStack):
    """Self-attention over each image's tokens, with their 2D positions."""

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


class PhraseEncoder(_EncoderStack):
    """Self-attention over each phrase's real tokens. They need no positional encoding: they come
    from a text encoder that already has one.

    Each layer's residual branches (attention output and feed-forward output projections) start at
    zero, so a new phrase encoder passes the (already normalised) projected text tokens through
    unchanged: training starts from what the model could do without it, instead of from scrambled
    text features.
    """

    def __init__(self, d_model: int, config: EncoderConfig):
        super().__init__(d_model, config)
        for layer in self.layers:
            for last in (layer.self_attn.out_proj, layer.ffn[-1]):
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Encode phrases.

        Args:
            tokens: ``[P, T, D]`` projected text tokens.
            valid: ``[P, T]`` bool, True for real tokens (every phrase has at least one).

        Returns:
            ``[P, T, D]`` tokens (normalised); padding rows are computed but attend to no padding.
        """
        mask = valid[:, None, None, :]
        for layer in self.layers:
            tokens = layer(tokens, None, mask)
        return self.norm(tokens)
