"""Text-as-query single-box grounding (the seed system "DINOv3 + BGE").

image  -> vision backbone -> patch tokens   -> linear to D (+2D sine position) = ImageMemory
phrase -> text encoder    -> token features -> linear to D                    = TextMemory
each (image, phrase) pair: the phrase's tokens are the decoder's queries (padding masked), the
image's tokens its memory; ``num_layers`` transformer decoder layers (self-attention over the
phrase, cross-attention to the image, feed-forward) and a final LayerNorm
-> the mean of the phrase's valid tokens -> box MLP -> one box; a linear head -> its confidence.

Design choices:
- The pooled output is the mean over the phrase's valid tokens (as VL-GTR pools a phrase), so it does
  not depend on whether a tokenizer puts a special token first.
- The image memory carries a fixed 2D sine position (no parameters): attention alone returns a
  weighted sum of token contents, and the box is regressed in absolute image coordinates, which
  backbones with relative (RoPE) positions such as DINOv3 do not write into their tokens.
- The box MLP predicts two x and two y values (sigmoid, in [0, 1]); the smaller of each pair is the
  left (top) edge, so the xyxy box is always valid. Its last layer starts (bias, and weights
  scaled down tenfold) near the image's central 60 % (x = y = 0.2 and 0.8), which overlaps almost
  any target, so the overlap loss has a gradient from the first step.
- The confidence head predicts one logit ``c``; ``pred_logits = (c, 0)``, so the softmax object
  probability is ``sigmoid(c)``. It is trained to predict the IoU of the model's own box with the
  true one (:mod:`vgtool.training.single_box_criterion`); it ranks boxes, and never means that the
  phrase names nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vgtool import box_ops
from vgtool.models.base import GroundingModel, Outputs, pair_indices
from vgtool.models.config import ModelConfig
from vgtool.models.memory import ImageMemory, TextMemory
from vgtool.models.mlp import MLP
from vgtool.models.position import sine_position_2d
from vgtool.models.text import TextEncoder
from vgtool.models.vision import VisionBackbone

INITIAL_BOX_XYXY = (0.2, 0.2, 0.8, 0.8)  # the box an untrained head predicts, normalised xyxy


class TextQueryModel(GroundingModel):
    """The ``textquery`` family's model. See the module docstring for the data flow."""

    head_parts = "projections, decoder, box and confidence heads"

    def __init__(self, config: ModelConfig, vision: VisionBackbone, text: TextEncoder):
        super().__init__(config, vision, text)
        head = config.textquery
        d = head.d_model
        self.image_proj = nn.Linear(vision.embed_dim, d)
        self.text_proj = nn.Linear(text.embed_dim, d)
        layer = nn.TransformerDecoderLayer(d, head.num_heads, head.ffn_dim, head.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, head.num_layers, norm=nn.LayerNorm(d))
        self.box_head = MLP(d, head.box_hidden, 4, 2)
        self.confidence_head = nn.Linear(d, 1)
        with torch.no_grad():
            self.box_head.layers[-1].weight.mul_(0.1)
            self.box_head.layers[-1].bias.copy_(
                torch.tensor([math.log(v / (1 - v)) for v in INITIAL_BOX_XYXY])
            )

    # ---- projections ----------------------------------------------------------------------------
    def project_image(self, features: torch.Tensor) -> ImageMemory:
        """``[B, C, h, w]`` backbone features -> :class:`ImageMemory` (tokens and keys are the same
        ``[B, h*w, D]`` projected tokens plus their 2D sine position)."""
        _, _, height, width = features.shape
        tokens = self.image_proj(features.flatten(2).transpose(1, 2))  # [B, h*w, D]
        pos = sine_position_2d(height, width, tokens.shape[-1], device=tokens.device, dtype=tokens.dtype)
        memory = tokens + pos
        return ImageMemory(tokens=memory, keys=memory, grid=(height, width))

    def project_text(self, features: torch.Tensor, attention_mask: torch.Tensor) -> TextMemory:
        """``[P, T, C]`` encoder features and ``[P, T]`` mask -> :class:`TextMemory` (tokens and
        keys are the same ``[P, T, D]`` projected tokens)."""
        tokens = self.text_proj(features)  # [P, T, D]
        valid = attention_mask.bool()
        return TextMemory(tokens=tokens, keys=tokens, valid=valid, pooled=_mean_valid(tokens, valid))

    # ---- decoding -------------------------------------------------------------------------------
    def decode(
        self,
        image: ImageMemory,
        text: TextMemory,
        image_index: torch.Tensor | None = None,
        text_index: torch.Tensor | None = None,
    ) -> Outputs:
        """Ground K (image, phrase) pairs, one box each.

        Args:
            image: B encoded images.
            text: P encoded phrases.
            image_index, text_index: ``[K]`` the image and phrase of each pair; both default to
                ``arange(B)`` (pair i = image i with phrase i, which needs B == P).

        Returns:
            ``pred_logits``: ``[K, 1, 2]`` logits of (object, no-object); the object probability is
            the box's confidence.
            ``pred_boxes``: ``[K, 1, 4]`` cxcywh, normalised to [0, 1] of the image.
            ``aux_outputs``: empty (only the last layer predicts).
        """
        image_index, text_index = pair_indices(image, text, image_index, text_index)
        # index_select, not x[index]: a several times faster backward on CPU (see decoder._rows)
        queries = text.tokens.index_select(0, text_index)  # [K, T, D]
        valid = text.valid.index_select(0, text_index)  # [K, T]
        memory = image.tokens.index_select(0, image_index)  # [K, N, D]
        states = self.decoder(queries, memory, tgt_key_padding_mask=~valid)  # [K, T, D]
        pooled = _mean_valid(states, valid)  # [K, D]
        corners = self.box_head(pooled).sigmoid()  # [K, 4]: two x and two y values in [0, 1]
        x0, x1 = torch.minimum(corners[:, 0], corners[:, 2]), torch.maximum(corners[:, 0], corners[:, 2])
        y0, y1 = torch.minimum(corners[:, 1], corners[:, 3]), torch.maximum(corners[:, 1], corners[:, 3])
        boxes_cxcywh = box_ops.xyxy_to_cxcywh(torch.stack([x0, y0, x1, y1], dim=-1))  # [K, 4]
        confidence = self.confidence_head(pooled)  # [K, 1]
        logits = torch.cat([confidence, torch.zeros_like(confidence)], dim=-1)  # [K, 2]
        return {
            "pred_logits": logits.unsqueeze(1),
            "pred_boxes": boxes_cxcywh.unsqueeze(1),
            "aux_outputs": [],
        }

    def decode_bytes_per_pair(self, num_image_tokens: int) -> int:
        """The pair's copy of the image tokens, one layer's keys, values and attention over them,
        and the phrase tokens' feed-forward activations."""
        head = self.config.textquery
        length = self.config.text.max_length
        return 4 * (
            4 * num_image_tokens * head.d_model
            + 2 * head.num_heads * length * num_image_tokens
            + 4 * length * head.ffn_dim
        )


def _mean_valid(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[N, T, D]`` tokens, ``[N, T]`` bool mask -> ``[N, D]`` mean of the valid tokens."""
    weights = valid.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


def build_model(config: ModelConfig) -> TextQueryModel:
    """Build the text-as-query model from its config, loading pretrained parts as the config asks."""
    return TextQueryModel(config, VisionBackbone(config.vision), TextEncoder(config.text))
