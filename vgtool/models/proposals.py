"""First stage of two-stage decoding (``decoder.query_selection``): image tokens propose boxes.

Each (image, phrase) pair modulates every token of its image by its phrase (FiLM); an MLP and a
class head then score every token as the phrase's object, and a box head moves a box centred on the
token's grid cell. The ``num_queries`` best tokens become the decoder's queries: their features
its content, their boxes its first reference boxes (as in two-stage Deformable DETR and DINO).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vgtool.box_ops import inverse_sigmoid
from vgtool.models.config import NO_OBJECT, OBJECT
from vgtool.models.mlp import MLP


@dataclass
class Selection:
    """The first stage's result for K pairs.

    Attributes:
        features: ``[K, Q, D]`` modulated features of each pair's Q best tokens, best first.
        reference_boxes: ``[K, Q, 4]`` their proposed boxes, cxcywh in [0, 1] (detached in training).
        token_logits: ``[K, N, 2]`` every token's (object, no-object) logits.
        token_boxes: ``[K, N, 4]`` every token's proposed box, cxcywh in [0, 1], in training only
            (None otherwise); with ``token_logits`` the ``enc_outputs`` that the loss supervises.
    """

    features: torch.Tensor
    reference_boxes: torch.Tensor
    token_logits: torch.Tensor
    token_boxes: torch.Tensor | None


class TokenProposals(nn.Module):
    """Image tokens, modulated by a phrase, score themselves and propose boxes.

    Each token's box starts as an ``initial_size``-sided box centred on its grid cell and is moved
    by the box MLP in logit space. The FiLM layer starts at zero (no modulation).
    """

    def __init__(self, d_model: int, initial_size: float = 0.15):
        super().__init__()
        self.film = nn.Linear(d_model, 2 * d_model)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.norm = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, 2 * d_model, d_model, 2)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.class_head = nn.Linear(d_model, 2)
        self.box_head = MLP(d_model, d_model, 4, 3)
        self.initial_size = initial_size

    def forward(self, tokens: torch.Tensor, phrase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Modulate and score every token of every pair.

        Args:
            tokens: ``[K, N, D]`` image tokens of each pair's image, ``N = h * w`` in row-major order.
            phrase: ``[K, D]`` each pair's phrase vector.

        Returns:
            ``[K, N, D]`` modulated token features and their ``[K, N, 2]`` (object, no-object) logits.
        """
        scale, shift = self.film(phrase).unsqueeze(1).chunk(2, dim=-1)  # [K, 1, D] each
        features = self.norm(torch.addcmul(shift, tokens, 1 + scale))  # tokens * (1 + scale) + shift
        features = self.mlp_norm(self.mlp(features).add_(features))  # in place, as in MLP
        return features, self.class_head(features)

    def select(
        self, tokens: torch.Tensor, phrase: torch.Tensor, grid: tuple[int, int], num_queries: int
    ) -> Selection:
        """Score every token of every pair and keep the ``num_queries`` best as queries.

        Args:
            tokens: ``[K, N, D]`` image tokens (with their positions) of each pair's image.
            phrase: ``[K, D]`` each pair's phrase vector.
            grid: ``(h, w)`` of the token grid, ``N = h * w``.
            num_queries: Q (fewer when the image has fewer tokens).

        Returns:
            The chosen tokens; every token's box is computed in training only (for the loss).
        """
        features, logits = self(tokens, phrase)  # [K, N, D], [K, N, 2]
        top = top_tokens(logits, num_queries)  # [K, Q]
        chosen = features.gather(1, top.unsqueeze(-1).expand(-1, -1, features.shape[-1]))  # [K, Q, D]
        if self.training:  # every token's box is supervised
            token_boxes = self.boxes(features, grid)  # [K, N, 4]
            reference = token_boxes.gather(1, top.unsqueeze(-1).expand(-1, -1, 4)).detach()  # [K, Q, 4]
            return Selection(chosen, reference, logits, token_boxes)
        # only the chosen tokens' boxes are needed
        return Selection(chosen, self.boxes(chosen, grid, top), logits, None)

    def boxes(
        self, features: torch.Tensor, grid: tuple[int, int], token_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Proposed boxes of the tokens.

        Args:
            features: ``[K, M, D]`` modulated features of M tokens per pair (all N, or those picked).
            grid: ``(h, w)`` of the full token grid.
            token_index: ``[K, M]`` which grid token each row is; None means all N in order.

        Returns:
            ``[K, M, 4]`` cxcywh in [0, 1].
        """
        height, width = grid
        ys = (torch.arange(height, device=features.device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=features.device, dtype=torch.float32) + 0.5) / width
        centres = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)  # [N, (cx, cy)]
        anchors = torch.cat([centres, torch.full_like(centres, self.initial_size)], dim=-1)  # [N, 4]
        anchors = inverse_sigmoid(anchors).to(features.dtype)
        anchors = anchors.expand(features.shape[0], -1, -1) if token_index is None else anchors[token_index]
        return (anchors + self.box_head(features)).sigmoid()


def top_tokens(logits: torch.Tensor, num_queries: int) -> torch.Tensor:
    """``[K, N, 2]`` (object, no-object) logits -> ``[K, Q]`` indices of the Q best-scoring tokens."""
    score = logits[..., OBJECT] - logits[..., NO_OBJECT]
    return score.topk(min(num_queries, score.shape[1]), dim=1).indices
