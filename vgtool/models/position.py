"""Sine positional encodings: of the image token grid (as in DETR) and of boxes (as in DAB-DETR),
the latter also as learned query positions for two-stage decoding (:class:`BoxPositionEmbedding`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from vgtool.models.mlp import MLP


def sine_position_2d(height: int, width: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """Fixed 2D sine/cosine encoding of a ``height x width`` grid.

    Returns:
        ``[height * width, dim]``, rows in row-major grid order (as ``flatten(2)`` gives).
    """
    if dim % 4:
        raise ValueError(f"positional dim {dim} must be divisible by 4")
    quarter = dim // 4
    freqs = torch.exp(
        torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(10000.0) / quarter)
    )
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    y_enc = ys[:, None] * freqs[None]  # [h, dim/4]
    x_enc = xs[:, None] * freqs[None]  # [w, dim/4]
    y_part = torch.cat([y_enc.sin(), y_enc.cos()], dim=-1)[:, None, :].expand(height, width, 2 * quarter)
    x_part = torch.cat([x_enc.sin(), x_enc.cos()], dim=-1)[None, :, :].expand(height, width, 2 * quarter)
    pos = torch.cat([y_part, x_part], dim=-1).reshape(height * width, dim)
    return pos.to(dtype) if dtype is not None else pos


def sine_box_embedding(boxes_cxcywh: torch.Tensor, dim: int, temperature: float = 20.0) -> torch.Tensor:
    """Sine embedding of boxes, one ``dim / 4`` block per coordinate (as in DAB-DETR).

    Args:
        boxes_cxcywh: ``[..., 4]`` cxcywh in [0, 1] (or any four values of order 1).

    Returns:
        ``[..., dim]``.
    """
    if dim % 8:
        raise ValueError(f"box embedding dim {dim} must be divisible by 8")
    eighth = dim // 8
    freqs = temperature ** (
        -torch.arange(eighth, device=boxes_cxcywh.device, dtype=torch.float32) / eighth
    )  # [dim/8]
    angles = boxes_cxcywh.float().unsqueeze(-1) * 2 * math.pi * freqs  # [..., 4, dim/8]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)  # [..., 4, dim/4]
    return emb.flatten(-2).to(boxes_cxcywh.dtype)


class BoxPositionEmbedding(nn.Module):
    """``[..., 4]`` cxcywh reference boxes in [0, 1] -> ``[..., D]`` query positions (sine embedding
    + MLP)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.mlp = MLP(d_model, d_model, d_model, 2)

    def forward(self, boxes_cxcywh: torch.Tensor) -> torch.Tensor:
        return self.mlp(sine_box_embedding(boxes_cxcywh, self.mlp.layers[0].in_features))
